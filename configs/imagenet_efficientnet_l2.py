"""ImageNet + a large unlabeled set, EfficientNet-L2 teacher and student: the paper's
headline run (90.2% ImageNet top-1, Pham et al. 2021, Table 3).

All of ImageNet's `train` is labeled (10 images per class held out for validation during
training); the unlabeled stream is a source you name, a tfds data set with an `image`
feature ("name" or "name:split"). The paper used JFT-300M filtered to 130M images, which
is not public; with the default (`unlabeled_source=""`) ImageNet's own train images
serve as unlabeled data, which runs but is not the paper's setting. The test set is the
official `validation` split (50,000), evaluated once at the end.

  python main.py --config=configs/imagenet_efficientnet_l2.py --workdir=gs://BUCKET/l2_mpl \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets \
      --config.data.unlabeled_source=my_unlabeled_images:train
  python main.py --config=configs/imagenet_efficientnet_l2.py:runlocal --workdir=/tmp/l2

Prepare ImageNet once: `tfds build imagenet2012 --data_dir=DIR` (the archives must be
downloaded by hand from image-net.org into DIR/downloads/manual first).

Hardware: per step 2,048 labeled + 16,384 unlabeled images (each unlabeled image in two
views) at 512x512 through two 480M-parameter networks, for 1,000,000 steps. The paper
used 2,048 TPUv3 cores (128 data-parallel replicas x 16-way model parallelism). Per chip
that is 1 labeled + 8 unlabeled images; what one chip must hold at that batch, data
parallel or with FSDP-style parameter sharding, is measured ahead of time by
tools/aot_tpu.py (BENCHMARKS.md, "EfficientNet-L2 MPL step compiled for TPU"): data
parallel with remat fits a TPU v4 chip (31.0 of 32 GiB), the default;
`--config.mesh.model_axis=16 --config.mesh.gather=layer` splits the state 16 ways and
gathers each block where it runs: 20.0 GiB per chip with the same FLOPs, for chips with
less memory or a larger per-chip batch. `tools/aot_tpu.py --plan` prints the
accum_steps and time per step for a slice. With fewer chips, `--config.accum_steps=k`
runs the paper's batch as k micro-batches. bf16 compute, float32 parameters.

Paper: 90.2% top-1 / 98.8% top-5 (EfficientNet-L2 student, after finetuning).

Settings: docs/METHOD.md, section 6, gives the batch (2,048 + mu = 8), 1,000,000 steps, and the
finetune phase (20,000 steps at lr 1e-5); the paper does not give the other optimizer
settings for this run, so the ImageNet-10% ones are used (SGD-Nesterov, cosine, warmup
5,000, student wait 20,000, weight decay 1e-4, clip 5, label smoothing 0.1, UDA 20 /
50,000 / 0.5 / 0.6, RandAugment 2, 17, EMA 0.999) with learning rates scaled linearly
from B = 1,024 to 2,048 (student 0.8, teacher 1.2). L2's dropout 0.5 and stochastic
depth 0.2 are EfficientNet's. Deviation: finetuning uses the labeled batch of 2,048 (the
paper: 512).
"""

import ml_collections

from configs import common
from mpl_jax import methods

# The methods of the registry that can train on this data set.
METHODS = methods.for_data("imagenet2012")


def get_config(arg: str | None = None):
  parts = (arg or "mpl").split(",")
  method = parts[0] if parts[0] != "runlocal" else "mpl"
  c = common.base_config()
  c.method = method
  c.num_steps = 1_000_000
  c.log_every_steps = 100
  c.label_smoothing = 0.1
  c.data = ml_collections.ConfigDict({
      "name": "imagenet2012",
      "data_dir": "",                # prepared tfds data; "" = ~/tensorflow_datasets
      "split_seed": 0,               # draws the held-out validation images
      "labeled_fraction": 1.0,       # all of train (but the held-out images) is labeled
      "validation_per_class": 10,    # held out from train for evaluation (10,000)
      "unlabeled_source": "",        # tfds "name[:split]"; "" = ImageNet train (not JFT)
      "shuffle_buffer": 16_384,      # per process, per stream (encoded images)
      "labeled_batch_size": 2_048,   # B (global)
      "unlabeled_batch_size": 16_384,  # mu = 8
      "image_size": 512,             # the paper's L2 training resolution (not 800)
      "eval_image_size": 512,        # center crop size for evaluation
      "randaugment_layers": 2,
      "randaugment_magnitude": 17.0,
      "cutout_size": 0,              # no extra cutout for ImageNet
  })
  c.model = ml_collections.ConfigDict({
      "name": "efficientnet",
      "variant": "l2",               # width 4.3, depth 5.3: 480M parameters
      "dropout_rate": 0.5,           # before the head
      "drop_connect_rate": 0.2,      # stochastic depth of the last block (linear in depth)
      "bn_momentum": 0.99,
      "dtype": "bfloat16",           # compute dtype; params stay float32
      "remat": True,                 # recompute block activations in the backward pass
      "scan_blocks": True,           # one scan per stage: compiles in minutes, not hours
  })
  common.nesterov_cosine(c, teacher_lr=1.2, student_lr=0.8, weight_decay=1e-4,
                         warmup_steps=5_000, grad_clip_norm=5.0)
  c.student.wait_steps = 20_000
  c.student.ema_decay = 0.999
  c.uda.weight = 20.0 if method in ("uda", "mpl") else 0.0
  c.uda.ramp_steps = 50_000
  c.uda.temperature = 0.5
  c.uda.threshold = 0.6
  c.pseudo_labels.teacher_steps = 1_000_000
  c.finetune.num_steps = 20_000 if method in ("mpl", "pseudo_labels") else 0
  c.finetune.learning_rate = 1e-5
  c.eval.every_steps = 10_000
  c.eval.batch_size = 1_024
  c.checkpoint.every_steps = 2_000
  if "runlocal" in parts:
    # The same recipe on mock-sized data: a tiny EfficientNet at 32x32, a few steps.
    c.num_steps = 4
    c.pseudo_labels.teacher_steps = 2
    c.finetune.num_steps = 2 if c.finetune.num_steps else 0
    c.log_every_steps = c.eval.every_steps = c.checkpoint.every_steps = 2
    c.eval.batch_size = 16
    c.data.validation_per_class = 1
    c.data.shuffle_buffer = 64
    c.data.labeled_batch_size = 8
    c.data.unlabeled_batch_size = 16
    c.data.image_size = c.data.eval_image_size = 32
    c.model.variant = "b0"
    c.model.width = 0.25
    c.model.depth = 0.25
    c.model.dtype = "float32"
    c.model.remat = False
    for net in (c.teacher, c.student):
      net.warmup_steps = 1
    c.student.wait_steps = 0
    c.uda.ramp_steps = 2
  return c
