"""Data sets: a registry of builders, and an in-memory source whose batches are a pure
function of (seed, step), so a resumed run sees exactly the batches it would have seen."""

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from mpl_jax.data import digits
from mpl_jax.data import twomoon
from mpl_jax.evaluate import padded_batches


@dataclasses.dataclass(frozen=True)
class NoiseAugment:
  """Views for low-dimensional points: weak = the point, strong = + N(0, noise^2)."""

  noise: float = 0.0

  def weak(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return x

  def strong(self, weak_x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not self.noise:
      return weak_x
    return weak_x + rng.normal(scale=self.noise, size=weak_x.shape).astype(weak_x.dtype)


@dataclasses.dataclass(frozen=True)
class InMemorySource:
  """Labeled and unlabeled arrays held in host memory.

  A batch size equal to the set's size takes the whole set in order (full batch);
  otherwise examples are drawn with a generator seeded by (seed, step), without
  replacement when the batch is smaller than the set. `augment` makes the weak view
  (also applied to labeled examples when `augment_labeled`) and the strong view from it.
  `labeled_extra` / `unlabeled_extra`: more per-example arrays (e.g. reduced MPL's
  precomputed teacher logits), each batched under its key with the same rows.
  """

  labeled_x: np.ndarray
  labeled_y: np.ndarray
  unlabeled_x: np.ndarray
  unlabeled_y: np.ndarray | None
  labeled_batch_size: int
  unlabeled_batch_size: int
  augment: Any
  seed: int
  augment_labeled: bool = False
  labeled_extra: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  unlabeled_extra: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def _indices(self, rng: np.random.Generator, size: int, batch: int) -> np.ndarray:
    if batch == size:
      return np.arange(size)
    return rng.choice(size, size=batch, replace=batch > size)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The batch of global step `step` (host arrays, this process's full batch)."""
    rng = np.random.default_rng([self.seed, step])
    li = self._indices(rng, len(self.labeled_y), self.labeled_batch_size)
    ui = self._indices(rng, len(self.unlabeled_x), self.unlabeled_batch_size)
    weak = self.augment.weak(self.unlabeled_x[ui], rng)
    strong = self.augment.strong(weak, rng)
    labeled = self.labeled_x[li]
    if self.augment_labeled:
      labeled = self.augment.weak(labeled, rng)
    out = {"labeled_x": labeled, "labeled_y": self.labeled_y[li],
           "unlabeled_weak": weak, "unlabeled_strong": strong}
    if self.unlabeled_y is not None:
      out["unlabeled_y"] = self.unlabeled_y[ui]
    out.update({k: v[li] for k, v in self.labeled_extra.items()})
    out.update({k: v[ui] for k, v in self.unlabeled_extra.items()})
    return out


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A training source, the evaluation set used during training (validation), an
  optional test set evaluated once at the end, and what models need to know.

  The source has `batch(step)` and the two batch sizes; a source with `per_process =
  True` returns only this process's rows of the global batch. Evaluation sets are arrays,
  or, for sets too large for memory, `eval_stream` / `test_stream`: callables that take a
  batch size and yield padded (x, y, mask) batches.
  """

  source: Any
  eval_x: np.ndarray | None
  eval_y: np.ndarray | None
  num_classes: int
  input_shape: tuple[int, ...]
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  test_x: np.ndarray | None = None
  test_y: np.ndarray | None = None
  eval_stream: Callable[[int], Iterator] | None = None
  test_stream: Callable[[int], Iterator] | None = None

  def has_split(self, split: str) -> bool:
    if split == "eval":
      return self.eval_x is not None or self.eval_stream is not None
    return self.test_x is not None or self.test_stream is not None

  def eval_batches(self, split: str, batch_size: int) -> Iterator:
    """Padded, masked (x, y, mask) batches of `eval` (validation) or `test`."""
    x, y, stream = ((self.eval_x, self.eval_y, self.eval_stream) if split == "eval"
                    else (self.test_x, self.test_y, self.test_stream))
    if x is not None:
      return padded_batches(x, y, batch_size)
    if stream is None:
      raise ValueError(f"this data set has no {split!r} split")
    return stream(batch_size)

  def close(self) -> None:
    """Stops background input threads, if the source has any."""
    if hasattr(self.source, "close"):
      self.source.close()


def _build_twomoon(cfg: Mapping[str, Any], seed: int) -> Dataset:
  rng = np.random.default_rng([seed, 0x2A00])
  x, y = twomoon.make_two_moons(cfg["num_points"], cfg["noise"], rng)
  labeled = twomoon.select_labeled(y, cfg["labeled_per_class"], cfg["labeled_selection"], rng)
  unlabeled_batch = cfg["unlabeled_batch_size"] or len(x)
  labeled_batch = cfg["labeled_batch_size"] or len(labeled)
  source = InMemorySource(
      labeled_x=x[labeled], labeled_y=y[labeled], unlabeled_x=x, unlabeled_y=y,
      labeled_batch_size=labeled_batch, unlabeled_batch_size=unlabeled_batch,
      augment=NoiseAugment(float(cfg["strong_noise"])), seed=seed)
  return Dataset(source=source, eval_x=x, eval_y=y, num_classes=2, input_shape=(2,),
                 extras={"labeled_indices": labeled})


def _build_digits(cfg: Mapping[str, Any], seed: int) -> Dataset:
  images, labels = digits.load()
  splits = digits.make_splits(
      labels, test_per_class=cfg["test_per_class"],
      validation_per_class=cfg["validation_per_class"],
      labeled_per_class=cfg["labeled_per_class"], split_seed=cfg["split_seed"], seed=seed)
  source = InMemorySource(
      labeled_x=images[splits.labeled], labeled_y=labels[splits.labeled],
      unlabeled_x=images[splits.unlabeled], unlabeled_y=labels[splits.unlabeled],
      labeled_batch_size=cfg["labeled_batch_size"] or len(splits.labeled),
      unlabeled_batch_size=cfg["unlabeled_batch_size"],
      augment=digits.DigitsAugment(max_shift=cfg["max_shift"],
                                   cutout_size=cfg["cutout_size"], noise=cfg["strong_noise"]),
      seed=seed, augment_labeled=True)
  return Dataset(source=source, eval_x=images[splits.validation],
                 eval_y=labels[splits.validation], num_classes=10, input_shape=(8, 8, 1),
                 extras={"splits": splits}, test_x=images[splits.test],
                 test_y=labels[splits.test])


def _build_image_set(cfg: Mapping[str, Any], seed: int) -> Dataset:
  from mpl_jax.data import image_sets  # pylint: disable=g-import-not-at-top
  return image_sets.build(cfg, seed)


def _build_imagenet(cfg: Mapping[str, Any], seed: int) -> Dataset:
  from mpl_jax.data import imagenet  # pylint: disable=g-import-not-at-top
  return imagenet.build(cfg, seed)


# Image sets import TensorFlow when built, not when this module is imported.
DATASETS: dict[str, Callable[[Mapping[str, Any], int], Dataset]] = {
    "twomoon": _build_twomoon,
    "digits": _build_digits,
    "cifar10": _build_image_set,
    "svhn_cropped": _build_image_set,
    "imagenet2012": _build_imagenet,
}


def build(cfg: Mapping[str, Any], seed: int) -> Dataset:
  """Builds the data set a config names; unknown names list the valid ones."""
  name = cfg["name"]
  if name not in DATASETS:
    raise ValueError(f"data.name={name!r} is unknown; valid: {sorted(DATASETS)}")
  return DATASETS[name](cfg, seed)
