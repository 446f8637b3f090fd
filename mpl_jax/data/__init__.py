"""Data sets: a registry from data.name to the module that serves it.

Adding a data set is one new module in this package and one line in DATASETS, the one
list of data.name values (several names may share a module when they share all code).
The module exports:
  IN_MEMORY  True when batches are drawn from numpy arrays in memory, without tf.data
             (reduced MPL needs this);
  check(cfg) -> None        raises errors.ConfigError on the first bad field of `cfg`;
  spec(cfg) -> DataSpec     classes and input shape, without loading any data;
  build(cfg, seed) -> Dataset.
`cfg` is the config's data section. Importing the module, `check` and `spec` import no
TensorFlow; `build` may. Modules import base.py, splits.py and the like, never this package.
"""

import importlib
from types import ModuleType
from typing import Any, Mapping

from mpl_jax import errors
from mpl_jax.data.base import DataSpec
from mpl_jax.data.base import Dataset
from mpl_jax.data.base import InMemorySource
from mpl_jax.data.base import Source

__all__ = ["DATASETS", "DataSpec", "Dataset", "InMemorySource", "Source", "build", "check",
           "held_in_memory", "module", "spec"]

# data.name -> the module that serves it, imported on first use.
DATASETS: dict[str, str] = {
    "twomoon": "mpl_jax.data.twomoon",
    "digits": "mpl_jax.data.digits",
    "cifar10": "mpl_jax.data.cifar_svhn",
    "svhn_cropped": "mpl_jax.data.cifar_svhn",
    "imagenet2012": "mpl_jax.data.imagenet",
    "tfds": "mpl_jax.data.own_images",          # any tfds image builder: data.tfds_name
    "image_folder": "mpl_jax.data.own_images",  # folders of image files
}


def module(name: str) -> ModuleType:
  """The module serving data set `name`; ConfigError listing the valid names if unknown."""
  if name not in DATASETS:
    raise errors.ConfigError(f"data.name={name!r} is unknown; valid: {sorted(DATASETS)}")
  return importlib.import_module(DATASETS[name])


def check(cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError on the first field of the data section that cannot work."""
  module(cfg["name"]).check(cfg)


def spec(cfg: Mapping[str, Any]) -> DataSpec:
  """Classes and input shape of the configured data set, without loading it."""
  return module(cfg["name"]).spec(cfg)


def build(cfg: Mapping[str, Any], seed: int) -> Dataset:
  """The configured data set for run seed `seed`."""
  return module(cfg["name"]).build(cfg, seed)


def held_in_memory(name: str) -> bool:
  """Whether data set `name` is held whole in host memory (not streamed)."""
  return module(name).IN_MEMORY
