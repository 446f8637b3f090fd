"""TwoMoon (paper section 3.1, Figure 2): two interleaved half circles, a few labels."""

import numpy as np

LABELED_SELECTIONS = ("random", "tips", "inner")


def make_two_moons(num_points: int, noise: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
  """`num_points` 2-D points, half per moon, with Gaussian noise of std `noise`.

  Moon 0 is the upper half circle of radius 1 centred at (0, 0); moon 1 the lower half
  circle centred at (1, 0.5), so the two interleave.
  """
  per_moon = num_points // 2
  angles = np.linspace(0.0, np.pi, per_moon)
  upper = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  lower = np.stack([1.0 - np.cos(angles), 0.5 - np.sin(angles)], axis=1)
  x = np.concatenate([upper, lower]).astype(np.float32)
  y = np.concatenate([np.zeros(per_moon), np.ones(per_moon)]).astype(np.int32)
  x += rng.normal(scale=noise, size=x.shape).astype(np.float32)
  return x, y


def select_labeled(y: np.ndarray, per_class: int, how: str, rng: np.random.Generator
                   ) -> np.ndarray:
  """Indices of the labeled points, `per_class` per moon.

  `random`: uniformly among each moon's points. `tips`: drawn from the 10% of each moon
  nearest its ends (angles near 0 and pi). `inner`: from the middle 20% of each moon (the
  parts that reach into the other moon). Points are ordered by angle within a moon, which
  `make_two_moons` guarantees.
  """
  if how not in LABELED_SELECTIONS:
    raise ValueError(f"data.labeled_selection={how!r} is unknown; valid: "
                     f"{list(LABELED_SELECTIONS)}")
  chosen = []
  for cls in np.unique(y):
    members = np.flatnonzero(y == cls)
    n = len(members)
    if how == "tips":
      k = max(n // 20, per_class)
      pool = np.concatenate([members[:k], members[-k:]])
    elif how == "inner":
      k = max(n // 10, per_class)
      pool = members[n // 2 - k:n // 2 + k]
    else:
      pool = members
    chosen.append(rng.choice(pool, size=per_class, replace=False))
  return np.sort(np.concatenate(chosen))
