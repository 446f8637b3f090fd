"""Evaluation over fixed-size, padded and masked batches: no example dropped or doubled."""

from typing import Callable, Iterable

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
      yb = np.concatenate([yb, np.zeros((pad,) + yb.shape[1:], yb.dtype)])
    yield xb, yb, mask


def make_eval_fn(predict: Callable) -> Callable:
  """(params, model_state, x, y, mask) -> (top-1 correct, top-5 correct, counted), jitted.

  Top-5 counts a label among the 5 highest logits (all of them when there are fewer).
  """

  @jax.jit
  def counts(params, model_state, x, y, mask):
    logits = predict(params, model_state, x)
    top1 = (jnp.argmax(logits, axis=-1) == y) & mask
    k = min(5, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    top5 = jnp.any(top == y[:, None], axis=-1) & mask
    return jnp.sum(top1), jnp.sum(top5), jnp.sum(mask)

  return counts


def make_real_eval_fn(predict: Callable) -> Callable:
  """(params, model_state, x, real, mask) -> (correct, counted), jitted: ImageNet-ReaL
  accuracy. `real` marks each image's real labels ([batch, classes], multi-hot); an image
  with none is not counted (as the ReaL paper does); a counted image is correct when its
  top prediction is among its real labels."""

  @jax.jit
  def counts(params, model_state, x, real, mask):
    predicted = jnp.argmax(predict(params, model_state, x), axis=-1)
    counted = mask & jnp.any(real > 0, axis=-1)
    hit = jnp.take_along_axis(real, predicted[:, None], axis=-1)[:, 0] > 0
    return jnp.sum(counted & hit), jnp.sum(counted)

  return counts


def summed_counts(eval_fn: Callable, params, model_state, batches: Iterable) -> list[int]:
  """The counts `eval_fn(params, model_state, *batch)` returns, summed over `batches`."""
  sums: list[int] = []
  for batch in batches:
    counts = [int(c) for c in eval_fn(params, model_state, *batch)]
    sums = [a + b for a, b in zip(sums, counts)] if sums else counts
  return sums


def real_accuracy(eval_fn: Callable, params, model_state, batches: Iterable) -> float:
  """ReaL accuracy over padded, masked (x, real, mask) batches (`make_real_eval_fn`)."""
  correct, counted = summed_counts(eval_fn, params, model_state, batches) or (0, 0)
  return correct / max(counted, 1)


def accuracy(eval_fn: Callable, params, model_state, batches: Iterable) -> dict[str, float]:
  """Top-1 and top-5 accuracy over padded, masked (x, y, mask) batches."""
  top1, top5, total = summed_counts(eval_fn, params, model_state, batches) or (0, 0, 0)
  total = max(total, 1)
  return {"top1": top1 / total, "top5": top5 / total}
