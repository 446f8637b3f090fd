"""Seeded, class-balanced index splits: the one helper every labeled data set uses."""

from typing import Callable, Mapping

import numpy as np

# Examples per class of one part: a number, or a function (class size, examples of the
# class still free) -> number.
PerClass = int | Callable[[int, int], int]
DRAWS = ("by_part", "by_class")


def fraction(share: float) -> Callable[[int, int], int]:
  """A PerClass count: round(share * class size), at least 1 and at most what is left."""

  def count(size: int, left: int) -> int:
    return min(max(1, int(np.floor(share * size + 0.5))), left)

  return count


def class_balanced(labels: np.ndarray, counts: Mapping[str, PerClass],
                   rng: np.random.Generator, *, pool: np.ndarray | None = None,
                   rest: str | None = None, draw: str = "by_part") -> dict[str, np.ndarray]:
  """Disjoint parts of `pool` (default: every index of `labels`), each sorted, drawn per
  class in the order of `counts` (part name -> examples per class).

  draw="by_part" (CIFAR-10, SVHN, digits): each part in turn draws its examples of every
  class with `rng.choice` from those the earlier parts left. draw="by_class" (ImageNet):
  each class is permuted once by `rng` and the parts take consecutive runs of it. The two
  orders of draws give different parts from one seed; each data set keeps its own, so its
  splits never change. With `rest`, the pool's indices that no part took come under that
  name.
  """
  if draw not in DRAWS:
    raise ValueError(f"draw={draw!r} is unknown; valid: {list(DRAWS)}")
  free = np.arange(len(labels)) if pool is None else np.asarray(pool)
  classes, sizes = np.unique(labels[free], return_counts=True)
  size_of = dict(zip(classes.tolist(), sizes.tolist()))

  def count_of(name: str, cls, left: int) -> int:
    count = counts[name]
    count = count(size_of[cls], left) if callable(count) else count
    if left < count:
      raise ValueError(f"class {cls} has {left} examples left, {count} asked")
    return count

  out = {}
  if draw == "by_part":
    for name in counts:
      picks = []
      for cls in np.unique(labels[free]):
        members = free[labels[free] == cls]
        picks.append(rng.choice(members, size=count_of(name, cls, len(members)),
                                replace=False))
      out[name] = np.sort(np.concatenate(picks))
      free = np.setdiff1d(free, out[name])
  else:
    runs: dict[str, list[np.ndarray]] = {name: [] for name in counts}
    for cls in classes:
      members, start = rng.permutation(free[labels[free] == cls]), 0
      for name in counts:
        count = count_of(name, cls, len(members) - start)
        runs[name].append(members[start:start + count])
        start += count
    out = {name: np.sort(np.concatenate(parts)) for name, parts in runs.items()}
    free = np.setdiff1d(free, np.concatenate(list(out.values())))
  if rest:
    out[rest] = free
  return out
