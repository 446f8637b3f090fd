"""Optimizers from config: SGD (Nesterov) with warmup + cosine, the student's wait, wd mask."""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "fixmatch_cosine")
# FixMatch's schedule, lr * cos(7 pi k / (16 K)), ends at cos(7 pi / 16) = 0.195 of lr.
FIXMATCH_COSINE = 7.0 / 16.0


def learning_rate_schedule(cfg: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Zero for `wait_steps`, linear warmup for `warmup_steps`, then constant, cosine to 0,
  or FixMatch's lr * cos(7 pi k / 16 K) over the K steps after the warmup.

  The student of MPL waits (learning rate 0) while the teacher warms up: the paper's
  `student_wait_steps`. A network without a wait uses wait_steps = 0.
  """
  base = float(cfg["learning_rate"])
  wait = int(cfg.get("wait_steps", 0))
  warmup = int(cfg["warmup_steps"])
  decay_steps = max(total_steps - wait - warmup, 1)
  kind = cfg["schedule"]
  if kind not in SCHEDULES:
    raise ValueError(f"schedule {kind!r} is unknown; valid: {list(SCHEDULES)}")

  def schedule(step):
    s = jnp.asarray(step, jnp.float32) - wait
    warm = base * jnp.minimum(1.0, (s + 1.0) / max(warmup, 1))
    progress = jnp.clip((s - warmup) / decay_steps, 0.0, 1.0)
    if kind == "cosine":
      main = base * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif kind == "fixmatch_cosine":
      main = base * jnp.cos(FIXMATCH_COSINE * jnp.pi * progress)
    else:
      main = jnp.full_like(s, base)
    lr = jnp.where(s < warmup, warm, main)
    return jnp.where(s < 0, 0.0, lr)

  return schedule


def weight_decay_mask(params) -> Any:
  """True for the parameters weight decay applies to: kernels, not biases or BN scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(cfg: Mapping[str, Any], total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """SGD with optional (Nesterov) momentum, weight decay on kernels, grad clipping.

  Returns the transformation at unit learning rate and, separately, the schedule. The step
  multiplies the updates by schedule(global step): optax's own step counter would lag
  behind the global step for a network that sits out a phase (the pseudo-labels student),
  and MPL's `dot` reward needs the exact learning rate the student used.
  """
  schedule = learning_rate_schedule(cfg, total_steps)
  parts = []
  if cfg.get("grad_clip_norm", 0.0):
    parts.append(optax.clip_by_global_norm(float(cfg["grad_clip_norm"])))
  if cfg.get("weight_decay", 0.0):
    parts.append(optax.add_decayed_weights(float(cfg["weight_decay"]), mask=weight_decay_mask))
  momentum = float(cfg.get("momentum", 0.0))
  parts.append(optax.sgd(1.0, momentum=momentum or None,
                         nesterov=bool(cfg.get("nesterov", False)) and momentum > 0))
  return optax.chain(*parts), schedule
