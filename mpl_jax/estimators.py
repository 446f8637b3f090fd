"""The teacher-feedback estimators of Meta Pseudo Labels, as a registry (docs/METHOD.md,
section 3).

The teacher's feedback is expressed as a cotangent on the teacher's logits of the strong
view, t_s, so the teacher needs one forward pass and one backward pass per step whatever
the estimator: the step pulls the cotangent back through the teacher with `jax.vjp`.

- `reinforce`: d/dt_s [ sg(h - b) * mean CE(y_hat, t_s) ] with the student's reward h
  (`dot`: first order along the student's step; `taylor`: L_l(theta_S) - L_l(theta_S')).
  With h > 0 (the pseudo labels lowered the student's labeled loss) descending this term
  raises the teacher's probability of y_hat.
- `meta`: d/dt_s L_l(theta_S'(softmax(t_s))), the exact one-step meta-gradient with soft
  labels (a gradient of a gradient).
- `off`: no feedback.

Each estimator is an `Estimator` of `ESTIMATORS`, each reward a `Reward` of `REWARDS`, and
what `dot` and `meta` take the student's step to be a `StudentUpdate` of
`STUDENT_UPDATES`. `settings(config.mpl)` turns the config's names into these entries
once, when the step is built; `check(config)` is the one check of the `mpl` section.
Nothing outside this module compares those names.
"""

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mpl_jax import losses
from mpl_jax.errors import ConfigError, one_of, positive
from mpl_jax.state import NetState, tree_dot, tree_norm
from mpl_jax.steps import common
from mpl_jax.steps.settings import MplSettings, Network, StepDeps

LABELS = ("sample", "argmax", "soft")


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


# ---- The math of the rewards and of the REINFORCE feedback. ----


def reinforce_cotangent(teacher_strong_logits: jax.Array, targets: jax.Array,
                        advantage: jax.Array) -> jax.Array:
  """Gradient wrt t_s of sg(advantage) * mean CE(targets, t_s)."""
  advantage = jax.lax.stop_gradient(advantage)
  return jax.grad(lambda t: advantage * losses.mean_cross_entropy(targets, t))(
      teacher_strong_logits)


def no_feedback(teacher_strong_logits: jax.Array, targets: jax.Array,
                advantage: jax.Array) -> jax.Array:
  """The `off` estimator's cotangent on t_s: zero."""
  del targets, advantage
  return jnp.zeros_like(teacher_strong_logits)


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


# ---- What the student's step is taken to be (`mpl.student_update`). ----


def _real_stepped(network: Network, student: NetState, g_u, lr):
  direction, _ = network.tx.update(g_u, student.opt_state, student.params)
  return optax.apply_updates(student.params, jax.tree.map(lambda u: lr * u, direction))


def _plain_stepped(network: Network, student: NetState, g_u, lr):
  del network
  return jax.tree.map(lambda p, g: p - lr * g, student.params, g_u)


@dataclasses.dataclass(frozen=True)
class StudentUpdate:
  """theta_S' as `meta` differentiates it (`stepped(network, student, g_u, lr)`) and the
  first-order `dot` reward along it (`dot_reward(lr, g_after, g_u, direction)`, direction
  the optimizer's update at unit learning rate)."""

  name: str
  stepped: Callable
  dot_reward: Callable


STUDENT_UPDATES: dict[str, StudentUpdate] = {u.name: u for u in (
    StudentUpdate("real", _real_stepped,
                  lambda lr, g_after, g_u, direction: real_dot_reward(lr, g_after, direction)),
    StudentUpdate("plain", _plain_stepped,
                  lambda lr, g_after, g_u, direction: dot_reward(lr, g_after, g_u)),
)}


# ---- The rewards of `reinforce` (`mpl.reward`). ----


class LabeledLosses(NamedTuple):
  """The student's labeled loss after its step, that loss before it (None when the reward
  does not read it) and the gradient after it."""

  after: jax.Array
  before: jax.Array | None
  g_after: object


@dataclasses.dataclass(frozen=True)
class Reward:
  """h from the labeled losses: `value(mpl, lr, measured, g_u, direction)`; `reads_before`:
  whether it needs L_l(theta_S), one more forward pass of the student."""

  name: str
  reads_before: bool
  value: Callable


REWARDS: dict[str, Reward] = {r.name: r for r in (
    Reward("dot", False, lambda mpl, lr, measured, g_u, direction: mpl.student_update.dot_reward(
        lr, measured.g_after, g_u, direction)),
    Reward("taylor", True, lambda mpl, lr, measured, g_u, direction: taylor_reward(
        measured.before, measured.after)),
)}


# ---- Steps 3-5 of the MPL step: the student's update and the feedback on t_s. ----


def student_unlabeled_loss(deps: StepDeps, student: NetState, u_s, rng):
  """(params, target distributions) -> (mean CE of the student on u_s, its model state)."""
  def loss(params, soft_targets):
    logits, model_state = deps.student.apply(params, student.model_state, u_s, train=True,
                                             rng=rng)
    return losses.mean_cross_entropy(soft_targets, logits), model_state

  return loss


def student_labeled_loss(deps: StepDeps, student: NetState, x_l, y_l, rng):
  """params -> the student's mean CE on the labeled batch (unsmoothed labels)."""
  y_onehot = losses.one_hot(y_l, deps.num_classes)

  def loss(params):
    logits, _ = deps.student.apply(params, student.model_state, x_l, train=True, rng=rng)
    return losses.mean_cross_entropy(y_onehot, logits)

  return loss


def student_gradient(deps: StepDeps, student: NetState, u_s, targets, rng):
  """Step 3's gradient: (the student's unlabeled loss, its new model state, g_u) on the
  pseudo labels `targets` (smoothed by the run's label smoothing)."""
  (u_loss, model_state), g_u = jax.value_and_grad(
      student_unlabeled_loss(deps, student, u_s, rng), has_aux=True)(
          student.params, losses.smooth(targets, deps.label_smoothing))
  return u_loss, model_state, g_u


def labeled_losses(mpl: MplSettings, labeled_loss, old_params, new_params) -> LabeledLosses:
  """Step 4's measurements: L_l(theta_S'), its gradient and, if the reward reads it,
  L_l(theta_S)."""
  after, g_after = jax.value_and_grad(labeled_loss)(new_params)
  before = labeled_loss(old_params) if mpl.reward.reads_before else None
  return LabeledLosses(after, before, g_after)


def reward_and_advantage(mpl: MplSettings, student_lr, measured: LabeledLosses, g_u,
                         direction, baseline):
  """Step 4: the reward h, the advantage h - b and the updated baseline b."""
  reward = mpl.reward.value(mpl, student_lr, measured, g_u, direction)
  if mpl.baseline_decay > 0:
    return reward, reward - baseline, update_baseline(baseline, reward, mpl.baseline_decay)
  return reward, reward, baseline


def _cosine(a, b) -> jax.Array:
  return tree_dot(a, b) / (tree_norm(a) * tree_norm(b) + 1e-30)


def reward_metrics(reward, advantage, baseline, measured: LabeledLosses, g_u) -> dict:
  return {"mpl/reward": reward, "mpl/advantage": advantage, "mpl/baseline": baseline,
          "mpl/labeled_loss_after": measured.after,
          "mpl/cos_grad_labeled_unlabeled": _cosine(measured.g_after, g_u)}


class StudentStep(NamedTuple):
  """What steps 3-5 give the teacher's step 6: the updated student, the feedback cotangent
  on t_s, the new reward baseline, the student's unlabeled loss and gradient, metrics."""

  student: NetState
  d_feedback: jax.Array
  baseline: jax.Array
  u_loss: jax.Array
  g_u: object
  metrics: dict


def _reinforce_step(student: NetState, targets, t_s, batch, step, baseline, rngs, *,
                    deps: StepDeps) -> StudentStep:
  """3. the student's update on y_hat; 4. the reward h; 5. sg(h - b) * CE(y_hat, t_s)."""
  u_loss, model_state, g_u = student_gradient(deps, student, batch["unlabeled_strong"],
                                              targets, rngs[0])
  new_student, direction = common.optimizer_step(student, g_u, deps.student, model_state, step)
  labeled_loss = student_labeled_loss(deps, student, batch["labeled_x"], batch["labeled_y"],
                                      rngs[1])
  measured = labeled_losses(deps.mpl, labeled_loss, student.params, new_student.params)
  reward, advantage, baseline = reward_and_advantage(
      deps.mpl, deps.student.learning_rate(step), measured, g_u, direction, baseline)
  return StudentStep(new_student, reinforce_cotangent(t_s, targets, advantage), baseline,
                     u_loss, g_u, reward_metrics(reward, advantage, baseline, measured, g_u))


def _off_step(student: NetState, targets, t_s, batch, step, baseline, rngs, *,
              deps: StepDeps) -> StudentStep:
  """3. the student's update on y_hat; no feedback."""
  u_loss, model_state, g_u = student_gradient(deps, student, batch["unlabeled_strong"],
                                              targets, rngs[0])
  new_student = common.apply_grads(student, g_u, deps.student, model_state, step)
  return StudentStep(new_student, no_feedback(t_s, targets, None), baseline, u_loss, g_u, {})


def _meta_step(student: NetState, targets, t_s, batch, step, baseline, rngs, *,
               deps: StepDeps) -> StudentStep:
  """3-5 at once: the student's update on softmax(t_s) and the exact one-step
  meta-gradient of its labeled loss with respect to t_s (a gradient of a gradient), through
  the step `mpl.student_update` names."""
  del targets  # softmax(t_s), differentiated here
  rng_u, rng_l = rngs
  student_lr = deps.student.learning_rate(step)
  unlabeled_loss = student_unlabeled_loss(deps, student, batch["unlabeled_strong"], rng_u)
  labeled_loss = student_labeled_loss(deps, student, batch["labeled_x"], batch["labeled_y"],
                                      rng_l)

  def meta_objective(strong_logits):
    soft = losses.smooth(jax.nn.softmax(losses.at_least_f32(strong_logits)),
                         deps.label_smoothing)
    (u_loss, model_state), g_u = jax.value_and_grad(unlabeled_loss, has_aux=True)(
        student.params, soft)
    stepped = deps.mpl.student_update.stepped(deps.student, student, g_u, student_lr)
    return labeled_loss(stepped), (g_u, u_loss, model_state)

  (loss_after, (g_u, u_loss, model_state)), d_feedback = jax.value_and_grad(
      meta_objective, has_aux=True)(t_s)
  new_student = common.apply_grads(student, g_u, deps.student, model_state, step)
  return StudentStep(new_student, d_feedback, baseline, u_loss, g_u,
                     {"mpl/labeled_loss_after": loss_after})


@dataclasses.dataclass(frozen=True)
class Estimator:
  """One estimator of the teacher's feedback.

  `student_step(student, targets, t_s, batch, step, baseline, rngs, *, deps)` runs steps
  3-5 and returns a `StudentStep`. Over micro-batches (`accum_steps` > 1) the accumulated
  step runs the same pieces itself: `measures_reward` says whether step 4 runs, `feedback`
  is step 5's cotangent on t_s; `accumulates` is False where the feedback cannot be split
  into micro-batches. `labels`: the pseudo labels it works with, the first the default.
  """

  name: str
  labels: tuple[str, ...]
  student_step: Callable[..., StudentStep]
  feedback: Callable | None
  measures_reward: bool
  accumulates: bool


ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("reinforce", ("sample", "argmax"), _reinforce_step, reinforce_cotangent,
              measures_reward=True, accumulates=True),
    Estimator("meta", ("soft",), _meta_step, None, measures_reward=False, accumulates=False),
    Estimator("off", ("sample", "argmax", "soft"), _off_step, no_feedback,
              measures_reward=False, accumulates=True),
)}


def _labels(mpl) -> str:
  """'auto' -> the estimator's natural pseudo labels: soft for meta, sampled otherwise."""
  return ESTIMATORS[mpl.estimator].labels[0] if mpl.labels == "auto" else mpl.labels


def check(config) -> None:
  """The `mpl` section's one check, and whether its estimator runs with `accum_steps`."""
  mpl = config.mpl
  one_of("mpl.estimator", mpl.estimator, tuple(ESTIMATORS))
  one_of("mpl.reward", mpl.reward, tuple(REWARDS))
  one_of("mpl.student_update", mpl.student_update, tuple(STUDENT_UPDATES))
  one_of("mpl.labels", mpl.labels, ("auto",) + LABELS)
  estimator, labels = ESTIMATORS[mpl.estimator], _labels(mpl)
  if labels not in estimator.labels:
    other = next(e.name for e in ESTIMATORS.values() if labels in e.labels)
    raise ConfigError(f"mpl.estimator={estimator.name} works with pseudo labels "
                      f"{'|'.join(estimator.labels)}; set --config.mpl.labels="
                      f"{estimator.labels[0]} (or auto), not {labels!r}, or "
                      f"--config.mpl.estimator={other} for {labels} labels")
  positive("mpl.feedback_weight", mpl.feedback_weight, allow_zero=True)
  positive("mpl.supervised_weight", mpl.supervised_weight, allow_zero=True)
  if not 0.0 <= mpl.baseline_decay < 1.0:
    raise ConfigError(f"mpl.baseline_decay={mpl.baseline_decay} must be in [0, 1) (0 = off)")


def check_accumulation(config) -> None:
  """accum_steps > 1 needs an estimator whose feedback splits into micro-batches."""
  if config.accum_steps > 1 and not ESTIMATORS[config.mpl.estimator].accumulates:
    splits = next(e.name for e in ESTIMATORS.values() if e.accumulates)
    raise ConfigError(f"accum_steps={config.accum_steps} does not support mpl.estimator="
                      f"{config.mpl.estimator} (its meta-gradient runs through the whole "
                      f"batch's student gradient); use --config.mpl.estimator={splits} or "
                      "--config.accum_steps=1")


def settings(mpl) -> MplSettings:
  """The step's `MplSettings` from the config's `mpl` section (checked): each name
  resolved to its registry entry, `labels=auto` to the estimator's own."""
  return MplSettings(
      estimator=ESTIMATORS[mpl.estimator], reward=REWARDS[mpl.reward],
      student_update=STUDENT_UPDATES[mpl.student_update], labels=_labels(mpl),
      baseline_decay=mpl.baseline_decay, feedback_weight=mpl.feedback_weight,
      supervised_weight=mpl.supervised_weight, log_grad_parts=mpl.log_grad_parts)
