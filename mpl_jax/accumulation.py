"""Gradient accumulation: a step's batch as k micro-batches run one after the other.

With `StepDeps.accum_steps = k > 1` a step's batch is cut into k
micro-batches (micro-batch i holds rows i, i + k, i + 2k, ... of every array, so each device
keeps its own rows) that run one after the other in a `lax.scan`; only one micro-batch's
activations are alive at a time. Every loss is a mean over equal-sized micro-batches, so
the mean of their gradients is the gradient of the whole batch: without BatchNorm or
dropout, k micro-batches give the update of one k-times-larger batch, up to float
rounding. With BatchNorm each micro-batch is normalized by its own statistics (as each
device is in data-parallel training) and the running statistics move once per step,
toward the mean of the micro-batches' statistics. Dropout and sampled pseudo labels draw
from one key per micro-batch, so they match the large batch in distribution, not draw
for draw. MPL's step needs three passes (`mpl_jax.steps.mpl._mpl_step_accumulated`).
"""

import jax
import jax.numpy as jnp


def micro_batches(batch: dict[str, jax.Array], k: int) -> dict[str, jax.Array]:
  """[n, ...] arrays -> [k, n / k, ...]: micro-batch i holds rows i, i + k, i + 2k, ...

  Interleaved rather than contiguous rows: with the batch sharded on its rows, every
  device already holds its share of every micro-batch, so nothing moves between devices.
  """
  def split(name, v):
    if v.shape[0] % k:
      raise ValueError(f"{name} has {v.shape[0]} rows, not divisible by accum_steps={k}")
    return jnp.swapaxes(v.reshape((v.shape[0] // k, k) + v.shape[1:]), 0, 1)

  return {name: split(name, v) for name, v in batch.items()}


def scan_micro_batches(fn, micro: dict[str, jax.Array], k: int):
  """Runs fn(i, micro-batch i) -> (averaged, kept) for i = 0..k-1 in sequence (lax.scan).

  Returns (the mean over i of `averaged`, `kept` stacked on a leading axis of k). Sums are
  kept in at least float32 and cast back to fn's output dtypes at the end.
  """
  first, _ = jax.eval_shape(fn, jnp.zeros((), jnp.int32),
                            jax.tree.map(lambda v: v[0], micro))
  acc_dtype = lambda d: jnp.promote_types(d, jnp.float32)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, acc_dtype(s.dtype)), first)

  def body(total, xs):
    i, mb = xs
    averaged, kept = fn(i, mb)
    return jax.tree.map(lambda t, o: t + o.astype(t.dtype), total, averaged), kept

  total, kept = jax.lax.scan(body, zeros, (jnp.arange(k, dtype=jnp.int32), micro))
  return jax.tree.map(lambda t, s: (t / k).astype(s.dtype), total, first), kept


def mean_over_micro_batches(fn, micro: dict[str, jax.Array], k: int):
  """The mean over i of fn(i, micro-batch i), the micro-batches run in sequence."""
  return scan_micro_batches(lambda i, mb: (fn(i, mb), None), micro, k)[0]


def fold_in_tree(rngs, i):
  """Every key of a pytree of keys folded with micro-batch index i."""
  return jax.tree.map(lambda r: jax.random.fold_in(r, i), rngs)


def value_and_grad(loss_fn, params, batch, rngs, k: int):
  """((loss, aux), grads) of loss_fn(params, batch, rngs) -> (loss, aux), averaged over k
  micro-batches of `batch` (k = 1: one plain `jax.value_and_grad`). `aux` (metrics, model
  state) is averaged too; each micro-batch gets `rngs` folded with its index."""
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if k == 1:
    return grad_fn(params, batch, rngs)
  return mean_over_micro_batches(
      lambda i, mb: grad_fn(params, mb, fold_in_tree(rngs, i)), micro_batches(batch, k), k)
