"""CIFAR-10 and SVHN at the paper's settings: tfds arrays, seeded splits, tf.data views.

Splits (docs/METHOD.md, section 6), all class-balanced and a pure function of data.split_seed:
CIFAR-10-4K takes 400 labeled images per class and 500 per class held out for validation
from the 50,000 training images; the other 41,000 are unlabeled; test is the 10,000 test
images. SVHN-1K takes 100 labeled per class and a held-out validation set from `train`;
the unlabeled pool is the rest of `train` plus all of `extra` (531,131 images). The
labels of unlabeled images are kept only for the logged pseudo-label accuracy.
"""

from typing import Any, Mapping

import jax
import numpy as np

from mpl_jax.data import pipeline
from mpl_jax.data import splits as splits_lib
from mpl_jax.data import tfds_arrays

NUM_CLASSES = {"cifar10": 10, "svhn_cropped": 10}


def augment_from_config(cfg: Mapping[str, Any], kind: str) -> pipeline.ImageAugment:
  return pipeline.ImageAugment(
      kind=kind, image_size=int(cfg["image_size"]),
      randaugment_layers=int(cfg["randaugment_layers"]),
      randaugment_magnitude=float(cfg["randaugment_magnitude"]),
      cutout_size=int(cfg["cutout_size"]))


def split_indices(name: str, labels: np.ndarray, cfg: Mapping[str, Any]
                  ) -> dict[str, np.ndarray]:
  """Labeled / unlabeled / validation indices into the `train` split."""
  return splits_lib.labeled_unlabeled_validation(
      labels, labeled_per_class=int(cfg["labeled_per_class"]),
      validation_per_class=int(cfg["validation_per_class"]), seed=int(cfg["split_seed"]))


def build(cfg: Mapping[str, Any], seed: int):
  """The Dataset of `cfg.name` (cifar10 | svhn_cropped) for run seed `seed`."""
  from mpl_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  name, data_dir = cfg["name"], cfg["data_dir"] or None
  x, y = tfds_arrays.load_arrays(name, "train", data_dir)
  parts = split_indices(name, y, cfg)
  unlabeled_x, unlabeled_y = x[parts["unlabeled"]], y[parts["unlabeled"]]
  for extra in tfds_arrays.PAPER_SPLITS[name]["unlabeled_extra_splits"]:
    if cfg.get("use_extra", True):
      ex, ey = tfds_arrays.load_arrays(name, extra, data_dir)
      unlabeled_x = np.concatenate([unlabeled_x, ex])
      unlabeled_y = np.concatenate([unlabeled_y, ey])
  test_x, test_y = tfds_arrays.load_arrays(name, tfds_arrays.PAPER_SPLITS[name]["test_split"],
                                           data_dir)
  source = pipeline.ArraySource(
      name=name, labeled_x=x[parts["labeled"]], labeled_y=y[parts["labeled"]],
      unlabeled_x=unlabeled_x, unlabeled_y=unlabeled_y,
      labeled_batch_size=int(cfg["labeled_batch_size"]),
      unlabeled_batch_size=int(cfg["unlabeled_batch_size"]),
      augment=augment_from_config(cfg, "cifar"), seed=seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  return data_lib.Dataset(
      source=source, eval_x=pipeline.normalize(x[parts["validation"]], name),
      eval_y=y[parts["validation"]], num_classes=NUM_CLASSES[name],
      input_shape=tuple(x.shape[1:]), extras={"splits": parts},
      test_x=pipeline.normalize(test_x, name), test_y=test_y)
