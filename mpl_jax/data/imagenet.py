"""ImageNet-10% (and ImageNet with another unlabeled source), streamed by tf.data.

Splits of `train` (1,281,167 images), a pure function of data.split_seed: per class,
`validation_per_class` images are held out (evaluated during training), and
round(labeled_fraction * n_c) of the rest (at least 1) are labeled; the unlabeled stream
is every train image but the held-out ones (the paper's 1.28M), or, with
`data.unlabeled_source`, another tfds data set ("name" or "name:split") with an `image`
feature. The test split is the official `validation` set (50,000), evaluated once at the
end, as the paper reports it, and, when tfds's imagenet2012_real is prepared, scored
against the ReaL labels as well (`test/<network>_real_accuracy`). The streams live in
imagenet_stream.py, imported (with TensorFlow) when the data set is built.
"""

from typing import Any, Mapping

import jax
import numpy as np

from mpl_jax.data import base
from mpl_jax.data import image_checks
from mpl_jax.data import splits as splits_lib

IN_MEMORY = False
NUM_CLASSES = 1000
_OWN_FIELDS = frozenset({"labeled_fraction", "validation_per_class", "unlabeled_source",
                         "shuffle_buffer", "eval_image_size"})


def make_splits(labels: np.ndarray, *, labeled_fraction: float, validation_per_class: int,
                seed: int) -> dict[str, np.ndarray]:
  """Held-out validation and labeled indices per class, disjoint and sorted; every class
  keeps at least one image out of validation and labels at least one."""

  def held(size: int, left: int) -> int:
    del left
    return min(validation_per_class, size - 1)

  return splits_lib.class_balanced(labels, {"validation": held,
                                            "labeled": splits_lib.fraction(labeled_fraction)},
                                   np.random.default_rng([seed, 0x1A6E]), draw="by_class")


def check(cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError on the first field of the data section that cannot work."""
  image_checks.check(cfg, _OWN_FIELDS)


def spec(cfg: Mapping[str, Any]) -> base.DataSpec:
  size = int(cfg["image_size"])
  return base.DataSpec(num_classes=NUM_CLASSES, input_shape=(size, size, 3))


def build(cfg: Mapping[str, Any], seed: int) -> base.Dataset:
  """The Dataset: streaming train source, held-out validation and official validation."""
  from mpl_jax.data import imagenet_stream  # pylint: disable=g-import-not-at-top
  data_dir = cfg["data_dir"] or None
  labels = imagenet_stream.train_labels(data_dir)
  parts = make_splits(labels, labeled_fraction=float(cfg["labeled_fraction"]),
                      validation_per_class=int(cfg["validation_per_class"]),
                      seed=int(cfg["split_seed"]))
  source = imagenet_stream.StreamSource(
      cfg=cfg, num_train=len(labels), parts=parts, seed=seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  eval_size = int(cfg["eval_image_size"])
  data_spec = spec(cfg)
  return base.Dataset(
      source=source, eval_x=None, eval_y=None, num_classes=data_spec.num_classes,
      input_shape=data_spec.input_shape, extras={"splits": parts},
      eval_stream=imagenet_stream.held_out_batches(data_dir, parts["validation"], len(labels),
                                                   eval_size),
      test_stream=imagenet_stream.official_validation_batches(data_dir, eval_size),
      real_stream=imagenet_stream.real_batches(data_dir, eval_size, data_spec.num_classes))
