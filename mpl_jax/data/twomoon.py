"""TwoMoon (paper section 3.1, Figure 2): two interleaved half circles, a few labels,
held in memory. Every point is also unlabeled and evaluated; the strong view adds noise."""

import dataclasses
from typing import Any, Mapping

import numpy as np

from mpl_jax import errors
from mpl_jax.data import base

IN_MEMORY = True
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


@dataclasses.dataclass(frozen=True)
class NoiseAugment:
  """Views of 2-D points: weak = the point, strong = + N(0, noise^2)."""

  noise: float = 0.0

  def weak(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return x

  def strong(self, weak_x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if not self.noise:
      return weak_x
    return weak_x + rng.normal(scale=self.noise, size=weak_x.shape).astype(weak_x.dtype)


def check(cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError on the first field of the data section that cannot work."""
  errors.one_of("data.labeled_selection", cfg["labeled_selection"], LABELED_SELECTIONS)
  errors.positive("data.labeled_per_class", cfg["labeled_per_class"])
  if cfg["num_points"] < 2 * cfg["labeled_per_class"]:
    raise errors.ConfigError(
        f"data.num_points={cfg['num_points']} cannot hold data.labeled_per_class="
        f"{cfg['labeled_per_class']} per moon; use at least {2 * cfg['labeled_per_class']} "
        "points")
  for field in ("noise", "strong_noise", "labeled_batch_size", "unlabeled_batch_size"):
    errors.positive(f"data.{field}", cfg[field], allow_zero=True)


def spec(cfg: Mapping[str, Any]) -> base.DataSpec:
  del cfg
  return base.DataSpec(num_classes=2, input_shape=(2,))


def build(cfg: Mapping[str, Any], seed: int) -> base.Dataset:
  """Points, labels and the labeled selection drawn from `seed`; batch size 0 = all."""
  rng = np.random.default_rng([seed, 0x2A00])
  x, y = make_two_moons(cfg["num_points"], cfg["noise"], rng)
  labeled = select_labeled(y, cfg["labeled_per_class"], cfg["labeled_selection"], rng)
  source = base.InMemorySource(
      labeled_x=x[labeled], labeled_y=y[labeled], unlabeled_x=x, unlabeled_y=y,
      labeled_batch_size=cfg["labeled_batch_size"] or len(labeled),
      unlabeled_batch_size=cfg["unlabeled_batch_size"] or len(x),
      augment=NoiseAugment(float(cfg["strong_noise"])), seed=seed)
  data_spec = spec(cfg)
  return base.Dataset(source=source, eval_x=x, eval_y=y, num_classes=data_spec.num_classes,
                      input_shape=data_spec.input_shape, extras={"labeled_indices": labeled})
