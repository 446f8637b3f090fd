"""SVHN-1K with WRN-28-2 teacher and student: the paper's Table 2 setting.

1,000 labeled images (100 per class) from `train`, 5,000 held out for validation, the
rest of `train` plus all of `extra` unlabeled (about 598,000), tested once at the end on
the 26,032 test images. The CIFAR-10 recipe (the paper gives SVHN no settings of its own).

  python main.py --config=configs/svhn_wrn28_2.py --workdir=gs://BUCKET/svhn_mpl \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
  python main.py --config=configs/svhn_wrn28_2.py:mpl,runlocal --workdir=/tmp/svhn
Prepare the data once: `tfds build svhn_cropped --data_dir=DIR` (train, test, extra).
Hardware: as CIFAR-10 (WRN-28-2, B=128, mu=7); `extra` needs ~2 GB of host memory.
Paper: 98.01 +- 0.07 % test accuracy (MPL).
"""

from configs import cifar10_wrn28_2
from configs import common
from mpl_jax import methods

# The methods of the registry that can train on this data set.
METHODS = methods.for_data("svhn_cropped")


def get_config(arg: str | None = None):
  parts = (arg or "mpl").split(",")
  method = parts[0] if parts[0] != "runlocal" else "mpl"
  c = common.base_config()
  c.data = common.image_data("svhn_cropped", labeled_per_class=100,
                             validation_per_class=500, labeled_batch_size=128,
                             unlabeled_batch_size=896)
  c.data.use_extra = True   # add the `extra` split (531,131 images) to the unlabeled pool
  cifar10_wrn28_2.paper_recipe(c, method)
  if "runlocal" in parts:
    cifar10_wrn28_2.runlocal(c)
  return c
