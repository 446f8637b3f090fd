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


def to_global(batch: dict[str, np.ndarray], mesh: Mesh, *, local: bool = False
              ) -> dict[str, jax.Array]:
  """Host batches -> global arrays sharded on the `data` axis.

  With `local=False` every process holds the whole global batch (computed identically
  on every host) and contributes its contiguous slice of rows (process i of P: rows
  i*B/P to (i+1)*B/P). With `local=True` each process already holds only those rows.
  """
  sharding = batch_sharded(mesh)
  count, index = jax.process_count(), jax.process_index()
  out = {}
  for k, v in batch.items():
    if local:
      out[k] = jax.make_array_from_process_local_data(
          sharding, v, (v.shape[0] * count,) + v.shape[1:])
      continue
    rows = v.shape[0] // count
    out[k] = jax.make_array_from_process_local_data(
        sharding, v[index * rows:(index + 1) * rows], v.shape)
  return out
