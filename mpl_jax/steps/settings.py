"""What a step needs besides (state, batch, rng): its networks and its method's settings.

`StepDeps` is bound to a step with functools.partial once, when the experiment is built,
so everything in it is static under jit: functions (apply, optimizer, schedule) and
Python numbers.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from mpl_jax.state import ApplyFn

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Network:
  """What a step needs to know about one network: how to run it and how to update it."""

  apply: ApplyFn
  tx: optax.GradientTransformation
  learning_rate: optax.Schedule


@dataclasses.dataclass(frozen=True)
class UdaSettings:
  weight: float = 0.0        # lambda_uda; 0 turns the consistency loss off
  ramp_steps: int = 1        # the weight ramps linearly from 0 over this many steps
  temperature: float = 1.0   # tau, sharpening of the weak-view targets
  threshold: float = 0.0     # kappa, confidence mask on the weak-view targets


@dataclasses.dataclass(frozen=True)
class MplSettings:
  estimator: str = "reinforce"  # reinforce | meta | off
  reward: str = "dot"           # dot | taylor (reinforce only)
  labels: str = "sample"        # sample | argmax | soft
  baseline_decay: float = 0.0   # moving reward baseline decay beta; 0 turns it off
  feedback_weight: float = 1.0  # weight of the feedback term in the teacher's loss
  supervised_weight: float = 1.0  # weight of the teacher's supervised CE
  log_grad_parts: bool = False  # log the norm of each part of the teacher's gradient
  student_update: str = "real"  # real: dot/meta follow the optimizer's update; plain: -lr*g


def teacher_views(batch: Batch) -> jax.Array:
  """The teacher's input: the images [x_l, u_w, u_s], concatenated."""
  return jnp.concatenate([batch["labeled_x"], batch["unlabeled_weak"],
                          batch["unlabeled_strong"]])


def large_teacher_logits(batch: Batch) -> jax.Array:
  """Reduced MPL's teacher input: a frozen large teacher's logits of the same rows.

  One view of each unlabeled image was precomputed, so it stands for both u_w and u_s.
  """
  return jnp.concatenate([batch["teacher_labeled_x"], batch["teacher_unlabeled_x"],
                          batch["teacher_unlabeled_x"]])


# What a method's teacher reads (`methods.Method.teacher_reads`) -> the function making it.
TEACHER_INPUTS: dict[str, Callable[[Batch], jax.Array]] = {
    "images": teacher_views,
    "large_teacher_logits": large_teacher_logits,
}


@dataclasses.dataclass(frozen=True)
class StepDeps:
  """The networks a step runs and the settings it reads, bound with functools.partial."""

  student: Network
  teacher: Network | None
  num_classes: int
  label_smoothing: float = 0.0
  ema_decay: float = 0.0
  uda: UdaSettings = UdaSettings()
  mpl: MplSettings = MplSettings()
  pseudo_label_kind: str = "argmax"  # the pseudo-labels baseline's targets
  accum_steps: int = 1  # micro-batches per step (gradient accumulation); 1 = none
  teacher_inputs: Callable[[Batch], jax.Array] = teacher_views  # rows [labeled, u_w, u_s]
