"""Evaluation over fixed-size, padded and masked batches: no example dropped or doubled."""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def padded_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
  """Yields (x, y, mask) with every batch padded to `batch_size`; mask marks real rows."""
  for start in range(0, len(x), batch_size):
    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
    pad = batch_size - len(xb)
    mask = np.concatenate([np.ones(len(xb), bool), np.zeros(pad, bool)])
    if pad:
      xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
    yield xb, yb, mask


def make_eval_fn(predict: Callable) -> Callable:
  """(params, model_state, x, y, mask) -> (number correct, number counted), jitted."""

  @jax.jit
  def counts(params, model_state, x, y, mask):
    logits = predict(params, model_state, x)
    correct = (jnp.argmax(logits, axis=-1) == y) & mask
    return jnp.sum(correct), jnp.sum(mask)

  return counts


def accuracy(eval_fn: Callable, params, model_state, x: np.ndarray, y: np.ndarray,
             batch_size: int) -> float:
  """Top-1 accuracy over the whole set."""
  correct = total = 0
  for xb, yb, mask in padded_batches(x, y, batch_size):
    c, t = eval_fn(params, model_state, xb, yb, mask)
    correct += int(c)
    total += int(t)
  return correct / max(total, 1)
