"""scikit-learn's digits: 1,797 real 8x8 grayscale images, 10 classes, held in memory.

Splits are class-balanced and seeded: a fixed test set (`split_seed`, the same for every
run seed, so runs compare), a validation set and the labeled set drawn per run seed from
the rest; the unlabeled set is the training pool minus the labeled examples.
Augmentations are numpy, a pure function of a generator, so batches stay a pure function
of (seed, step): weak = a random shift of up to `shift` pixels (zero fill); strong = weak
plus a `cutout` x `cutout` zero square and Gaussian noise.
"""

import dataclasses

import numpy as np

from mpl_jax.data import splits as splits_lib


@dataclasses.dataclass(frozen=True)
class DigitsSplits:
  labeled: np.ndarray
  unlabeled: np.ndarray
  validation: np.ndarray
  test: np.ndarray


def load() -> tuple[np.ndarray, np.ndarray]:
  """Images as float32 [N, 8, 8, 1] in [0, 1] and int32 labels."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  return images, digits.target.astype(np.int32)


def make_splits(labels: np.ndarray, *, test_per_class: int, validation_per_class: int,
                labeled_per_class: int, split_seed: int, seed: int) -> DigitsSplits:
  """Disjoint class-balanced index sets; the test set depends on `split_seed` only."""
  everything = np.arange(len(labels))
  test = splits_lib.per_class(everything, labels, test_per_class, np.random.default_rng(split_seed))
  pool = np.setdiff1d(everything, test)
  rng = np.random.default_rng([seed, 0xD161])
  validation = splits_lib.per_class(pool, labels, validation_per_class, rng)
  train = np.setdiff1d(pool, validation)
  labeled = splits_lib.per_class(train, labels, labeled_per_class, rng)
  return DigitsSplits(labeled=labeled, unlabeled=np.setdiff1d(train, labeled),
                      validation=validation, test=test)


def shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
  """Moves each image by up to `max_shift` pixels in x and y, filling with zeros."""
  if max_shift == 0:
    return images
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
  rows = dy[:, None] + np.arange(h)[None, :]
  cols = dx[:, None] + np.arange(w)[None, :]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Zeros a `size` x `size` square (clipped at the border) centred at a random pixel."""
  if size == 0:
    return images
  n, h, w, _ = images.shape
  cy, cx = rng.integers(0, h, size=n), rng.integers(0, w, size=n)
  ys, xs = np.arange(h)[None, :], np.arange(w)[None, :]
  top, left = cy[:, None] - size // 2, cx[:, None] - size // 2
  inside_y = (ys >= top) & (ys < top + size)
  inside_x = (xs >= left) & (xs < left + size)
  mask = inside_y[:, :, None] & inside_x[:, None, :]
  return np.where(mask[..., None], 0.0, images).astype(images.dtype)


@dataclasses.dataclass(frozen=True)
class DigitsAugment:
  """Weak and strong views for 8x8 digits (a callable pair for InMemorySource)."""

  max_shift: int = 1
  cutout_size: int = 3
  noise: float = 0.1

  def weak(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return shift(images, self.max_shift, rng)

  def strong(self, weak_images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = cutout(weak_images, self.cutout_size, rng)
    if self.noise:
      out = out + rng.normal(scale=self.noise, size=out.shape).astype(out.dtype)
    return out
