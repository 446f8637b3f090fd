"""Digits (scikit-learn's 1,797 real 8x8 images): a small image problem that runs on a CPU.

5 labels per class (50 labeled), 20 per class held out for validation, 50 per class for
test (fixed across seeds), the rest unlabeled; a WRN-10-1 teacher and student; the
CIFAR recipe of docs/METHOD.md, section 6, scaled down (SGD-Nesterov, cosine, student wait, UDA,
label smoothing, EMA, finetuning on the labels at the end).

  python main.py --config=configs/digits.py:mpl --workdir=/tmp/digits_mpl
  python main.py --config=configs/digits.py:supervised --workdir=/tmp/digits_sup
  python main.py --config=configs/digits.py:fixmatch --workdir=/tmp/digits_fixmatch
  python main.py --config=configs/digits.py:mpl,runlocal --workdir=/tmp/digits_quick
Reduced MPL (a small teacher on a finished run's logits; the same seed and data):
  python main.py --config=configs/digits.py:uda --workdir=/tmp/digits_uda
  python main.py --config=configs/digits.py:reduced_mpl --workdir=/tmp/digits_reduced \
      --config.reduced_mpl.large_teacher_workdir=/tmp/digits_uda
Expected: RESULTS.md (Digits) and `experiments/digits_study.py`; a 2-core CPU runs MPL
at about 5 steps/s (1,500 + 200 steps: about 6 minutes).
"""

import ml_collections

from configs import common
from mpl_jax import methods

# The methods of the registry that can train on this data set.
METHODS = methods.for_data("digits")


def get_config(arg: str | None = None):
  parts = (arg or "mpl").split(",")
  method = parts[0] if parts[0] != "runlocal" else "mpl"
  runlocal = "runlocal" in parts
  c = common.base_config()
  c.method = method
  c.num_steps = 1500
  c.log_every_steps = 100
  c.label_smoothing = 0.15
  c.data = ml_collections.ConfigDict({
      "name": "digits",
      "labeled_per_class": 5,       # 50 labeled images
      "validation_per_class": 20,   # 200, evaluated during training
      "test_per_class": 50,         # 500, fixed by split_seed, evaluated once at the end
      "split_seed": 0,              # the test split; the run seed draws the rest
      "labeled_batch_size": 0,      # 0 = all 50 labeled images every step
      "unlabeled_batch_size": 160,  # mu = 3.2 times the labeled batch (CIFAR: 7)
      "max_shift": 1,               # weak view: random shift of up to 1 pixel
      "cutout_size": 3,             # strong view: 3x3 cutout ...
      "strong_noise": 0.1,          # ... and Gaussian noise
  })
  c.model = ml_collections.ConfigDict({
      "name": "wide_resnet",
      "depth": 10,                  # 1 block per group
      "width": 1,                    # WRN-10-1: 16/16/32/64 channels
      "dropout_rate": 0.2,
      "bn_momentum": 0.99,
  })
  common.nesterov_cosine(c, teacher_lr=0.05, student_lr=0.05, weight_decay=5e-4,
                         warmup_steps=100)
  c.student.wait_steps = 100
  c.student.ema_decay = 0.995
  c.uda.weight = 1.0
  c.uda.ramp_steps = 500
  c.uda.temperature = 0.7
  c.uda.threshold = 0.6
  c.pseudo_labels.teacher_steps = 1500
  c.pseudo_labels.targets = "argmax"
  c.finetune.num_steps = 200 if method in ("mpl", "pseudo_labels", "reduced_mpl") else 0
  c.finetune.learning_rate = 1e-3
  c.eval.every_steps = 500
  c.eval.batch_size = 200
  c.checkpoint.every_steps = 500
  c.mesh.num_devices = 1            # 50 labeled images do not shard over 8 devices
  # fixmatch: this recipe as it stands (its one network is the student), FixMatch's
  # tau = 0.95 and lambda_u = 1 (configs/common.py).
  if method == "uda":               # the one network is the student
    c.uda.weight = 1.0
  else:
    c.uda.weight = 1.0 if method == "mpl" else 0.0
  if runlocal:
    c.num_steps = 40
    c.pseudo_labels.teacher_steps = 40
    c.finetune.num_steps = min(c.finetune.num_steps, 10)
    c.log_every_steps = 10
    c.eval.every_steps = 20
    c.checkpoint.every_steps = 20
    c.student.wait_steps = 5
    c.student.warmup_steps = c.teacher.warmup_steps = 5
  return c
