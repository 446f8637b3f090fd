"""What keeps a run safe: a non-finite guard around every step, the preemption signal, and
a fault hook for tests.

The guard runs inside the jitted step, so it costs no host round trip: it records the first
step whose metrics (losses, gradient norms, the reward) are not finite, and with
`skip_nonfinite` it keeps the previous state for that step (optax `apply_if_finite` style)
and counts it.
"""

import signal
import threading
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mpl_jax.state import TrainState


def guard_step(step_fn: Callable, *, skip_nonfinite: bool) -> Callable:
  """Wraps a step: tracks the first non-finite step; optionally skips such updates."""

  def guarded(state: TrainState, batch, rng):
    new_state, metrics = step_fn(state, batch, rng)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
    if skip_nonfinite:
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
      new_state = new_state.replace(
          step=state.step + 1,
          skipped_steps=state.skipped_steps + jnp.logical_not(finite).astype(jnp.int32))
    first = jnp.where((state.first_nonfinite_step < 0) & jnp.logical_not(finite),
                      state.step + 1, state.first_nonfinite_step)
    new_state = new_state.replace(first_nonfinite_step=first)
    return new_state, {**metrics, "train/skipped_steps": new_state.skipped_steps,
                       "train/first_nonfinite_step": first}

  return guarded


class PreemptionSignal:
  """Context manager: the first SIGTERM asks the loop to checkpoint and stop.

  Later SIGTERMs while that checkpoint is written are ignored (logged), so a second signal
  cannot interrupt the save. Installed only when `install` (single-process runs: with
  several processes JAX's preemption service owns SIGTERM and they must stop at the same
  step) and from the main thread, where Python allows it.
  """

  def __init__(self, install: bool = True):
    self.requested = False
    self._install = install
    self._previous = None

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      print(f"signal {signum} again: still saving the checkpoint, ignored", flush=True)
    self.requested = True

  def __enter__(self):
    if self._install and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def corrupt_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Fault hook: every floating-point input of the batch becomes NaN."""
  return {k: np.full_like(v, np.nan) if np.issubdtype(v.dtype, np.floating) else v
          for k, v in batch.items()}
