"""Sections every experiment config shares, with neutral defaults."""

import ml_collections


def optimizer(learning_rate: float) -> ml_collections.ConfigDict:
  """One network's optimizer: SGD, optional (Nesterov) momentum, warmup + schedule."""
  return ml_collections.ConfigDict({
      "learning_rate": learning_rate,  # peak learning rate
      "momentum": 0.0,                 # 0 = plain SGD
      "nesterov": False,               # Nesterov momentum (needs momentum > 0)
      "weight_decay": 0.0,             # on kernels only, never biases or BatchNorm
      "warmup_steps": 0,               # linear warmup from 0
      "schedule": "constant",          # after warmup: constant | cosine (to 0) |
                                       # fixmatch_cosine (lr * cos(7 pi k / 16 K))
      "grad_clip_norm": 0.0,           # global-norm clipping; 0 = none
  })


def nesterov_cosine(c: ml_collections.ConfigDict, *, teacher_lr: float, student_lr: float,
                    weight_decay: float, warmup_steps: int, grad_clip_norm: float = 0.0) -> None:
  """The paper's optimizer for both networks: SGD with Nesterov momentum 0.9, linear
  warmup, cosine decay to 0, weight decay on kernels, optional global-norm clipping."""
  for net, lr in ((c.teacher, teacher_lr), (c.student, student_lr)):
    net.learning_rate = lr
    net.momentum = 0.9
    net.nesterov = True
    net.weight_decay = weight_decay
    net.warmup_steps = warmup_steps
    net.schedule = "cosine"
    net.grad_clip_norm = grad_clip_norm


def base_config() -> ml_collections.ConfigDict:
  """Every section with defaults; experiment configs override what differs."""
  c = ml_collections.ConfigDict()
  c.method = "mpl"              # supervised | pseudo_labels | uda | fixmatch | mpl | reduced_mpl
  c.seed = 0                    # drives data draws, labeled selection, init, sampling
  c.num_steps = 1000            # steps of the method (pseudo labels: student steps)
  c.log_every_steps = 100       # metrics to TensorBoard and the console
  c.print_progress = True       # print a progress line at every log step
  c.label_smoothing = 0.0       # epsilon on every supervised and pseudo-label target
  c.skip_nonfinite = False      # True: skip (and count) updates with NaN/Inf; False: stop
  c.accum_steps = 1             # gradient accumulation: micro-batches per step; 1 = none

  c.teacher = optimizer(0.1)    # MPL's and pseudo labels' teacher
  c.student = optimizer(0.1)    # the evaluated network (the only one for supervised, uda)
  c.student.wait_steps = 0      # student learning rate is 0 for this many steps
  c.student.ema_decay = 0.0     # EMA of the student's params/stats; 0 = EMA equals student

  c.uda = ml_collections.ConfigDict({
      "weight": 0.0,            # lambda_uda on the consistency loss; 0 = off
      "ramp_steps": 1,          # the weight ramps linearly over this many steps
      "temperature": 1.0,       # tau: sharpening of the weak-view targets
      "threshold": 0.0,         # kappa: confidence mask on the weak-view targets
  })
  c.mpl = ml_collections.ConfigDict({
      "estimator": "reinforce",  # reinforce | meta | off
      "reward": "dot",           # reinforce reward: dot (first order) | taylor (exact diff)
      "labels": "auto",          # sample | argmax | soft; auto = soft for meta, else sample
      "baseline_decay": 0.0,     # moving reward baseline decay (0.99 typical); 0 = off
      "feedback_weight": 1.0,    # weight of the feedback term in the teacher's loss
      "supervised_weight": 1.0,  # weight of the teacher's supervised CE in its loss
      "log_grad_parts": False,   # log |grad| of each teacher loss part (3x teacher backward)
      "student_update": "real",  # dot/meta model: real (the optimizer's update) | plain
  })
  c.fixmatch = ml_collections.ConfigDict({
      "threshold": 0.95,         # tau: weak-view confidence that makes a pseudo label
      "weight": 1.0,             # lambda_u on the unlabeled loss
  })
  c.pseudo_labels = ml_collections.ConfigDict({
      "teacher_steps": 1000,     # supervised steps of the fixed teacher, before the student
      "targets": "argmax",       # argmax | sample | soft labels from the fixed teacher
  })
  c.reduced_mpl = ml_collections.ConfigDict({
      "large_teacher_workdir": "",  # a finished run (same data and seed): the frozen teacher
      "large_teacher_network": "student",  # student | student_ema | teacher of that run
      "hidden": (128,),           # the reduced teacher's hidden layers (on the logits)
  })
  c.finetune = ml_collections.ConfigDict({
      "num_steps": 0,            # student steps on labeled data after the method; 0 = none
      "learning_rate": 1e-5,     # constant; the student's optimizer restarts its momentum
  })
  c.eval = ml_collections.ConfigDict({
      "every_steps": 1000,       # evaluate student (+ EMA, teacher) this often
      "batch_size": 1000,        # eval batch (padded); must divide by the device count
  })
  c.checkpoint = ml_collections.ConfigDict({
      "every_steps": 1000,       # save this often and at the end
      "max_to_keep": 2,          # older checkpoints are deleted
  })
  c.faults = ml_collections.ConfigDict({
      "nan_batch_at_step": -1,   # test hook: this step's batch becomes NaN; -1 = never
      "preempt_at_step": -1,     # test hook: act as if SIGTERM came at this step; -1 = never
  })
  c.mesh = ml_collections.ConfigDict({
      "num_devices": 0,          # devices of the mesh; 0 = all
      "model_axis": 1,           # devices per parameter shard group (FSDP); 1 = data parallel
      "gather": "network",       # FSDP gathers each network whole, or each "layer" as it runs
  })
  return c


def image_data(name: str, *, labeled_per_class: int, validation_per_class: int,
               labeled_batch_size: int, unlabeled_batch_size: int
               ) -> ml_collections.ConfigDict:
  """The data section of a tfds image set (CIFAR-10, SVHN), read from a prepared data_dir."""
  return ml_collections.ConfigDict({
      "name": name,                    # tfds name
      "data_dir": "",                  # prepared tfds data; "" = ~/tensorflow_datasets
      "split_seed": 0,                 # draws labeled/validation images (not the run seed)
      "labeled_per_class": labeled_per_class,
      "validation_per_class": validation_per_class,  # held out from train, for evaluation
      "labeled_batch_size": labeled_batch_size,      # B (global, over all processes)
      "unlabeled_batch_size": unlabeled_batch_size,  # mu * B
      "image_size": 32,                # pad-and-crop pads image_size // 8 (fill 128)
      "randaugment_layers": 2,         # N of the strong view's RandAugment
      "randaugment_magnitude": 16.0,   # M, on the 0..10 scale extrapolated
      "cutout_size": 16,               # side of the strong view's final cutout; 0 = none
  })


def own_images_data(name: str = "tfds", *, labeled_per_class: int, validation_per_class: int,
                    labeled_batch_size: int, unlabeled_batch_size: int, image_size: int,
                    **fields) -> ml_collections.ConfigDict:
  """The data section of your own images (`mpl_jax/data/own_images.py`): a tfds builder
  (name="tfds", `tfds_name`) or folders (name="image_folder", `labeled_dir`,
  `unlabeled_dir`, `test_dir`); `fields` sets any of them."""
  c = image_data(name, labeled_per_class=labeled_per_class,
                 validation_per_class=validation_per_class,
                 labeled_batch_size=labeled_batch_size,
                 unlabeled_batch_size=unlabeled_batch_size)
  c.image_size = image_size
  c.cutout_size = image_size // 2         # half the side, as CIFAR's 16 of 32 (set it
                                          # too when overriding image_size)
  c.labeled_fraction = 0.0                # > 0: that share of each class, not per class
  c.mean = ()                             # per channel, 0..255; () = computed, recorded
  c.std = ()
  c.max_in_memory_gib = 16.0              # tfds sets above this are streamed, not held
  c.shuffle_buffer = 10_000               # streamed sets: tf.data's shuffle buffer
  if name == "tfds":
    c.tfds_name = ""                      # e.g. cifar100, stl10
    c.num_classes = 10
    c.train_split = "train"
    c.test_split = "test"                 # "" = none
    c.unlabeled_extra = ()                # more unlabeled: "split" or "builder:split"
  else:
    c.labeled_dir = ""                    # one sub-folder of images per class
    c.unlabeled_dir = ""                  # images, no labels
    c.test_dir = ""                       # the labeled layout; "" = none
  for field, value in fields.items():
    c[field] = value
  return c
