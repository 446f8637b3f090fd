"""Teacher-feedback estimators of Meta Pseudo Labels (docs/METHOD.md, section 3).

The teacher's feedback is expressed as a cotangent on the teacher's logits of the strong
view, t_s, so the teacher needs one forward pass and one backward pass per step whatever
the estimator: the step pulls the cotangent back through the teacher with `jax.vjp`.

- `reinforce`: d/dt_s [ sg(h - b) * mean CE(y_hat, t_s) ] with the student's reward h
  (`dot`: eta_S <grad L_l(theta_S'), g_u>; `taylor`: L_l(theta_S) - L_l(theta_S')).
  With h > 0 (the pseudo labels lowered the student's labeled loss) descending this term
  raises the teacher's probability of y_hat.
- `meta`: d/dt_s L_l(theta_S - eta_S grad_S CE(softmax(t_s), S(u_s))), the exact one-step
  meta-gradient with soft labels (a gradient of a gradient).
- `off`: no feedback.
"""

import jax
import jax.numpy as jnp

from mpl_jax import losses
from mpl_jax.state import tree_dot

ESTIMATORS = ("reinforce", "meta", "off")
REWARDS = ("dot", "taylor")
STUDENT_UPDATES = ("real", "plain")
LABELS = ("sample", "argmax", "soft")


def resolve_labels(estimator: str, labels: str) -> str:
  """'auto' -> the estimator's natural pseudo labels: soft for meta, sampled otherwise."""
  if labels == "auto":
    return "soft" if estimator == "meta" else "sample"
  return labels


def pseudo_label_targets(teacher_logits: jax.Array, kind: str, rng: jax.Array) -> jax.Array:
  """The teacher's pseudo labels as (stop-gradient) target distributions.

  `sample` draws y_hat ~ softmax(t) per example (the paper); `argmax` takes the mode;
  `soft` keeps softmax(t). Hard labels come back one-hot.
  """
  logits = jax.lax.stop_gradient(losses.at_least_f32(teacher_logits))
  num_classes = logits.shape[-1]
  if kind == "sample":
    return losses.one_hot(jax.random.categorical(rng, logits, axis=-1), num_classes)
  if kind == "argmax":
    return losses.one_hot(jnp.argmax(logits, axis=-1), num_classes)
  if kind == "soft":
    return jax.nn.softmax(logits, axis=-1)
  raise ValueError(f"pseudo-label kind {kind!r} is unknown; valid: {list(LABELS)}")


def reinforce_cotangent(teacher_strong_logits: jax.Array, targets: jax.Array,
                        advantage: jax.Array) -> jax.Array:
  """Gradient wrt t_s of sg(advantage) * mean CE(targets, t_s)."""
  advantage = jax.lax.stop_gradient(advantage)
  return jax.grad(lambda t: advantage * losses.mean_cross_entropy(targets, t))(
      teacher_strong_logits)


def dot_reward(student_lr: jax.Array, grad_labeled_after: object,
               grad_unlabeled: object) -> jax.Array:
  """h = eta_S * <grad L_l(theta_S'), g_u>: first-order L_l(theta_S) - L_l(theta_S')."""
  return student_lr * tree_dot(grad_labeled_after, grad_unlabeled)


def real_dot_reward(student_lr: jax.Array, grad_labeled_after: object,
                    direction: object) -> jax.Array:
  """h = <grad L_l(theta_S'), theta_S - theta_S'> with theta_S' = theta_S + eta_S * u, u the
  optimizer's real direction (momentum, weight decay, clipping): first-order
  L_l(theta_S) - L_l(theta_S'). For plain SGD u = -g_u, and this is `dot_reward`."""
  return -student_lr * tree_dot(grad_labeled_after, direction)


def taylor_reward(loss_before: jax.Array, loss_after: jax.Array) -> jax.Array:
  """h = L_l(theta_S) - L_l(theta_S'): old minus new, positive when the student improved."""
  return loss_before - loss_after


def update_baseline(baseline: jax.Array, reward: jax.Array, decay: float) -> jax.Array:
  """b <- b + (1 - decay) * (h - b)."""
  return baseline + (1.0 - decay) * (reward - baseline)
