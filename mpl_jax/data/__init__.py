"""Data sets: a registry of builders, and an in-memory source whose batches are a pure
function of (seed, step), so a resumed run sees exactly the batches it would have seen."""

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from mpl_jax.data import twomoon


@dataclasses.dataclass(frozen=True)
class InMemorySource:
  """Labeled and unlabeled arrays held in host memory.

  A batch size equal to the set's size takes the whole set in order (full batch);
  otherwise examples are drawn with a generator seeded by (seed, step), without
  replacement when the batch is smaller than the set. The strong view adds Gaussian noise
  of std `strong_noise` to the weak view (the identity) for low-dimensional data.
  """

  labeled_x: np.ndarray
  labeled_y: np.ndarray
  unlabeled_x: np.ndarray
  unlabeled_y: np.ndarray | None
  labeled_batch_size: int
  unlabeled_batch_size: int
  strong_noise: float
  seed: int

  def _indices(self, rng: np.random.Generator, size: int, batch: int) -> np.ndarray:
    if batch == size:
      return np.arange(size)
    return rng.choice(size, size=batch, replace=batch > size)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The batch of global step `step` (host arrays, this process's full batch)."""
    rng = np.random.default_rng([self.seed, step])
    li = self._indices(rng, len(self.labeled_y), self.labeled_batch_size)
    ui = self._indices(rng, len(self.unlabeled_x), self.unlabeled_batch_size)
    weak = self.unlabeled_x[ui]
    strong = weak
    if self.strong_noise > 0:
      strong = weak + rng.normal(scale=self.strong_noise, size=weak.shape).astype(weak.dtype)
    out = {"labeled_x": self.labeled_x[li], "labeled_y": self.labeled_y[li],
           "unlabeled_weak": weak, "unlabeled_strong": strong}
    if self.unlabeled_y is not None:
      out["unlabeled_y"] = self.unlabeled_y[ui]
    return out


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A training source plus the evaluation set and what models need to know."""

  source: InMemorySource
  eval_x: np.ndarray
  eval_y: np.ndarray
  num_classes: int
  input_shape: tuple[int, ...]
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _build_twomoon(cfg: Mapping[str, Any], seed: int) -> Dataset:
  rng = np.random.default_rng([seed, 0x2A00])
  x, y = twomoon.make_two_moons(cfg["num_points"], cfg["noise"], rng)
  labeled = twomoon.select_labeled(y, cfg["labeled_per_class"], cfg["labeled_selection"], rng)
  unlabeled_batch = cfg["unlabeled_batch_size"] or len(x)
  labeled_batch = cfg["labeled_batch_size"] or len(labeled)
  source = InMemorySource(
      labeled_x=x[labeled], labeled_y=y[labeled], unlabeled_x=x, unlabeled_y=y,
      labeled_batch_size=labeled_batch, unlabeled_batch_size=unlabeled_batch,
      strong_noise=float(cfg["strong_noise"]), seed=seed)
  return Dataset(source=source, eval_x=x, eval_y=y, num_classes=2, input_shape=(2,),
                 extras={"labeled_indices": labeled})


DATASETS: dict[str, Callable[[Mapping[str, Any], int], Dataset]] = {
    "twomoon": _build_twomoon,
}


def build(cfg: Mapping[str, Any], seed: int) -> Dataset:
  """Builds the data set a config names; unknown names list the valid ones."""
  name = cfg["name"]
  if name not in DATASETS:
    raise ValueError(f"data.name={name!r} is unknown; valid: {sorted(DATASETS)}")
  return DATASETS[name](cfg, seed)
