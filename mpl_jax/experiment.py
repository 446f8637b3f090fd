"""From a config to what the loop runs: the data, then the networks, steps and phases."""

import dataclasses
from typing import Callable

import jax

from mpl_jax import data as data_lib
from mpl_jax import large_teacher
from mpl_jax import networks


@dataclasses.dataclass(frozen=True)
class Experiment(networks.Networks):
  """`networks.Networks` (deps, phases, init_fn, ...) and the data set they train on."""

  dataset: data_lib.Dataset


def build(config, mesh: jax.sharding.Mesh | None = None,
          check_data: Callable[[data_lib.Dataset], None] | None = None) -> Experiment:
  """Builds the data, then the networks, optimizers and step functions for `config`
  (already validated).

  `check_data` sees the data set as soon as it exists, before anything is computed from
  it (reduced MPL's large-teacher pass). `mesh`: as `networks.build`.
  """
  dataset = data_lib.build(config.data, config.seed)
  if check_data is not None:
    check_data(dataset)
  nets = networks.build(config, dataset.spec, mesh)
  if nets.method.needs_large_teacher:
    dataset = large_teacher.with_logits(config, dataset)
  return Experiment(dataset=dataset, **{f.name: getattr(nets, f.name)
                                        for f in dataclasses.fields(nets)})


def batch_sizes(dataset: data_lib.Dataset) -> dict[str, int]:
  src = dataset.source
  return {"data.labeled_batch_size": src.labeled_batch_size,
          "data.unlabeled_batch_size": src.unlabeled_batch_size}
