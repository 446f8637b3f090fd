"""ImageNet-10% with ResNet-50 teacher and student: the paper's Table 2 (ImageNet) setting.

10% of each class of ImageNet's `train` labeled (about 128,000 images), every train image
unlabeled but 10 per class held out for validation during training; the official
`validation` split (50,000) is the test set, evaluated once at the end.

  python main.py --config=configs/imagenet10_resnet50.py --workdir=gs://BUCKET/in10_mpl \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
  python main.py --config=configs/imagenet10_resnet50.py:mpl,runlocal --workdir=/tmp/in10
Prepare the data once: `tfds build imagenet2012 --data_dir=DIR` (the archives must be
downloaded by hand from image-net.org into DIR/downloads/manual first).
Hardware: B=1,024 labeled + 15,360 unlabeled images of 224x224 per step for 700,000 steps
on two ResNet-50: a TPU pod slice (the paper used TPUs; a v3-128 or v4-64 is the scale);
start-up reads the labels of `train` once (a pass over its records, a few minutes).
Paper: 73.89% top-1 / 91.38% top-5 (MPL). Deviation: finetuning uses the labeled batch
of 1,024 (the paper: 512) for its 2,000 steps.
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
  c.num_steps = 700_000
  c.log_every_steps = 100
  c.label_smoothing = 0.1
  c.data = ml_collections.ConfigDict({
      "name": "imagenet2012",
      "data_dir": "",                # prepared tfds data; "" = ~/tensorflow_datasets
      "split_seed": 0,               # draws the labeled and held-out images
      "labeled_fraction": 0.1,       # per class: round(0.1 * images of the class)
      "validation_per_class": 10,    # held out from train for evaluation (10,000)
      "unlabeled_source": "",        # "" = ImageNet train; or a tfds "name[:split]"
      "shuffle_buffer": 16_384,      # per process, per stream (encoded images)
      "labeled_batch_size": 1_024,   # B (global)
      "unlabeled_batch_size": 15_360,  # mu = 15
      "image_size": 224,             # Inception crop size for training
      "eval_image_size": 224,        # center crop size for evaluation
      "randaugment_layers": 2,
      "randaugment_magnitude": 17.0,
      "cutout_size": 0,              # no extra cutout for ImageNet
  })
  c.model = ml_collections.ConfigDict({
      "name": "resnet50",
      "dropout_rate": 0.1,
      "bn_momentum": 0.99,
      "dtype": "bfloat16",           # compute dtype; params stay float32
  })
  common.nesterov_cosine(c, teacher_lr=0.6, student_lr=0.4, weight_decay=1e-4,
                         warmup_steps=5_000, grad_clip_norm=5.0)
  c.student.wait_steps = 20_000
  c.student.ema_decay = 0.999
  c.uda.weight = 20.0 if method in ("uda", "mpl") else 0.0
  c.uda.ramp_steps = 50_000
  c.uda.temperature = 0.5
  c.uda.threshold = 0.6
  c.pseudo_labels.teacher_steps = 700_000
  c.finetune.num_steps = 2_000 if method in ("mpl", "pseudo_labels") else 0
  c.finetune.learning_rate = 1e-5
  c.eval.every_steps = 10_000
  c.eval.batch_size = 1_024
  c.checkpoint.every_steps = 5_000
  if "runlocal" in parts:
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
    c.model = ml_collections.ConfigDict({
        "name": "resnet", "stage_sizes": (1, 1, 1, 1), "width": 16,
        "dropout_rate": 0.1, "bn_momentum": 0.99, "dtype": "float32"})
    for net in (c.teacher, c.student):
      net.warmup_steps = 1
    c.student.wait_steps = 0
    c.uda.ramp_steps = 2
  return c
