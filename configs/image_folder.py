"""Your own images from folders: MPL (or any method) on a labeled folder with one
sub-folder per class, a folder of unlabeled images, and an optional test folder.

  python main.py --config=configs/image_folder.py --workdir=/tmp/my_mpl \
      --config.data.labeled_dir=/data/labeled --config.data.unlabeled_dir=/data/unlabeled \
      --config.data.test_dir=/data/test --config.data.image_size=64
  python main.py --config=configs/image_folder.py:fixmatch --workdir=... (same flags)
Layout: labeled/<class>/*.png|jpg|gif|bmp (classes are the sub-folder names, in sorted
order), unlabeled/**/*.png|jpg|... (no labels), test/<class>/... (classes of labeled).
`data.validation_per_class` labeled images of each class are held out for validation and
the rest labeled (`data.labeled_fraction` = 1.0); images are resized to `data.image_size`
and normalized by the mean and std of the training images, computed at start-up and
written to the workdir (normalization.json). The recipe is the CIFAR-10 one
(configs/cifar10_wrn28_2.py: WRN-28-2, SGD-Nesterov with cosine, UDA on the teacher,
finetuning), with fewer steps: change `num_steps` and the batch sizes to your data.
Hardware: a CPU runs `:runlocal`; real sets want an accelerator.
"""

from configs import cifar10_wrn28_2
from configs import common
from mpl_jax import methods

# The methods of the registry that can train on this data set.
METHODS = methods.for_data("image_folder")


def get_config(arg: str | None = None):
  parts = (arg or "mpl").split(",")
  method = parts[0] if parts[0] != "runlocal" else "mpl"
  c = common.base_config()
  c.data = common.own_images_data(
      "image_folder", labeled_per_class=1, labeled_fraction=1.0, validation_per_class=5,
      labeled_batch_size=64, unlabeled_batch_size=448, image_size=32)
  cifar10_wrn28_2.paper_recipe(c, method)
  c.num_steps = 50_000
  c.pseudo_labels.teacher_steps = 50_000
  if method == "fixmatch":
    cifar10_wrn28_2.fixmatch_recipe(c)
    c.num_steps = 50_000
  if "runlocal" in parts:
    cifar10_wrn28_2.runlocal(c)
    c.data.labeled_per_class, c.data.validation_per_class = 1, 2
    c.data.labeled_fraction = 1.0
  return c
