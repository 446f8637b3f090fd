"""CIFAR-100 with 10,000 labels (100 per class) on WRN-28-8: FixMatch's setting.

Any tfds image set works the same way (`data.name=tfds`, mpl_jax/data/own_images.py):
here the builder is cifar100; 100 labeled and 50 validation images per class are drawn
from `train`, the other 35,000 are unlabeled, and `test` (10,000) is evaluated once at
the end. The MPL recipe is the CIFAR-10 one (configs/cifar10_wrn28_2.py) on the wider
network FixMatch used for CIFAR-100 (WRN-28-8, 23.4M parameters); `:fixmatch` has
FixMatch's published settings, with weight decay 1e-3 as it used for CIFAR-100.

  python main.py --config=configs/cifar100_wrn28_8.py --workdir=gs://BUCKET/c100_mpl \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
  python main.py --config=configs/cifar100_wrn28_8.py:fixmatch --workdir=...
  python main.py --config=configs/cifar100_wrn28_8.py:mpl,runlocal --workdir=/tmp/c100
Prepare the data once: `tfds build cifar100 --data_dir=DIR`.
Hardware: an accelerator. Time, an estimate scaled by FLOPs from the WRN-28-2 records
(BENCHMARKS.md: 63.3 ms per MPL step of B = 128, mu = 7, fp32, on one H200): WRN-28-8 has
about 16x the FLOPs of WRN-28-2, so about 1 s per MPL step, some 80 hours for 300,000
steps on one H200; a TPU pod slice or 8 GPUs divide that.
Published numbers to compare with (error rates with 10,000 labels): FixMatch (RA)
22.60 +- 0.12 % (Sohn et al., 2020, Table 2), i.e. 77.4 % accuracy; the MPL paper does not
report CIFAR-100.
"""

import ml_collections

from configs import cifar10_wrn28_2
from configs import common
from mpl_jax import methods

# The methods of the registry that can train on this data set.
METHODS = methods.for_data("tfds")


def get_config(arg: str | None = None):
  parts = (arg or "mpl").split(",")
  method = parts[0] if parts[0] != "runlocal" else "mpl"
  c = common.base_config()
  c.data = common.own_images_data(
      "tfds", tfds_name="cifar100", num_classes=100, labeled_per_class=100,
      validation_per_class=50, labeled_batch_size=128, unlabeled_batch_size=896,
      image_size=32)
  c.data.mean, c.data.std = (129.3, 124.1, 112.4), (68.2, 65.4, 70.4)  # CIFAR-100's train
  cifar10_wrn28_2.paper_recipe(c, method)
  c.model.width = 8
  if method == "fixmatch":
    cifar10_wrn28_2.fixmatch_recipe(c)
    c.student.weight_decay = c.teacher.weight_decay = 1e-3
  if "runlocal" in parts:
    cifar10_wrn28_2.runlocal(c)
    c.data.labeled_per_class = c.data.validation_per_class = 1  # 100 classes
  return c
