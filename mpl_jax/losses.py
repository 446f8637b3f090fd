"""Losses and accuracies shared by every method. Pure jax.numpy; no TensorFlow."""

import jax
import jax.numpy as jnp


def at_least_f32(x: jax.Array) -> jax.Array:
  """Upcasts bf16/f16 to float32 for losses; keeps float32 and float64 as they are."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def one_hot(labels: jax.Array, num_classes: int) -> jax.Array:
  """Integer labels -> float32 one-hot targets."""
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def smooth(targets: jax.Array, epsilon: float) -> jax.Array:
  """Label smoothing: (1 - eps) * targets + eps / K."""
  if epsilon == 0.0:
    return targets
  num_classes = targets.shape[-1]
  return (1.0 - epsilon) * targets + epsilon / num_classes


def cross_entropy(targets: jax.Array, logits: jax.Array) -> jax.Array:
  """Per-example CE(q, z) = -sum_k q_k log_softmax(z)_k, shape [batch]."""
  return -jnp.sum(targets * jax.nn.log_softmax(at_least_f32(logits)), axis=-1)


def mean_cross_entropy(targets: jax.Array, logits: jax.Array) -> jax.Array:
  """Mean CE over the batch."""
  return jnp.mean(cross_entropy(targets, logits))


def uda_consistency(weak_logits: jax.Array, strong_logits: jax.Array, *,
                    temperature: float, threshold: float) -> tuple[jax.Array, jax.Array]:
  """UDA loss: mean(mask * CE(sg(softmax(weak / tau)), strong)) and the mask rate.

  The mask keeps examples whose sharpened weak-view confidence is at least `threshold`.
  The mean is over the whole unlabeled batch (masked examples count as zero), as in UDA.
  """
  targets = jax.lax.stop_gradient(
      jax.nn.softmax(at_least_f32(weak_logits) / temperature, axis=-1))
  mask = (jnp.max(targets, axis=-1) >= threshold).astype(jnp.float32)
  loss = jnp.mean(mask * cross_entropy(targets, strong_logits))
  return loss, jnp.mean(mask)


def fixmatch_consistency(weak_logits: jax.Array, strong_logits: jax.Array, *,
                         threshold: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """FixMatch's unlabeled loss: mean(mask * CE(one_hot(argmax weak), strong)), the mask
  (1 for the rows that get a pseudo label) and the pseudo labels.

  The weak view's prediction, without gradient, gives a hard label where its confidence
  (its largest probability) is at least `threshold`; the mean is over the whole unlabeled
  batch (masked examples count as zero), as in FixMatch.
  """
  probs = jax.lax.stop_gradient(jax.nn.softmax(at_least_f32(weak_logits), axis=-1))
  labels = jnp.argmax(probs, axis=-1)
  mask = (jnp.max(probs, axis=-1) >= threshold).astype(jnp.float32)
  targets = one_hot(labels, weak_logits.shape[-1])
  return jnp.mean(mask * cross_entropy(targets, strong_logits)), mask, labels


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Top-1 accuracy of integer labels."""
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
