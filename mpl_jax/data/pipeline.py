"""tf.data pipelines for image sets held in host memory (CIFAR-10, SVHN).

Resumable by construction: which images make up the batch of global step s, and every
random draw of their augmentations, is a pure function of (seed, s). Each stream walks
through its images in epochs, a fresh seeded permutation per epoch, so every image is seen
once per epoch (no sampling with replacement); example p of the stream (p = s * B + row)
is image perm[e][p mod N] of epoch e = p // N, augmented with the stateless seed
(stream key, p). A resumed run therefore sees exactly the batches an uninterrupted one
would, whatever the number of processes.

Per-host input: of a global batch of B rows, process i of P builds and augments only rows
i*B/P .. (i+1)*B/P, the rows its devices hold (`sharding.to_global(..., local=True)`).
"""

import atexit
import dataclasses
import threading
import weakref
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow as tf

from mpl_jax.data import augment as augment_lib
from mpl_jax.data import randaugment

# Stream identifiers mixed into seeds, so the streams draw independently.
LABELED, UNLABELED = 1, 2
# Per-channel mean and std of 0..255 pixels; the networks see (x - mean) / std.
MEAN_STD = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "svhn_cropped": ((111.6, 113.2, 120.6), (50.5, 51.3, 50.2)),
    "imagenet2012": ((123.7, 116.3, 103.5), (58.4, 57.1, 57.4)),
}
# The image views of a batch, normalized before the networks see them.
VIEWS = ("labeled_x", "unlabeled_weak", "unlabeled_strong")


@dataclasses.dataclass(frozen=True)
class ImageAugment:
  """The paper's views of one uint8 image.

  kind "cifar": weak = flip + pad-and-crop (pad image_size // 8, fill 128); strong =
  weak + RandAugment(N, M) + cutout (side `cutout_size`). kind "imagenet": weak =
  Inception crop to `image_size` + flip; strong = weak + RandAugment(N, M); evaluation
  is a center crop. Labeled images get the weak view.
  """

  kind: str = "cifar"
  image_size: int = 32
  randaugment_layers: int = 2
  randaugment_magnitude: float = 16.0
  cutout_size: int = 16
  translate_const: float | None = None  # RandAugment constants (None: official CIFAR)
  cutout_const: float | None = None

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any], kind: str, **constants) -> "ImageAugment":
    """The views a data config asks for; `constants`: translate_const, cutout_const."""
    return cls(kind=kind, image_size=int(cfg["image_size"]),
               randaugment_layers=int(cfg["randaugment_layers"]),
               randaugment_magnitude=float(cfg["randaugment_magnitude"]),
               cutout_size=int(cfg["cutout_size"]), **constants)

  def weak(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if self.kind == "imagenet":
      image = augment_lib.inception_crop(image, self.image_size, crop_seed)
      return augment_lib.random_flip(image, flip_seed)
    image = augment_lib.random_flip(image, flip_seed)
    return augment_lib.pad_and_crop(image, self.image_size // 8, crop_seed)

  def strong(self, weak_image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    ra_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    settings = randaugment.Settings(translate_const=self.translate_const,
                                    cutout_const=self.cutout_const)
    image = randaugment.randaugment(weak_image, self.randaugment_layers,
                                    self.randaugment_magnitude, ra_seed, settings)
    if self.cutout_size:
      image = augment_lib.cutout(image, self.cutout_size, cut_seed)
    return image

  def labeled_view(self, image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor
                   ) -> dict[str, tf.Tensor]:
    return {"labeled_x": self.weak(image, seed), "labeled_y": label}

  def unlabeled_views(self, image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor
                      ) -> dict[str, tf.Tensor]:
    """The weak view and the strong view made from it, with independent seeds."""
    weak_seed, strong_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    weak = self.weak(image, weak_seed)
    return {"unlabeled_weak": weak, "unlabeled_strong": self.strong(weak, strong_seed),
            "unlabeled_y": label}


def normalize(images: tf.Tensor | np.ndarray, name: str | None = None,
              mean_std: tuple | None = None) -> Any:
  """uint8 images -> float32 (x - mean) / std, with the channel statistics `mean_std`
  ((mean, std), 0..255) or, without them, those of data set `name` (MEAN_STD)."""
  mean, std = mean_std or MEAN_STD[name]
  mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
  if isinstance(images, np.ndarray):
    return ((images.astype(np.float32) - np.float32(mean)) / np.float32(std))
  return (tf.cast(images, tf.float32) - tf.constant(mean)) / tf.constant(std)


def normalize_views(batch: Mapping[str, Any], name: str | None,
                    mean_std: tuple | None = None) -> dict[str, Any]:
  """`batch` with its image views (VIEWS) normalized (`normalize`)."""
  return {k: normalize(v, name, mean_std) if k in VIEWS else v for k, v in batch.items()}


class EpochIndices:
  """Image indices of a stream: a fresh seeded permutation of 0..n-1 each epoch.

  `rows(step, batch)` are the indices of example positions step*batch .. +batch; a pure
  function of (seed, stream, step). The last two epochs' permutations are cached.
  """

  def __init__(self, n: int, seed: int, stream: int):
    self.n, self.seed, self.stream = n, seed, stream
    self._cache: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      if epoch not in self._cache:
        if len(self._cache) >= 2:
          self._cache.pop(min(self._cache))
        rng = np.random.default_rng([self.seed, self.stream, epoch])
        self._cache[epoch] = rng.permutation(self.n)
      return self._cache[epoch]

  def rows(self, step: int, batch: int) -> np.ndarray:
    positions = step * batch + np.arange(batch, dtype=np.int64)
    epochs = positions // self.n
    out = np.empty(batch, np.int64)
    for epoch in np.unique(epochs):
      where = epochs == epoch
      out[where] = self.permutation(int(epoch))[positions[where] % self.n]
    return out


def process_share(batch: int, process_index: int, process_count: int) -> slice:
  """The slice of a global batch's rows that process `process_index` builds."""
  if batch % process_count:
    raise ValueError(f"batch {batch} does not divide by {process_count} processes")
  rows = batch // process_count
  return slice(process_index * rows, (process_index + 1) * rows)


# Sources with a live iterator. A tf.data iterator still prefetching through a Python
# callback at interpreter exit deadlocks the exit; they are closed before that.
_OPEN: "weakref.WeakSet[IteratorSource]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
  for source in list(_OPEN):
    source.close()


class IteratorSource:
  """`batch(step)` over a prefetching tf.data iterator of this process's batches.

  Consecutive calls are served by the iterator; a call out of sequence (a resume)
  restarts it with `dataset(step)`. Subclasses define `dataset` and the batch sizes.
  """

  per_process = True
  _iterator: Iterator | None = None
  _next_step: int = -1

  def dataset(self, start: int) -> tf.data.Dataset:
    raise NotImplementedError

  def batch(self, step: int) -> dict[str, np.ndarray]:
    if self._iterator is None or step != self._next_step:
      self._iterator = iter(self.dataset(step).as_numpy_iterator())
      _OPEN.add(self)
    self._next_step = step + 1
    return next(self._iterator)

  def close(self) -> None:
    """Stops the prefetching iterator (the next `batch` call starts a new one)."""
    self._iterator = None
    self._next_step = -1
    _OPEN.discard(self)


def finish_options(ds: tf.data.Dataset, threads: int | None) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True
  if threads:
    options.threading.private_threadpool_size = threads
  return ds.with_options(options).prefetch(2)


class ArraySource(IteratorSource):
  """Labeled and unlabeled uint8 images in host memory, augmented by tf.data.

  `batch(step)` gives this process's rows of the global batch of step `step` as float32
  numpy arrays, normalized.
  """

  def __init__(self, *, name: str, labeled_x: np.ndarray, labeled_y: np.ndarray,
               unlabeled_x: np.ndarray, unlabeled_y: np.ndarray | None,
               labeled_batch_size: int, unlabeled_batch_size: int, augment: ImageAugment,
               seed: int, process_index: int = 0, process_count: int = 1,
               threads: int | None = None, mean_std: tuple | None = None):
    if labeled_x.dtype != np.uint8 or unlabeled_x.dtype != np.uint8:
      raise ValueError("ArraySource takes uint8 images")
    self.name, self.mean_std = name, mean_std  # statistics: given, or MEAN_STD[name]
    self.labeled_x, self.labeled_y = labeled_x, labeled_y
    self.unlabeled_x, self.unlabeled_y = unlabeled_x, unlabeled_y
    self.labeled_batch_size = labeled_batch_size
    self.unlabeled_batch_size = unlabeled_batch_size
    self.augment = augment
    self.seed = seed
    self.process_index, self.process_count = process_index, process_count
    self.threads = threads
    self._labeled_rows = process_share(labeled_batch_size, process_index, process_count)
    self._unlabeled_rows = process_share(unlabeled_batch_size, process_index, process_count)
    self._labeled_indices = EpochIndices(len(labeled_y), seed, LABELED)
    self._unlabeled_indices = EpochIndices(len(unlabeled_x), seed, UNLABELED)

  def _stream(self, start: int, stream: int, batch: int, rows: slice,
              indices: EpochIndices, images: np.ndarray, labels: np.ndarray | None,
              views) -> tf.data.Dataset:
    """Per-example records of this process's rows, from step `start` on, augmented."""
    local = rows.stop - rows.start
    image_shape = images.shape[1:]

    def gather(step):
      idx = indices.rows(int(step), batch)[rows]
      y = labels[idx] if labels is not None else np.full(local, -1, np.int32)
      return images[idx], y.astype(np.int32)

    def per_step(step):
      x, y = tf.numpy_function(gather, [step], (tf.uint8, tf.int32), stateful=False)
      x.set_shape((local,) + image_shape)
      y.set_shape((local,))
      positions = step * batch + rows.start + tf.range(local, dtype=tf.int64)
      return tf.data.Dataset.from_tensor_slices((x, y, positions))

    def augment_one(image, label, position):
      seed = tf.stack([tf.constant(self.seed * 16 + stream, tf.int64), position])
      return views(image, label, seed)

    ds = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
    ds = ds.flat_map(per_step)
    ds = ds.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(local, drop_remainder=True)

  def dataset(self, start: int) -> tf.data.Dataset:
    """This process's batches from global step `start` on (float32, normalized)."""
    labeled = self._stream(start, LABELED, self.labeled_batch_size, self._labeled_rows,
                           self._labeled_indices, self.labeled_x, self.labeled_y,
                           self.augment.labeled_view)
    unlabeled = self._stream(start, UNLABELED, self.unlabeled_batch_size,
                             self._unlabeled_rows, self._unlabeled_indices, self.unlabeled_x,
                             self.unlabeled_y, self.augment.unlabeled_views)

    def finish(lab, unlab):
      out = normalize_views({**lab, **unlab}, self.name, self.mean_std)
      if self.unlabeled_y is None:
        del out["unlabeled_y"]
      return out

    return finish_options(tf.data.Dataset.zip(labeled, unlabeled).map(finish), self.threads)
