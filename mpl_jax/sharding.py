"""Data-parallel mesh: parameters replicated, every batch sharded on the `data` axis.

Under `jax.jit` XLA inserts the gradient all-reduce, and every mean in a loss (including
the MPL reward h and BatchNorm statistics) is over the global batch, not per device.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mpl_jax.errors import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first `num_devices` devices (0: all of them)."""
  available = jax.device_count()
  n = num_devices or available
  if n > available:
    raise ConfigError(f"mesh.num_devices={n} but only {available} devices exist; set "
                     f"--config.mesh.num_devices to at most {available} (0 = all)")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divides(name: str, size: int, mesh: Mesh) -> None:
  """Every batch dimension must divide by the number of devices in the mesh."""
  n = mesh.devices.size
  if size % n:
    raise ConfigError(f"{name}={size} does not divide by the {n} devices of the mesh; set it "
                     f"to a multiple of {n} (e.g. {max(n, size // n * n)}) or set "
                     f"--config.mesh.num_devices")


def process_rows(mesh: Mesh, global_rows: int) -> slice:
  """The rows of a `data`-sharded global batch that this process's devices hold.

  Not always rows i*B/P to (i+1)*B/P for process i: a mesh orders devices by topology
  (TPU pods), so the slice is read off the sharding.
  """
  index_map = batch_sharded(mesh).addressable_devices_indices_map((global_rows,))
  starts = [index[0].indices(global_rows)[0] for index in index_map.values()]
  stops = [index[0].indices(global_rows)[1] for index in index_map.values()]
  rows = slice(min(starts), max(stops))
  if sum(b - a for a, b in set(zip(starts, stops))) != rows.stop - rows.start:
    raise ValueError(f"this process's devices hold non-contiguous rows of the batch "
                     f"({sorted(set(zip(starts, stops)))}); order the mesh by process")
  return rows


def global_rows(rows: np.ndarray, mesh: Mesh, *, local: bool = False) -> jax.Array:
  """One host array -> a global array sharded on the `data` axis (see `to_global`)."""
  sharding = batch_sharded(mesh)
  count = jax.process_count()
  if local:
    return jax.make_array_from_process_local_data(
        sharding, rows, (rows.shape[0] * count,) + rows.shape[1:])
  if count > 1:
    return jax.make_array_from_process_local_data(
        sharding, rows[process_rows(mesh, rows.shape[0])], rows.shape)
  return jax.make_array_from_process_local_data(sharding, rows, rows.shape)


def to_global(batch: dict[str, np.ndarray], mesh: Mesh, *, local: bool = False
              ) -> dict[str, jax.Array]:
  """Host batches -> global arrays sharded on the `data` axis.

  With `local=False` every process holds the whole global batch (computed identically
  on every host) and contributes the rows its devices hold (`process_rows`). With
  `local=True` each process already holds only its 1/P of the rows (its own share of the
  data, whatever the order of processes in the mesh), which go to its devices.
  """
  return {k: global_rows(v, mesh, local=local) for k, v in batch.items()}
