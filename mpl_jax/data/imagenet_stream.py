"""Streamed tf.data input (ImageNet, and own tfds sets too large for memory): this
process's labeled and unlabeled streams of a train split, and padded evaluation streams.
Imported when the data set is built (it imports TensorFlow).

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

import numpy as np
import tensorflow as tf

from mpl_jax.data import augment as augment_lib
from mpl_jax.data import pipeline
from mpl_jax.data import tfds_arrays
from mpl_jax.evaluate import padded_batches

NAME = "imagenet2012"


def _decoders():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return {"image": tfds.decode.SkipDecoding()}


def train_labels(data_dir: str | None, name: str = NAME, split: str = "train") -> np.ndarray:
  """Labels of a split in tfds order (files not shuffled; images not decoded)."""
  ds = tfds_arrays.load_dataset(name, split, data_dir, shuffle_files=False,
                                decoders=_decoders())
  ds = ds.map(lambda ex: ex["label"], num_parallel_calls=tf.data.AUTOTUNE).batch(65536)
  return np.concatenate(list(ds.as_numpy_iterator())).astype(np.int32)


def count_examples(name: str, split: str, data_dir: str | None) -> int:
  """The number of examples of a split (images not decoded)."""
  ds = tfds_arrays.load_dataset(name, split, data_dir, shuffle_files=False,
                                decoders=_decoders())
  return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


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
  """Labeled and unlabeled streams of this process's share of a train split.

  ImageNet's unlabeled stream is every train image but the held-out ones (the paper's),
  or `data.unlabeled_source`. With `unlabeled` = [(builder, split, images), ...] (own
  sets) it is the train images neither labeled nor held out, mixed with those splits in
  proportion to their sizes, labels unknown.
  """

  def __init__(self, *, cfg: Mapping[str, Any], num_train: int, parts: Mapping[str, np.ndarray],
               seed: int, process_index: int, process_count: int, name: str = NAME,
               train_split: str = "train", mean_std: tuple | None = None,
               unlabeled: list[tuple[str, str, int]] | None = None,
               augment: pipeline.ImageAugment | None = None):
    self.cfg = cfg
    self.name, self.train_split, self.mean_std = name, train_split, mean_std
    self.unlabeled = unlabeled
    self.data_dir = cfg["data_dir"] or None
    self.labeled_batch_size = int(cfg["labeled_batch_size"])
    self.unlabeled_batch_size = int(cfg["unlabeled_batch_size"])
    self.seed = seed
    self.augment = augment or pipeline.ImageAugment.from_config(
        cfg, "imagenet", translate_const=100.0, cutout_const=40.0)
    self.lo = process_index * num_train // process_count
    self.hi = (process_index + 1) * num_train // process_count
    self._labeled = _membership(parts["labeled"], num_train)
    self._held_out = _membership(parts["validation"], num_train)
    taken = np.concatenate([parts["labeled"], parts["validation"]])
    self._taken = _membership(taken, num_train)
    self._taken_here = int(np.sum((taken >= self.lo) & (taken < self.hi)))
    self._local_labeled = pipeline.process_share(self.labeled_batch_size, process_index,
                                                 process_count)
    self._local_unlabeled = pipeline.process_share(self.unlabeled_batch_size, process_index,
                                                   process_count)
    self.process_index = process_index

  def _train_part(self, mask: tf.Tensor, keep_if: bool, start: int, stream: int
                  ) -> tf.data.Dataset:
    """(image bytes, label) of this process's train rows where `mask` equals `keep_if`,
    repeated and shuffled with a seed of (seed, start, stream)."""
    ds = tfds_arrays.load_dataset(self.name, f"{self.train_split}[{self.lo}:{self.hi}]",
                                  self.data_dir, shuffle_files=False, decoders=_decoders())
    ds = ds.enumerate(start=self.lo).filter(_selected(mask, keep_if)).map(_bytes_and_label)
    shuffle_seed = int(np.random.default_rng([self.seed, start, stream]).integers(2**31))
    return ds.repeat().shuffle(int(self.cfg["shuffle_buffer"]), seed=shuffle_seed)

  def _unlabeled_part(self, start: int) -> tf.data.Dataset:
    if self.unlabeled is not None:
      return self._mixed_unlabeled(start)
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

  def _mixed_unlabeled(self, start: int) -> tf.data.Dataset:
    """The train images neither labeled nor held out, and the `unlabeled` splits, drawn in
    proportion to their sizes; labels unknown (-1)."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    rest = self._train_part(self._taken, False, start, pipeline.UNLABELED).map(
        lambda image, label: (image, tf.constant(-1, tf.int32)))
    parts, sizes = [rest], [self.hi - self.lo - self._taken_here]
    for i, (builder, split, images) in enumerate(self.unlabeled):
      ds = tfds_arrays.load_dataset(builder, tfds.split_for_jax_process(split),
                                    self.data_dir, shuffle_files=True, decoders=_decoders())
      shuffle_seed = int(np.random.default_rng([self.seed, start, 8 + i]).integers(2**31))
      parts.append(ds.map(_bytes_unknown_label).repeat().shuffle(
          int(self.cfg["shuffle_buffer"]), seed=shuffle_seed))
      sizes.append(images)
    weights = [s / max(sum(sizes), 1) for s in sizes]
    mix_seed = int(np.random.default_rng([self.seed, start, 6]).integers(2**31))
    return tf.data.Dataset.sample_from_datasets(parts, weights=weights, seed=mix_seed)

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
      return aug.labeled_view(decode(image_bytes), label, seed)

    def unlabeled_views(image_bytes, label, seed):
      return aug.unlabeled_views(decode(image_bytes), label, seed)

    labeled = self._positions(
        self._train_part(self._labeled, True, start, pipeline.LABELED),
        start, self.labeled_batch_size, self._local_labeled, pipeline.LABELED)
    labeled = labeled.map(labeled_view, num_parallel_calls=tf.data.AUTOTUNE)
    unlabeled = self._positions(self._unlabeled_part(start), start,
                                self.unlabeled_batch_size, self._local_unlabeled,
                                pipeline.UNLABELED)
    unlabeled = unlabeled.map(unlabeled_views, num_parallel_calls=tf.data.AUTOTUNE)

    def finish(lab, unlab):
      out = pipeline.normalize_views({**lab, **unlab}, self.name, self.mean_std)
      if self.unlabeled is not None:  # own sets: the unlabeled labels are unknown
        del out["unlabeled_y"]
      return out

    ds = tf.data.Dataset.zip(labeled.batch(local_l, drop_remainder=True),
                             unlabeled.batch(local_u, drop_remainder=True)).map(finish)
    return pipeline.finish_options(ds, None)


def _eval_stream(ds_fn, size: int, name: str = NAME, mean_std: tuple | None = None):
  """A callable: batch size -> padded, masked (x, y, mask) numpy batches of a split."""

  def batches(batch_size: int):
    ds = ds_fn().map(lambda ex: (pipeline.normalize(augment_lib.center_crop(
        decode(ex["image"]), size), name, mean_std), tf.cast(ex["label"], tf.int32)),
                     num_parallel_calls=tf.data.AUTOTUNE)
    for x, y in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
      yield from padded_batches(x, y, batch_size)

  return batches


def held_out_batches(data_dir: str | None, held_out: np.ndarray, num_train: int, size: int,
                     name: str = NAME, split: str = "train", mean_std: tuple | None = None):
  """Padded batches of the `held_out` images of a train split, center-cropped to `size`."""
  mask = _membership(held_out, num_train)

  def validation_ds():
    ds = tfds_arrays.load_dataset(name, split, data_dir, shuffle_files=False,
                                  decoders=_decoders())
    return ds.enumerate().filter(_selected(mask, True)).map(_example)

  return _eval_stream(validation_ds, size, name, mean_std)


REAL = "imagenet2012_real"  # the validation images with their real labels (ReaL)


def real_batches(data_dir: str | None, size: int, num_classes: int):
  """Padded (x, real labels as multi-hot, mask) batches of imagenet2012_real's
  `validation` split, center-cropped to `size`; None, after one warning line, when the
  builder is not prepared in `data_dir`."""
  try:
    tfds_arrays.load_dataset(REAL, "validation", data_dir)
  except tfds_arrays.DataNotFoundError as err:
    print(f"warning: ImageNet-ReaL accuracy skipped: {err}", flush=True)
    return None

  def batches(batch_size: int):
    ds = tfds_arrays.load_dataset(REAL, "validation", data_dir, shuffle_files=False,
                                  decoders=_decoders())
    def example(ex):
      image = pipeline.normalize(augment_lib.center_crop(decode(ex["image"]), size), NAME)
      labels = tf.one_hot(tf.cast(ex["real_label"], tf.int32), num_classes, dtype=tf.uint8)
      return image, tf.reduce_max(labels, axis=0)  # multi-hot; all 0 without a real label

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    for x, real in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
      yield from padded_batches(x, real, batch_size)

  return batches


def official_validation_batches(data_dir: str | None, size: int, name: str = NAME,
                                split: str = "validation", mean_std: tuple | None = None):
  """Padded batches of a test split (ImageNet: the official `validation`), center-cropped
  to `size`."""

  def test_ds():
    return tfds_arrays.load_dataset(name, split, data_dir, shuffle_files=False,
                                    decoders=_decoders())

  return _eval_stream(test_ds, size, name, mean_std)


def first_images(data_dir: str | None, name: str, split: str, size: int, count: int
                 ) -> np.ndarray:
  """The first `count` images of a split, decoded and center-cropped to `size` (uint8):
  what the statistics of a streamed set are computed from."""
  ds = tfds_arrays.load_dataset(name, f"{split}[:{count}]", data_dir, shuffle_files=False,
                                decoders=_decoders())
  ds = ds.map(lambda ex: tf.cast(tf.round(augment_lib.center_crop(
      tf.cast(decode(ex["image"]), tf.float32), size, crop_padding=0)), tf.uint8))
  return np.stack(list(ds.as_numpy_iterator()))
