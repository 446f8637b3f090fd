"""Orbax checkpoints: restore-or-init, async saves, and a refusal to mix experiments.

Each checkpoint holds two items: `state` (the TrainState pytree) and `meta` (JSON: the
method and the shape of every parameter). A workdir whose checkpoint has another
signature than the current config is refused before anything is written to it.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different experiment."""


def signature(method: str, abstract_state: Any) -> dict[str, Any]:
  """The method plus the path -> 'dtype[shape]' of every array in the state."""
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  arrays = {jax.tree_util.keystr(path, simple=True, separator="/"):
            f"{leaf.dtype}{list(leaf.shape)}" for path, leaf in leaves}
  return {"method": method, "arrays": arrays}


def _first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
  if saved.get("method") != current["method"]:
    return f"method {saved.get('method')!r} there, {current['method']!r} in the config"
  saved_arrays, arrays = saved.get("arrays", {}), current["arrays"]
  for key in sorted(set(saved_arrays) | set(arrays)):
    if saved_arrays.get(key) != arrays.get(key):
      return f"{key}: {saved_arrays.get(key)} there, {arrays.get(key)} in the config"
  return "unknown difference"


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for one run's `checkpoints/` folder."""

  def __init__(self, directory: str, *, max_to_keep: int, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=asynchronous)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def check_compatible(self, current: dict[str, Any]) -> None:
    """Raises IncompatibleCheckpointError when the newest checkpoint is another experiment's."""
    step = self.latest_step()
    if step is None:
      return
    saved = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    if saved.meta != current:
      raise IncompatibleCheckpointError(
          f"{self.directory} holds a checkpoint of a different experiment "
          f"({_first_difference(saved.meta, current)}); use a new --workdir or the config "
          "that made it")

  def restore(self, abstract_state: Any) -> tuple[Any, int] | None:
    """The newest checkpoint's state laid out like `abstract_state`, or None if none."""
    step = self.latest_step()
    if step is None:
      return None
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored.state, step

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
