"""STL-10 at 96 x 96: its labeled train images, and its 100,000 `unlabelled` images as
unlabeled data, on WRN-28-2 (the network FixMatch reports for CIFAR; its STL-10 runs used
WRN-37-2, which this repository does not build).

Any tfds image set works the same way (`data.name=tfds`, mpl_jax/data/own_images.py):
from the 5,000 labeled train images, 50 per class are held out for validation and the
other 4,500 are labeled (not FixMatch's 1,000-label folds); the unlabeled pool is the
`unlabelled` split; `test` (8,000) is evaluated once at the end. The per-channel mean and
std are computed from the training images at start-up and written to the workdir
(normalization.json). The MPL recipe is the CIFAR-10 one, at 96 px.

  python main.py --config=configs/stl10_wrn28_2.py --workdir=gs://BUCKET/stl10_mpl \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
  python main.py --config=configs/stl10_wrn28_2.py:fixmatch --workdir=...
  python main.py --config=configs/stl10_wrn28_2.py:mpl,runlocal --workdir=/tmp/stl10
Prepare the data once: `tfds build stl10 --data_dir=DIR` (2.9 GB of unlabelled images
held in host memory).
Hardware: an accelerator. Time, an estimate scaled by FLOPs from the WRN-28-2 records
(BENCHMARKS.md: 63.3 ms per MPL step of B = 128, mu = 7, fp32, on one H200): 96 x 96
images are 9x the pixels of 32 x 32, so about 0.6 s per step, some 50 hours for 300,000
steps on one H200.
Published numbers to compare with: FixMatch (RA) 7.98 +- 1.50 % error with 1,000 labels
(Sohn et al., 2020, Table 2, WRN-37-2), i.e. about 92 % accuracy; the MPL paper does not
report STL-10.
"""

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
      "tfds", tfds_name="stl10", num_classes=10, labeled_per_class=450,
      validation_per_class=50, labeled_batch_size=128, unlabeled_batch_size=896,
      image_size=96, unlabeled_extra=("unlabelled",))
  cifar10_wrn28_2.paper_recipe(c, method)
  if method == "fixmatch":
    cifar10_wrn28_2.fixmatch_recipe(c)
  if "runlocal" in parts:
    cifar10_wrn28_2.runlocal(c)
    c.data.labeled_per_class = 2
  return c
