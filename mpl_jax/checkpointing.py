"""Orbax checkpoints: restore-or-init, async saves, and a refusal to mix experiments.

Each checkpoint holds two items: `state` (the TrainState pytree) and `meta` (JSON: the
method and the dtype and shape of every array). A workdir whose checkpoint has another
signature than the current config is refused before anything is written to it. Orbax
writes each checkpoint into a temporary folder and renames it when complete, so a kill
during a save leaves the previous checkpoint as the newest; no pickle is ever read.
"""

import os
import shutil
import sys
import time
from typing import Any

from absl import logging

import jax
from jax.experimental import multihost_utils
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

  def restore(self, abstract_state: Any, meta: dict[str, Any]) -> tuple[Any, int] | None:
    """The newest readable checkpoint's state laid out like `abstract_state`, or None.

    A checkpoint of another experiment (its `meta` differs) raises
    IncompatibleCheckpointError before anything is changed. A damaged one (unreadable
    meta or state: a truncated or partly written file) is moved to
    `<workdir>/damaged_checkpoints/` with a warning, and the previous one is tried.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        saved = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except  # damage shows as any error
        self._set_aside(step, e)
        continue
      if saved.meta != meta:
        raise IncompatibleCheckpointError(
            f"{self.directory} holds a checkpoint of a different experiment "
            f"({_first_difference(saved.meta, meta)}); use a new --workdir or the config "
            "that made it")
      try:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      return restored.state, step
    if steps:  # never silently start over in a workdir that had checkpoints
      raise IncompatibleCheckpointError(
          f"none of the checkpoints {sorted(steps)} in {self.directory} could be read (they "
          f"are now in damaged_checkpoints/); fix the storage or use a new --workdir")
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Moves a damaged checkpoint out of the way (never deletes it)."""
    source = os.path.join(self.directory, str(step))
    target_dir = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints")
    target = os.path.join(target_dir, f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      os.makedirs(target_dir, exist_ok=True)
      shutil.move(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    message = (f"warning: checkpoint {step} in {self.directory} is damaged "
               f"({type(error).__name__}: {reason}); moved to {target}; "
               "falling back to the previous checkpoint")
    logging.warning(message)
    print(message, file=sys.stderr, flush=True)
    self.manager.reload()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
