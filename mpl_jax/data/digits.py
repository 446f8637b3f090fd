"""scikit-learn's digits: 1,797 real 8x8 grayscale images, 10 classes, held in memory.

Splits are class-balanced and seeded: a fixed test set (`split_seed`, the same for every
run seed, so runs compare), a validation set and the labeled set drawn per run seed from
the rest; the unlabeled set is the training pool minus the labeled examples.
Augmentations are numpy, a pure function of a generator, so batches stay a pure function
of (seed, step): weak = a random shift of up to `shift` pixels (zero fill); strong = weak
plus a `cutout` x `cutout` zero square and Gaussian noise.
"""

import dataclasses
from typing import Any, Mapping

import numpy as np

from mpl_jax import errors
from mpl_jax.data import base
from mpl_jax.data import splits as splits_lib

IN_MEMORY = True


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
  test = splits_lib.class_balanced(labels, {"test": test_per_class},
                                   np.random.default_rng(split_seed), rest="pool")
  parts = splits_lib.class_balanced(
      labels, {"validation": validation_per_class, "labeled": labeled_per_class},
      np.random.default_rng([seed, 0xD161]), pool=test["pool"], rest="unlabeled")
  return DigitsSplits(test=test["test"], **parts)


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


def check(cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError on the first field of the data section that cannot work."""
  for field in ("labeled_per_class", "validation_per_class", "test_per_class"):
    errors.positive(f"data.{field}", cfg[field])
  errors.positive("data.unlabeled_batch_size", cfg["unlabeled_batch_size"])
  for field in ("labeled_batch_size", "max_shift", "cutout_size", "strong_noise"):
    errors.positive(f"data.{field}", cfg[field], allow_zero=True)
  per_class = cfg["labeled_per_class"] + cfg["validation_per_class"] + cfg["test_per_class"]
  if per_class > 170:  # the smallest digit class has 174 images
    raise errors.ConfigError(f"data: labeled + validation + test per class = {per_class} "
                             "leaves too few unlabeled images (each class has at least 174); "
                             "lower them")


def spec(cfg: Mapping[str, Any]) -> base.DataSpec:
  del cfg
  return base.DataSpec(num_classes=10, input_shape=(8, 8, 1))


def build(cfg: Mapping[str, Any], seed: int) -> base.Dataset:
  """The splits of `split_seed` and `seed`; labeled batch size 0 = the whole labeled set."""
  images, labels = load()
  splits = make_splits(
      labels, test_per_class=cfg["test_per_class"],
      validation_per_class=cfg["validation_per_class"],
      labeled_per_class=cfg["labeled_per_class"], split_seed=cfg["split_seed"], seed=seed)
  source = base.InMemorySource(
      labeled_x=images[splits.labeled], labeled_y=labels[splits.labeled],
      unlabeled_x=images[splits.unlabeled], unlabeled_y=labels[splits.unlabeled],
      labeled_batch_size=cfg["labeled_batch_size"] or len(splits.labeled),
      unlabeled_batch_size=cfg["unlabeled_batch_size"],
      augment=DigitsAugment(max_shift=cfg["max_shift"], cutout_size=cfg["cutout_size"],
                            noise=cfg["strong_noise"]),
      seed=seed, augment_labeled=True)
  data_spec = spec(cfg)
  return base.Dataset(source=source, eval_x=images[splits.validation],
                      eval_y=labels[splits.validation], num_classes=data_spec.num_classes,
                      input_shape=data_spec.input_shape, extras={"splits": splits},
                      test_x=images[splits.test], test_y=labels[splits.test])
