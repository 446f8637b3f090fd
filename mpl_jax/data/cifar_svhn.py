"""CIFAR-10 and SVHN at the paper's settings: tfds arrays, seeded splits, tf.data views.

Splits (docs/METHOD.md, section 6), all class-balanced and a pure function of data.split_seed:
CIFAR-10-4K takes 400 labeled images per class and 500 per class held out for validation
from the 50,000 training images; the other 41,000 are unlabeled; test is the 10,000 test
images. SVHN-1K takes 100 labeled per class and a held-out validation set from `train`;
the unlabeled pool is the rest of `train` plus all of `extra` (531,131 images). The
labels of unlabeled images are kept only for the logged pseudo-label accuracy.
TensorFlow is imported when a data set is built, not before.
"""

from typing import Any, Mapping

import jax
import numpy as np

from mpl_jax.data import base
from mpl_jax.data import image_checks
from mpl_jax.data import splits as splits_lib
from mpl_jax.data import tfds_arrays

IN_MEMORY = False
IMAGE_SHAPE = (32, 32, 3)
PAPER_SPLITS = {
    "cifar10": {"labeled_per_class": 400, "validation_per_class": 500,
                "unlabeled_extra_splits": (), "test_split": "test"},
    "svhn_cropped": {"labeled_per_class": 100, "validation_per_class": 500,
                     "unlabeled_extra_splits": ("extra",), "test_split": "test"},
}
_OWN_FIELDS = {
    "cifar10": frozenset({"labeled_per_class", "validation_per_class"}),
    "svhn_cropped": frozenset({"labeled_per_class", "validation_per_class", "use_extra"}),
}


def make_splits(labels: np.ndarray, *, labeled_per_class: int, validation_per_class: int,
                seed: int) -> dict[str, np.ndarray]:
  """The paper's split of a training set: a held-out validation set, a labeled set, and
  the rest unlabeled; disjoint, class-balanced, a pure function of `seed`."""
  return splits_lib.class_balanced(
      labels, {"validation": validation_per_class, "labeled": labeled_per_class},
      np.random.default_rng([seed, 0x5EED]), rest="unlabeled")


def check(cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError on the first field of the data section that cannot work."""
  image_checks.check(cfg, _OWN_FIELDS[cfg["name"]])


def spec(cfg: Mapping[str, Any]) -> base.DataSpec:
  del cfg
  return base.DataSpec(num_classes=10, input_shape=IMAGE_SHAPE)


def build(cfg: Mapping[str, Any], seed: int) -> base.Dataset:
  """The Dataset of `cfg.name` (cifar10 | svhn_cropped) for run seed `seed`."""
  from mpl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  name, data_dir = cfg["name"], cfg["data_dir"] or None
  x, y = tfds_arrays.load_arrays(name, "train", data_dir)
  data_spec = spec(cfg)
  if x.shape[1:] != data_spec.input_shape:
    raise ValueError(f"{name} images have shape {x.shape[1:]}, not {data_spec.input_shape}; "
                     "prepare the data set with tfds at its standard size")
  parts = make_splits(y, labeled_per_class=int(cfg["labeled_per_class"]),
                      validation_per_class=int(cfg["validation_per_class"]),
                      seed=int(cfg["split_seed"]))
  unlabeled_x, unlabeled_y = x[parts["unlabeled"]], y[parts["unlabeled"]]
  for extra in PAPER_SPLITS[name]["unlabeled_extra_splits"]:
    if cfg.get("use_extra", True):
      ex, ey = tfds_arrays.load_arrays(name, extra, data_dir)
      unlabeled_x = np.concatenate([unlabeled_x, ex])
      unlabeled_y = np.concatenate([unlabeled_y, ey])
  test_x, test_y = tfds_arrays.load_arrays(name, PAPER_SPLITS[name]["test_split"], data_dir)
  source = pipeline.ArraySource(
      name=name, labeled_x=x[parts["labeled"]], labeled_y=y[parts["labeled"]],
      unlabeled_x=unlabeled_x, unlabeled_y=unlabeled_y,
      labeled_batch_size=int(cfg["labeled_batch_size"]),
      unlabeled_batch_size=int(cfg["unlabeled_batch_size"]),
      augment=pipeline.ImageAugment.from_config(cfg, "cifar"), seed=seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  return base.Dataset(
      source=source, eval_x=pipeline.normalize(x[parts["validation"]], name),
      eval_y=y[parts["validation"]], num_classes=data_spec.num_classes,
      input_shape=data_spec.input_shape, extras={"splits": parts},
      test_x=pipeline.normalize(test_x, name), test_y=test_y)
