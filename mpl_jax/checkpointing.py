"""Orbax checkpoints: restore-or-init, async saves, and a refusal to mix experiments.

Each checkpoint holds two items: `state` (the TrainState pytree) and `meta` (JSON: the
method and the dtype and shape of every array). A workdir whose checkpoint has another
signature than the current config is refused before anything is written to it. Orbax
writes each checkpoint into a temporary folder and renames it when complete, so a kill
during a save leaves the previous checkpoint as the newest; no pickle is ever read.

Multi-process runs: every process calls save and restore (orbax writes each process's
shards and process 0 the metadata, with its own barriers); a damaged checkpoint is moved
by process 0 alone while the others wait. The folder may be local or gs:// (epath).
"""

import sys
import time
from typing import Any, Callable

from absl import logging

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from mpl_jax import files


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


def _attempt(read: Callable[[], Any]) -> tuple[Any, Exception | None]:
  """(result, None), or (None, the error): damage to a checkpoint shows as any error."""
  try:
    return read(), None
  except Exception as e:  # pylint: disable=broad-except
    return None, e


def _failed_anywhere(error: Exception | None) -> bool:
  """Whether a read failed on any process: all of them must set the same step aside."""
  failed = error is not None
  if jax.process_count() == 1:
    return failed
  return bool(np.any(multihost_utils.process_allgather(np.int32(failed))))


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager for one run's `checkpoints/` folder."""

  def __init__(self, directory: files.PathLike, *, max_to_keep: int,
               asynchronous: bool = True, read_only: bool = False):
    """`read_only`: another run's checkpoints (e.g. reduced MPL's large teacher): nothing
    in the folder is created, cleaned up or set aside; a damaged checkpoint raises."""
    self.directory: epath.Path = files.path(directory)
    self.read_only = read_only
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep, create=not read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=asynchronous, read_only=read_only)
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
      saved, error = _attempt(lambda: self.manager.restore(  # pylint: disable=cell-var-from-loop
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())))
      if _failed_anywhere(error):
        self._set_aside(step, error)  # raises when read_only
        continue
      if saved.meta != meta:
        raise IncompatibleCheckpointError(
            f"{self.directory} holds a checkpoint of a different experiment "
            f"({_first_difference(saved.meta, meta)}); use a new --workdir or the config "
            "that made it")
      restored, error = _attempt(lambda: self.manager.restore(  # pylint: disable=cell-var-from-loop
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))))
      if _failed_anywhere(error):
        self._set_aside(step, error)  # raises when read_only
        continue
      return restored.state, step
    if steps:  # never silently start over in a workdir that had checkpoints
      raise IncompatibleCheckpointError(
          f"none of the checkpoints {sorted(steps)} in {self.directory} could be read (they "
          f"are now in damaged_checkpoints/); fix the storage or use a new --workdir")
    return None

  def _set_aside(self, step: int, error: Exception | None) -> None:
    """Moves a damaged checkpoint out of the way (never deletes it)."""
    if self.read_only:
      raise IncompatibleCheckpointError(
          f"checkpoint {step} in {self.directory} could not be read ({error}); it was left "
          "as it is")
    source = self.directory / str(step)
    target_dir = self.directory.parent / "damaged_checkpoints"
    stamp = int(time.time())
    if jax.process_count() > 1:  # every process names the same target: process 0's time
      stamp = int(multihost_utils.broadcast_one_to_all(np.int64(stamp)))
    target = target_dir / f"{step}-{stamp}"
    if jax.process_index() == 0:
      target_dir.mkdir(parents=True, exist_ok=True)
      source.rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    if error is None:
      what = "unreadable on another process"
    else:
      reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
      what = f"{type(error).__name__}: {reason}"
    message = (f"warning: checkpoint {step} in {self.directory} is damaged ({what}); "
               f"moved to {target}; falling back to the previous checkpoint")
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
