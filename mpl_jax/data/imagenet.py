"""ImageNet-10% (and ImageNet with another unlabeled source): streaming tf.data input.

Splits of `train` (1,281,167 images), a pure function of data.split_seed: per class,
`validation_per_class` images are held out (evaluated during training), and
round(labeled_fraction * n_c) of the rest (at least 1) are labeled; the unlabeled stream
is every train image but the held-out ones (the paper's 1.28M), or, with
`data.unlabeled_source`, another tfds data set ("name" or "name:split") with an `image`
feature. The test split is the official `validation` set (50,000), evaluated once at the
end, as the paper reports it.

Finding each class's images takes one pass over the labels of `train` at start-up (the
images are read but not decoded). Each process streams its own contiguous 1/P of `train`
(`train[lo:hi]`) and keeps the rows its devices hold.

Resume scheme: images do not fit in memory, so batches are not a pure function of the
step as for CIFAR. After a (re)start at step s the streams are reshuffled with seeds
derived from (seed, s) and augmentation seeds continue from the example position s * B;
the data a resumed run sees has the same distribution but a different order from an
uninterrupted run's.
"""

from typing import Any, Mapping

import jax
import numpy as np
import tensorflow as tf

from mpl_jax.data import augment as augment_lib
from mpl_jax.data import pipeline
from mpl_jax.data import tfds_arrays

NAME = "imagenet2012"
NUM_CLASSES = 1000


def class_balanced_splits(labels: np.ndarray, *, labeled_fraction: float,
                          validation_per_class: int, seed: int) -> dict[str, np.ndarray]:
  """Held-out validation and labeled indices per class, disjoint and sorted."""
  rng = np.random.default_rng([seed, 0x1A6E])
  validation, labeled = [], []
  for cls in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == cls))
    held = min(validation_per_class, len(members) - 1)
    count = max(1, int(np.floor(labeled_fraction * len(members) + 0.5)))
    count = min(count, len(members) - held)
    validation.append(members[:held])
    labeled.append(members[held:held + count])
  return {"validation": np.sort(np.concatenate(validation)).astype(np.int64),
          "labeled": np.sort(np.concatenate(labeled)).astype(np.int64)}


def _decoders():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return {"image": tfds.decode.SkipDecoding()}


def train_labels(data_dir: str | None) -> np.ndarray:
  """Labels of `train` in tfds order (files not shuffled)."""
  ds = tfds_arrays.load_dataset(NAME, "train", data_dir, shuffle_files=False,
                                decoders=_decoders())
  ds = ds.map(lambda ex: ex["label"], num_parallel_calls=tf.data.AUTOTUNE).batch(65536)
  return np.concatenate(list(ds.as_numpy_iterator())).astype(np.int32)


def decode(image_bytes: tf.Tensor) -> tf.Tensor:
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def _selected(mask: tf.Tensor, keep_if: bool):
  """A tf.data filter on enumerated examples: keep index i where mask[i] == keep_if."""

  def keep(index, example):
    del example
    return tf.equal(tf.gather(mask, index), keep_if)

  return keep


def _bytes_and_label(index, example):
  del index
  return example["image"], tf.cast(example["label"], tf.int32)


def _bytes_unknown_label(example):
  return example["image"], tf.constant(-1, tf.int32)


def _example(index, example):
  del index
  return example


def _membership(indices: np.ndarray, size: int) -> tf.Tensor:
  mask = np.zeros(size, bool)
  mask[indices] = True
  return tf.constant(mask)


class StreamSource(pipeline.IteratorSource):
  """Labeled and unlabeled streams of this process's share of `train`."""

  def __init__(self, *, cfg: Mapping[str, Any], num_train: int, parts: dict[str, np.ndarray],
               seed: int, process_index: int, process_count: int):
    self.cfg = cfg
    self.data_dir = cfg["data_dir"] or None
    self.labeled_batch_size = int(cfg["labeled_batch_size"])
    self.unlabeled_batch_size = int(cfg["unlabeled_batch_size"])
    self.seed = seed
    self.augment = pipeline.ImageAugment(
        kind="imagenet", image_size=int(cfg["image_size"]),
        randaugment_layers=int(cfg["randaugment_layers"]),
        randaugment_magnitude=float(cfg["randaugment_magnitude"]),
        cutout_size=int(cfg["cutout_size"]), translate_const=100.0, cutout_const=40.0)
    self.lo = process_index * num_train // process_count
    self.hi = (process_index + 1) * num_train // process_count
    self._labeled = _membership(parts["labeled"], num_train)
    self._held_out = _membership(parts["validation"], num_train)
    self._local_labeled = pipeline.process_rows(self.labeled_batch_size, process_index,
                                                process_count)
    self._local_unlabeled = pipeline.process_rows(self.unlabeled_batch_size, process_index,
                                                  process_count)
    self.process_index = process_index

  def _train_part(self, mask: tf.Tensor, keep_if: bool, start: int, stream: int
                  ) -> tf.data.Dataset:
    """(image bytes, label) of this process's train rows where `mask` equals `keep_if`,
    repeated and shuffled with a seed of (seed, start, stream)."""
    ds = tfds_arrays.load_dataset(NAME, f"train[{self.lo}:{self.hi}]", self.data_dir,
                                  shuffle_files=False, decoders=_decoders())
    ds = ds.enumerate(start=self.lo).filter(_selected(mask, keep_if)).map(_bytes_and_label)
    shuffle_seed = int(np.random.default_rng([self.seed, start, stream]).integers(2**31))
    return ds.repeat().shuffle(int(self.cfg["shuffle_buffer"]), seed=shuffle_seed)

  def _unlabeled_part(self, start: int) -> tf.data.Dataset:
    source = self.cfg["unlabeled_source"]
    if not source:
      return self._train_part(self._held_out, False, start, pipeline.UNLABELED)
    name, _, split = source.partition(":")
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    split = tfds.split_for_jax_process(split or "train")
    ds = tfds_arrays.load_dataset(name, split, self.data_dir, shuffle_files=True,
                                  decoders=_decoders())
    ds = ds.map(_bytes_unknown_label)
    shuffle_seed = int(np.random.default_rng([self.seed, start, 7]).integers(2**31))
    return ds.repeat().shuffle(int(self.cfg["shuffle_buffer"]), seed=shuffle_seed)

  def _positions(self, ds, start: int, batch: int, local_rows: slice, stream: int):
    """Attaches each example's stateless augmentation seed: (stream key, position)."""
    local = local_rows.stop - local_rows.start
    key = tf.constant(self.seed * 16 + stream, tf.int64)

    def with_seed(i, example):
      step = start + i // local
      position = step * batch + local_rows.start + i % local
      return example + (tf.stack([key, position]),)

    return ds.enumerate().map(with_seed)

  def dataset(self, start: int) -> tf.data.Dataset:
    aug = self.augment
    local_l = self._local_labeled.stop - self._local_labeled.start
    local_u = self._local_unlabeled.stop - self._local_unlabeled.start

    def labeled_view(image_bytes, label, seed):
      return {"labeled_x": aug.weak(decode(image_bytes), seed), "labeled_y": label}

    def unlabeled_views(image_bytes, label, seed):
      weak_seed, strong_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
      weak = aug.weak(decode(image_bytes), weak_seed)
      return {"unlabeled_weak": weak, "unlabeled_strong": aug.strong(weak, strong_seed),
              "unlabeled_y": label}

    labeled = self._positions(
        self._train_part(self._labeled, True, start, pipeline.LABELED),
        start, self.labeled_batch_size, self._local_labeled, pipeline.LABELED)
    labeled = labeled.map(labeled_view, num_parallel_calls=tf.data.AUTOTUNE)
    unlabeled = self._positions(self._unlabeled_part(start), start,
                                self.unlabeled_batch_size, self._local_unlabeled,
                                pipeline.UNLABELED)
    unlabeled = unlabeled.map(unlabeled_views, num_parallel_calls=tf.data.AUTOTUNE)

    def finish(lab, unlab):
      out = {**lab, **unlab}
      for key in ("labeled_x", "unlabeled_weak", "unlabeled_strong"):
        out[key] = pipeline.normalize(out[key], NAME)
      return out

    ds = tf.data.Dataset.zip(labeled.batch(local_l, drop_remainder=True),
                             unlabeled.batch(local_u, drop_remainder=True)).map(finish)
    return pipeline.finish_options(ds, None)


def _eval_stream(ds_fn, size: int):
  """A callable: batch size -> padded, masked (x, y, mask) numpy batches of a split."""

  def batches(batch_size: int):
    ds = ds_fn().map(lambda ex: (pipeline.normalize(augment_lib.center_crop(
        decode(ex["image"]), size), NAME), tf.cast(ex["label"], tf.int32)),
                     num_parallel_calls=tf.data.AUTOTUNE)
    for x, y in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
      pad = batch_size - len(y)
      mask = np.arange(batch_size) < len(y)
      if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        y = np.concatenate([y, np.zeros(pad, y.dtype)])
      yield x, y, mask

  return batches


def build(cfg: Mapping[str, Any], seed: int):
  """The Dataset: streaming train source, held-out validation and official validation."""
  from mpl_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  data_dir = cfg["data_dir"] or None
  labels = train_labels(data_dir)
  parts = class_balanced_splits(labels, labeled_fraction=float(cfg["labeled_fraction"]),
                                validation_per_class=int(cfg["validation_per_class"]),
                                seed=int(cfg["split_seed"]))
  source = StreamSource(cfg=cfg, num_train=len(labels), parts=parts, seed=seed,
                        process_index=jax.process_index(), process_count=jax.process_count())
  held_out = _membership(parts["validation"], len(labels))
  size = int(cfg["eval_image_size"])

  def validation_ds():
    ds = tfds_arrays.load_dataset(NAME, "train", data_dir, shuffle_files=False,
                                  decoders=_decoders())
    return ds.enumerate().filter(_selected(held_out, True)).map(_example)

  def test_ds():
    return tfds_arrays.load_dataset(NAME, "validation", data_dir, shuffle_files=False,
                                    decoders=_decoders())

  eval_stream = _eval_stream(validation_ds, size)
  image_size = int(cfg["image_size"])
  return data_lib.Dataset(
      source=source, eval_x=None, eval_y=None, num_classes=NUM_CLASSES,
      input_shape=(image_size, image_size, 3), extras={"splits": parts},
      eval_stream=eval_stream, test_stream=_eval_stream(test_ds, size))
