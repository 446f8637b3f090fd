"""The steps of the baselines MPL is measured against, and finetuning after MPL."""

import jax
import jax.numpy as jnp

from mpl_jax import accumulation
from mpl_jax import estimators
from mpl_jax import losses
from mpl_jax.state import TrainState
from mpl_jax.steps import common
from mpl_jax.steps.settings import StepDeps, teacher_views

Metrics = common.Metrics


def _learn_labels(state: TrainState, batch, rng, deps: StepDeps, network: str):
  """One supervised update of `network` (student or teacher) on the labeled batch."""
  rng = jax.random.fold_in(rng, state.step)
  return common.supervised_update(getattr(state, network), getattr(deps, network),
                                  batch["labeled_x"], batch["labeled_y"], rng, state.step,
                                  deps, network)


def supervised_step(state: TrainState, batch, rng, *, deps: StepDeps
                    ) -> tuple[TrainState, Metrics]:
  """Supervised baseline: the student learns from the labeled batch only."""
  student, metrics = _learn_labels(state, batch, rng, deps, "student")
  return common.finish(state, deps, student=student), metrics


def finetune_step(state: TrainState, batch, rng, *, deps: StepDeps, first_step: int
                  ) -> tuple[TrainState, Metrics]:
  """After MPL (the paper's recipe): the student learns from the labeled batch.

  `deps.student` carries the finetune learning rate. The optimizer state (momentum) starts
  afresh at `first_step`, the first step of the finetune phase.
  """
  fresh = deps.student.tx.init(state.student.params)
  restart = state.step == first_step
  opt_state = jax.tree.map(lambda new, old: jnp.where(restart, new, old), fresh,
                           state.student.opt_state)
  state = state.replace(student=state.student.replace(opt_state=opt_state))
  return supervised_step(state, batch, rng, deps=deps)


def teacher_pretrain_step(state: TrainState, batch, rng, *, deps: StepDeps
                          ) -> tuple[TrainState, Metrics]:
  """Pseudo-labels baseline, phase 1: the teacher learns from the labeled batch."""
  teacher, metrics = _learn_labels(state, batch, rng, deps, "teacher")
  return state.replace(step=state.step + 1, teacher=teacher), metrics


def uda_step(state: TrainState, batch, rng, *, deps: StepDeps) -> tuple[TrainState, Metrics]:
  """UDA baseline: one network, supervised CE + ramped consistency on unlabeled views."""
  rng = jax.random.fold_in(rng, state.step)
  weight = common.uda_weight(state.step, deps.uda)
  net = state.student

  def loss_fn(params, b, rng):
    n_l, n_u = b["labeled_x"].shape[0], b["unlabeled_weak"].shape[0]
    logits, model_state = deps.student.apply(params, net.model_state, teacher_views(b),
                                             train=True, rng=rng)
    loss, parts = common.sup_uda_loss(logits, common.smoothed_one_hot(b["labeled_y"], deps),
                                      n_l, n_u, weight, deps.uda)
    return loss, (parts, model_state)

  train_batch = {k: batch[k] for k in ("labeled_x", "labeled_y", "unlabeled_weak",
                                       "unlabeled_strong")}
  (loss, ((sup, uda_loss, mask_rate), model_state)), grads = accumulation.value_and_grad(
      loss_fn, net.params, train_batch, rng, deps.accum_steps)
  student = common.apply_grads(net, grads, deps.student, model_state, state.step)
  metrics = {"student/loss": loss, "student/loss_labeled": sup, "student/loss_uda": uda_loss,
             "uda/mask_rate": mask_rate, "uda/weight": weight,
             **common.net_metrics("student", student, grads,
                                  deps.student.learning_rate(state.step))}
  return common.finish(state, deps, student=student), metrics


def pseudo_label_step(state: TrainState, batch, rng, *, deps: StepDeps
                      ) -> tuple[TrainState, Metrics]:
  """Pseudo-labels baseline, phase 2: a fixed teacher labels the unlabeled batch.

  The teacher labels the weak view in eval mode; the student learns from those labels on
  the strong view.
  """
  rng = jax.random.fold_in(rng, state.step)
  rngs = jax.random.split(rng)  # (labels, student)
  teacher = state.teacher
  net = state.student
  with_accuracy = "unlabeled_y" in batch

  def loss_fn(params, b, rngs):
    t_w, _ = deps.teacher.apply(teacher.params, teacher.model_state, b["unlabeled_weak"],
                                train=False)
    targets = estimators.pseudo_label_targets(t_w, deps.pseudo_label_kind, rngs[0])
    logits, model_state = deps.student.apply(params, net.model_state, b["unlabeled_strong"],
                                             train=True, rng=rngs[1])
    loss = losses.mean_cross_entropy(losses.smooth(targets, deps.label_smoothing), logits)
    extra = {"pseudo_labels/accuracy": losses.accuracy(targets, b["unlabeled_y"])
             } if with_accuracy else {}
    return loss, (extra, model_state)

  names = ("unlabeled_weak", "unlabeled_strong") + (("unlabeled_y",) if with_accuracy else ())
  (loss, (extra, model_state)), grads = accumulation.value_and_grad(
      loss_fn, net.params, {k: batch[k] for k in names}, (rngs[0], rngs[1]), deps.accum_steps)
  student = common.apply_grads(net, grads, deps.student, model_state, state.step)
  metrics = {"student/loss_unlabeled": loss, **extra,
             **common.net_metrics("student", student, grads,
                                  deps.student.learning_rate(state.step))}
  return common.finish(state, deps, student=student), metrics


def fixmatch_step(state: TrainState, batch, rng, *, deps: StepDeps
                  ) -> tuple[TrainState, Metrics]:
  """FixMatch (Sohn et al., 2020): one network (the student) on [x_l, u_w, u_s] in one
  train-mode pass. The weak view's prediction gives a hard pseudo label where its
  confidence reaches tau (no gradient through it); the strong view learns that label with
  CE, weighted by lambda_u and averaged over every unlabeled image; beside the CE of the
  labeled batch. The student's EMA is what `student_ema` evaluates."""
  rng = jax.random.fold_in(rng, state.step)
  net, settings = state.student, deps.fixmatch
  with_accuracy = "unlabeled_y" in batch

  def loss_fn(params, b, rng):
    n_l, n_u = b["labeled_x"].shape[0], b["unlabeled_weak"].shape[0]
    logits, model_state = deps.student.apply(params, net.model_state, teacher_views(b),
                                             train=True, rng=rng)
    t_l, t_w, t_s = common.split3(logits, n_l, n_u)
    sup = losses.mean_cross_entropy(common.smoothed_one_hot(b["labeled_y"], deps), t_l)
    unlabeled, mask, labels = losses.fixmatch_consistency(t_w, t_s,
                                                          threshold=settings.threshold)
    extra = {}
    if with_accuracy:  # of every row's weak-view argmax, and of the rows trained on
      correct = (labels == b["unlabeled_y"]).astype(jnp.float32)
      extra = {"pseudo_labels/accuracy": jnp.mean(correct),
               "fixmatch/pseudo_label_accuracy_kept": jnp.sum(mask * correct) / jnp.maximum(
                   jnp.sum(mask), 1.0)}
    return sup + settings.weight * unlabeled, ((sup, unlabeled, jnp.mean(mask), extra),
                                               model_state)

  names = ("labeled_x", "labeled_y", "unlabeled_weak", "unlabeled_strong") + (
      ("unlabeled_y",) if with_accuracy else ())
  (loss, ((sup, unlabeled, mask_rate, extra), model_state)), grads = (
      accumulation.value_and_grad(loss_fn, net.params, {k: batch[k] for k in names}, rng,
                                  deps.accum_steps))
  student = common.apply_grads(net, grads, deps.student, model_state, state.step)
  metrics = {"student/loss": loss, "student/loss_labeled": sup,
             "student/loss_unlabeled": unlabeled, "fixmatch/mask_rate": mask_rate, **extra,
             **common.net_metrics("student", student, grads,
                                  deps.student.learning_rate(state.step))}
  return common.finish(state, deps, student=student), metrics
