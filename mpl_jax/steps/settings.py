"""What a step needs besides (state, batch, rng): its networks and its method's settings.

`StepDeps` is bound to a step with functools.partial once, when the experiment is built,
so everything in it is static under jit: functions (apply, optimizer, schedule) and
Python numbers.
"""

import dataclasses
from typing import Any, Callable

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
  """The `uda` section of the config (configs/common.py holds the defaults)."""

  weight: float        # lambda_uda; 0 turns the consistency loss off
  ramp_steps: int      # the weight ramps linearly from 0 over this many steps
  temperature: float   # tau, sharpening of the weak-view targets
  threshold: float     # kappa, confidence mask on the weak-view targets

  @classmethod
  def from_config(cls, uda) -> "UdaSettings":
    return cls(**{f.name: uda[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class FixMatchSettings:
  """The `fixmatch` section of the config (configs/common.py holds the defaults)."""

  threshold: float  # tau: a weak view's confidence that makes its argmax a pseudo label
  weight: float     # lambda_u on the unlabeled loss

  @classmethod
  def from_config(cls, fixmatch) -> "FixMatchSettings":
    return cls(**{f.name: fixmatch[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class MplSettings:
  """The `mpl` section of the config, its names resolved to the entries of the estimator
  registry (`mpl_jax.estimators.settings` builds it; configs/common.py holds the
  defaults)."""

  estimator: Any         # estimators.Estimator: steps 3-5 and the feedback
  reward: Any            # estimators.Reward (reinforce)
  student_update: Any    # estimators.StudentUpdate: what dot and meta take the step to be
  labels: str            # sample | argmax | soft
  baseline_decay: float  # moving reward baseline decay beta; 0 turns it off
  feedback_weight: float  # weight of the feedback term in the teacher's loss
  supervised_weight: float  # weight of the teacher's supervised CE
  log_grad_parts: bool   # log the norm of each part of the teacher's gradient


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


@dataclasses.dataclass(frozen=True)
class StepDeps:
  """The networks a step runs and the settings it reads, bound with functools.partial."""

  student: Network
  teacher: Network | None
  num_classes: int
  label_smoothing: float
  ema_decay: float
  uda: UdaSettings
  mpl: MplSettings
  fixmatch: FixMatchSettings
  pseudo_label_kind: str  # the pseudo-labels baseline's targets
  accum_steps: int  # micro-batches per step (gradient accumulation); 1 = none
  teacher_inputs: Callable[[Batch], jax.Array]  # the teacher's rows [labeled, u_w, u_s]
