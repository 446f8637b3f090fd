"""Seeded, class-balanced index splits shared by every labeled data set."""

import numpy as np


def per_class(indices: np.ndarray, labels: np.ndarray, count: int,
              rng: np.random.Generator) -> np.ndarray:
  """`count` indices of each class drawn without replacement from `indices`, sorted."""
  chosen = []
  for cls in np.unique(labels[indices]):
    members = indices[labels[indices] == cls]
    if len(members) < count:
      raise ValueError(f"class {cls} has {len(members)} examples left, {count} asked")
    chosen.append(rng.choice(members, size=count, replace=False))
  return np.sort(np.concatenate(chosen))


def labeled_unlabeled_validation(labels: np.ndarray, *, labeled_per_class: int,
                                 validation_per_class: int, seed: int
                                 ) -> dict[str, np.ndarray]:
  """The paper's split of a training set: a held-out validation set, a labeled set, and
  the rest unlabeled; disjoint, class-balanced, a pure function of `seed`."""
  rng = np.random.default_rng([seed, 0x5EED])
  everything = np.arange(len(labels))
  validation = per_class(everything, labels, validation_per_class, rng)
  train = np.setdiff1d(everything, validation)
  labeled = per_class(train, labels, labeled_per_class, rng)
  return {"labeled": labeled, "unlabeled": np.setdiff1d(train, labeled),
          "validation": validation}
