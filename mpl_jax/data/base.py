"""What every data set provides: a training `Source`, a `Dataset` around it, and the
`DataSpec` models need. Nothing here imports TensorFlow."""

import dataclasses
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from mpl_jax.evaluate import padded_batches


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What models need to know of a data set, known from its config without loading it."""

  num_classes: int
  input_shape: tuple[int, ...]


@runtime_checkable
class Source(Protocol):
  """Training batches by global step.

  `batch(step)` returns host arrays under the keys labeled_x, labeled_y, unlabeled_weak,
  unlabeled_strong (and unlabeled_y where known). With `per_process` it returns only this
  process's rows of the global batch; otherwise the whole global batch. `close` stops
  background input threads, if any.
  """

  @property
  def labeled_batch_size(self) -> int: ...

  @property
  def unlabeled_batch_size(self) -> int: ...

  @property
  def per_process(self) -> bool: ...

  def batch(self, step: int) -> dict[str, np.ndarray]: ...

  def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class InMemorySource:
  """Labeled and unlabeled arrays held in host memory; batches are a pure function of
  (seed, step), so a resumed run sees exactly the batches it would have seen.

  A batch size equal to the set's size takes the whole set in order (full batch);
  otherwise examples are drawn with a generator seeded by (seed, step), without
  replacement when the batch is smaller than the set. `augment` makes the weak view
  (also applied to labeled examples when `augment_labeled`) and the strong view from it.
  `labeled_extra` / `unlabeled_extra`: more per-example arrays (e.g. reduced MPL's
  precomputed teacher logits), each batched under its key with the same rows.
  """

  per_process: ClassVar[bool] = False

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
    """The whole global batch of step `step` (host arrays)."""
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

  def close(self) -> None:
    """Nothing to stop: no background threads."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A training source, the evaluation set used during training (validation), an
  optional test set evaluated once at the end, and what models need to know.

  Evaluation sets are arrays, or, for sets too large for memory, `eval_stream` /
  `test_stream`: callables that take a batch size and yield padded (x, y, mask) batches.
  """

  source: Source
  eval_x: np.ndarray | None
  eval_y: np.ndarray | None
  num_classes: int
  input_shape: tuple[int, ...]
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  test_x: np.ndarray | None = None
  test_y: np.ndarray | None = None
  eval_stream: Callable[[int], Iterator] | None = None
  test_stream: Callable[[int], Iterator] | None = None
  # ImageNet-ReaL: batch size -> padded (x, real labels multi-hot, mask) batches of the
  # test images that carry real labels; None where the set has none.
  real_stream: Callable[[int], Iterator] | None = None

  @property
  def spec(self) -> DataSpec:
    return DataSpec(num_classes=self.num_classes, input_shape=tuple(self.input_shape))

  def has_split(self, split: str) -> bool:
    if split == "eval":
      return self.eval_x is not None or self.eval_stream is not None
    if split == "real":
      return self.real_stream is not None
    return self.test_x is not None or self.test_stream is not None

  def eval_batches(self, split: str, batch_size: int) -> Iterator:
    """Padded, masked (x, y, mask) batches of `eval` (validation) or `test`."""
    if split == "real":
      return self.real_stream(batch_size)
    x, y, stream = ((self.eval_x, self.eval_y, self.eval_stream) if split == "eval"
                    else (self.test_x, self.test_y, self.test_stream))
    if x is not None:
      return padded_batches(x, y, batch_size)
    if stream is None:
      raise ValueError(f"this data set has no {split!r} split")
    return stream(batch_size)

  def close(self) -> None:
    """Stops the source's background input threads, if it has any."""
    self.source.close()
