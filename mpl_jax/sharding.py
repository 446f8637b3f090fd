"""The mesh: a `data` axis and a `model` axis for FSDP-style parameter sharding.

Every batch is split over all devices of the mesh (both axes). With `model_axis=1` (the
default) parameters and optimizer state are replicated: plain data parallelism. With
`model_axis=k > 1` the parameters, optimizer state, the student's EMA and BatchNorm
statistics are split k ways over `model` (each array on its largest dimension that k
divides; arrays with none stay replicated), so a device holds 1/k of the state; each
network's parameters are all-gathered where it runs and its gradients reduce-scattered
back. Under `jax.jit` XLA inserts those collectives and the gradient all-reduce, and every
mean in a loss (the MPL reward h and BatchNorm statistics included) is over the global
batch, not per device.

Where the parameters are gathered (`mesh.gather`):
- "network" (`gather_before_use`): each network's whole parameter tree where the network
  runs. Simple, and fine while one network's parameters and gradients fit beside the
  activations (small models).
- "layer" (`layer_gather`, given to the model): each block's parameters just before the
  block runs, its gradient reduce-scattered right after; in a scanned stage that is one
  slice of the stacked parameters per loop step. The gathered copies are tagged
  `GATHERED` and are never saved for the backward pass: rematerialization gathers them
  again, so at most a block or two is whole on a device at a time. The model also pins
  its activations to the batch split (`batch_layout`).

Parameters stacked over a leading scan axis (a module whose name ends in
`STACKED_SUFFIX`) are never split on that axis, so one step of the loop reads one block's
slice of every device's shard.
"""

import jax
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mpl_jax.errors import ConfigError

DATA_AXIS = "data"
MODEL_AXIS = "model"
BATCH_AXES = (DATA_AXIS, MODEL_AXIS)  # the batch is split over every device
GATHERS = ("network", "layer")  # the values of mesh.gather
# A module whose name ends in this holds parameters stacked over a leading scan axis.
STACKED_SUFFIX = "_rest"
# The name (`jax.ad_checkpoint.checkpoint_name`) of a block's gathered parameters.
GATHERED = "fsdp_gathered"


def make_mesh(num_devices: int = 0, model_axis: int = 1) -> Mesh:
  """A (data, model) mesh over the first `num_devices` devices (0: all of them)."""
  available = jax.device_count()
  n = num_devices or available
  if n > available:
    raise ConfigError(f"mesh.num_devices={n} but only {available} devices exist; set "
                     f"--config.mesh.num_devices to at most {available} (0 = all)")
  if model_axis < 1 or n % model_axis:
    raise ConfigError(f"mesh.model_axis={model_axis} does not divide the {n} devices of the "
                     f"mesh; use a divisor of {n} (1 = data parallel only)")
  auto = jax.sharding.AxisType.Auto
  return jax.make_mesh((n // model_axis, model_axis), BATCH_AXES, axis_types=(auto, auto),
                       devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def model_axis_size(mesh: Mesh) -> int:
  return mesh.shape.get(MODEL_AXIS, 1)


def fsdp_spec(shape: tuple[int, ...], model_size: int, stacked: bool = False) -> P:
  """Splits an array over `model` on its largest dimension that model_size divides (not
  the leading axis of `stacked` parameters, so each slice splits as one block would)."""
  if model_size == 1 or not shape:
    return P()
  dims = [d for d in sorted(range(len(shape)), key=lambda d: -shape[d])
          if shape[d] % model_size == 0 and not (stacked and d == 0)]
  if not dims:
    return P()
  spec = [None] * len(shape)
  spec[dims[0]] = MODEL_AXIS
  return P(*spec)


def is_stacked(path) -> bool:
  """Whether a leaf at this pytree path lies under a module of stacked (scanned) blocks."""
  return any(str(getattr(key, "key", "")).endswith(STACKED_SUFFIX) for key in path)


def state_sharding(mesh: Mesh, abstract_state):
  """The sharding of every leaf of a train state: replicated, or FSDP over `model`."""
  size = model_axis_size(mesh)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(mesh, fsdp_spec(leaf.shape, size, is_stacked(path))),
      abstract_state)


def _gather(mesh: Mesh, split_gradients: bool):
  """tree -> the same tree whole on every device of the mesh. With `split_gradients`, its
  gradient leaves split over `model` again (a reduce-scatter) as soon as it is formed."""
  size = model_axis_size(mesh)
  whole = replicated(mesh)

  def constrain_whole(tree):
    return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: whole, tree))

  @jax.custom_vjp
  def gather(tree):
    return constrain_whole(tree)

  def gather_fwd(tree):
    return gather(tree), None

  def gather_bwd(_, cotangent):  # the gradient, back in the parameters' split layout
    return (jax.lax.with_sharding_constraint(cotangent, jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, fsdp_spec(x.shape, size, is_stacked(path))),
        cotangent)),)

  gather.defvjp(gather_fwd, gather_bwd)
  return gather if split_gradients else constrain_whole


def layer_gather(mesh: Mesh, split_gradients: bool = True):
  """FSDP per layer: the function a model applies to one block's parameters right before
  the block runs (`mesh.gather="layer"`). It all-gathers them, names the whole copies
  `GATHERED` (so a checkpoint policy can drop them from the saved residuals) and sends
  their gradient back split. None without a model axis."""
  if model_axis_size(mesh) == 1:
    return None
  gather = _gather(mesh, split_gradients)
  return lambda tree: jax.tree.map(lambda x: checkpoint_name(x, GATHERED), gather(tree))


def batch_layout(mesh: Mesh):
  """FSDP: the function a model applies to its activations (`x -> x`) to keep them split
  over the batch on every device of the mesh, forward and backward (the constraint's
  transpose pins the activation gradients too). Without it XLA's sharding propagation
  may carry the parameters' split (over channels) into the activations, gathering every
  device's batch to compute one slice of the channels: the same arithmetic, but whole
  batches of activations on every device. None without a model axis, where nothing needs
  pinning; arrays whose leading dimension does not divide over the devices pass as they
  are."""
  if model_axis_size(mesh) == 1:
    return None
  split, n = batch_sharded(mesh), mesh.devices.size

  def pin(x):
    if x.ndim == 0 or x.shape[0] % n:
      return x
    return jax.lax.with_sharding_constraint(x, split)

  return pin


def gather_before_use(apply, mesh: Mesh, split_gradients: bool = True,
                      gather_params: bool = True):
  """FSDP per network: parameters arrive split over `model` and are all-gathered where a
  network runs; their gradients leave split again (reduce-scattered), and so do the sums
  of gradient accumulation. BatchNorm statistics are gathered too. With
  `gather_params=False` only the BatchNorm statistics are (the model gathers each
  layer's parameters itself, `layer_gather`).

  Without these constraints XLA may instead split activations over channels to follow the
  parameters' layout, or keep a full-size gradient on every device. With no model axis,
  `apply` comes back unchanged.
  """
  if model_axis_size(mesh) == 1:
    return apply
  gather_state = _gather(mesh, split_gradients=False)
  gather = _gather(mesh, split_gradients) if gather_params else (lambda tree: tree)

  def gathered_apply(params, model_state, inputs, **kwargs):
    return apply(gather(params), gather_state(model_state), inputs, **kwargs)

  return gathered_apply


def check_batch_divides(name: str, size: int, mesh: Mesh, accum_steps: int = 1) -> None:
  """Every batch dimension must divide by the number of devices in the mesh (times the
  micro-batches of gradient accumulation, so each micro-batch spreads evenly)."""
  n = mesh.devices.size
  if accum_steps > 1 and size % (n * accum_steps):
    m = n * accum_steps
    raise ConfigError(f"{name}={size} does not divide into accum_steps={accum_steps} "
                     f"micro-batches over the {n} devices of the mesh; set it to a multiple "
                     f"of {m} (e.g. {max(m, size // m * m)}) or change --config.accum_steps")
  if size % n:
    raise ConfigError(f"{name}={size} does not divide by the {n} devices of the mesh; set it "
                     f"to a multiple of {n} (e.g. {max(n, size // n * n)}) or set "
                     f"--config.mesh.num_devices")


def process_rows(mesh: Mesh, global_rows: int) -> slice:
  """The rows of a global batch (split over the mesh) that this process's devices hold.

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
  """One host array -> a global array with its rows split over the mesh (`to_global`)."""
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
  """Host batches -> global arrays, rows split over every device of the mesh.

  With `local=False` every process holds the whole global batch (computed identically
  on every host) and contributes the rows its devices hold (`process_rows`). With
  `local=True` each process already holds only its 1/P of the rows (its own share of the
  data, whatever the order of processes in the mesh), which go to its devices.
  """
  return {k: global_rows(v, mesh, local=local) for k, v in batch.items()}
