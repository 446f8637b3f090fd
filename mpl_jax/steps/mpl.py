"""The Meta Pseudo Labels step, read top to bottom as docs/METHOD.md, section 2, steps 1-6.

The teacher runs forward once on its three views; each part of its loss becomes a
cotangent on its logits, and the sum is pulled back with one vjp. Steps 3-5 (the student's
update and the feedback on the teacher's logits) are the estimator's
(`mpl_jax.estimators`), chosen once when the step is built. With `accum_steps` > 1 the step
runs the same helpers over micro-batches (`_mpl_step_accumulated`).
"""

import jax
import jax.numpy as jnp

from mpl_jax import accumulation
from mpl_jax import estimators
from mpl_jax import losses
from mpl_jax.state import NetState, TrainState, tree_norm
from mpl_jax.steps import common
from mpl_jax.steps.settings import StepDeps

Metrics = common.Metrics


# 1. The teacher's forward pass and its supervised + UDA loss as a cotangent on its logits.


def teacher_forward(deps: StepDeps, teacher: NetState, batch, rng):
  """params -> (the teacher's train-mode logits of its input rows, its new model state)."""
  return lambda params: deps.teacher.apply(params, teacher.model_state,
                                           deps.teacher_inputs(batch), train=True, rng=rng)


def teacher_loss_cotangent(deps: StepDeps, t_all, labeled_y, n_l: int, n_u: int, w_uda):
  """d/dt of supervised_weight * CE(t_l) + w_uda * UDA(t_w, t_s); and (sup, uda, mask)."""
  (_, parts), d_sup_uda = jax.value_and_grad(common.sup_uda_loss, has_aux=True)(
      t_all, common.smoothed_one_hot(labeled_y, deps), n_l, n_u, w_uda, deps.uda,
      deps.mpl.supervised_weight)
  return d_sup_uda, parts


def teacher_pass(deps: StepDeps, teacher: NetState, batch, rng, w_uda):
  """Step 1: (t_all, the vjp of the teacher's forward, its new model state, the
  supervised + UDA cotangent on t_all, (sup, uda, mask rate))."""
  n_l, n_u = batch["labeled_x"].shape[0], batch["unlabeled_weak"].shape[0]
  t_all, teacher_vjp, model_state = jax.vjp(teacher_forward(deps, teacher, batch, rng),
                                            teacher.params, has_aux=True)
  d_sup_uda, teacher_losses = teacher_loss_cotangent(deps, t_all, batch["labeled_y"], n_l,
                                                     n_u, w_uda)
  return t_all, teacher_vjp, model_state, d_sup_uda, teacher_losses


def strong_rows(batch) -> int:
  """Where the strong view's rows t_s start among the teacher's rows [x_l, u_w, u_s]."""
  return batch["labeled_x"].shape[0] + batch["unlabeled_weak"].shape[0]


# 2. Pseudo labels from the strong view.


def pseudo_labels(deps: StepDeps, t_s, rng):
  """y_hat from t_s: the same labels teach the student and carry the feedback."""
  return estimators.pseudo_label_targets(t_s, deps.mpl.labels, rng)


# 6. The teacher's gradient: supervised + UDA + feedback, pulled back through its forward.


def feedback_rows(t_all, n_lu: int, d_feedback, weight: float):
  """The feedback cotangent on t_s, placed in the rows of t_s among all teacher rows."""
  return jnp.zeros_like(t_all).at[n_lu:].set(weight * d_feedback)


def pull_back(teacher_vjp, d_sup_uda, d_feedback_all, n_l: int, log_parts: bool):
  """The teacher's gradient: one vjp of the summed cotangents; with `log_parts`, the
  three parts (supervised, UDA, feedback) pulled back separately, stacked on axis 0."""
  if not log_parts:
    (grads,) = teacher_vjp(d_sup_uda + d_feedback_all)
    return grads
  d_sup_only = jnp.zeros_like(d_sup_uda).at[:n_l].set(d_sup_uda[:n_l])  # UDA: rows n_l..
  cotangents = jnp.stack([d_sup_only, d_sup_uda - d_sup_only, d_feedback_all])
  return jax.vmap(lambda c: teacher_vjp(c)[0])(cotangents)


def teacher_gradient(deps: StepDeps, teacher_vjp, t_all, batch, d_sup_uda, d_feedback):
  """Step 6's gradient: the feedback placed on the rows of t_s, all cotangents pulled
  back with one vjp (three with `mpl.log_grad_parts`)."""
  d_feedback_all = feedback_rows(t_all, strong_rows(batch), d_feedback,
                                 deps.mpl.feedback_weight)
  return pull_back(teacher_vjp, d_sup_uda, d_feedback_all, batch["labeled_x"].shape[0],
                   deps.mpl.log_grad_parts)


def sum_parts(grads, log_parts: bool) -> tuple[object, Metrics]:
  """`pull_back`'s output as one gradient, and the norm of each part when logged."""
  if not log_parts:
    return grads, {}
  norms = [tree_norm(jax.tree.map(lambda g, i=i: g[i], grads)) for i in range(3)]
  total = jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)
  return total, {"teacher/grad_norm_supervised": norms[0], "teacher/grad_norm_uda": norms[1],
                 "teacher/grad_norm_feedback": norms[2],
                 "teacher/feedback_to_supervised": norms[2] / (norms[0] + 1e-30)}


def step_metrics(deps: StepDeps, step, *, teacher: NetState, teacher_grads, student: NetState,
                 g_u, teacher_losses, w_uda, u_loss) -> Metrics:
  sup_loss, uda_loss, mask_rate = teacher_losses
  return {"teacher/loss_labeled": sup_loss, "teacher/loss_uda": uda_loss,
          "uda/mask_rate": mask_rate, "uda/weight": w_uda, "student/loss_unlabeled": u_loss,
          **common.net_metrics("teacher", teacher, teacher_grads,
                               deps.teacher.learning_rate(step)),
          **common.net_metrics("student", student, g_u, deps.student.learning_rate(step))}


def student_step_and_feedback(student: NetState, targets, t_s, batch, step, baseline, rng, *,
                              deps: StepDeps) -> estimators.StudentStep:
  """Steps 3-5, the estimator's (`deps.mpl.estimator`): the student's update on the pseudo
  labels `targets` drawn from t_s, the reward and the feedback cotangent on t_s."""
  return deps.mpl.estimator.student_step(student, targets, t_s, batch, step, baseline,
                                         jax.random.split(rng), deps=deps)


def mpl_step(state: TrainState, batch, rng, *, deps: StepDeps) -> tuple[TrainState, Metrics]:
  """One Meta Pseudo Labels step: the student learns from the teacher's pseudo labels, the
  teacher from labels, UDA consistency and the student's feedback."""
  rng = jax.random.fold_in(rng, state.step)
  rng_teacher, rng_labels, rng_student = jax.random.split(rng, 3)
  if deps.accum_steps > 1:
    return _mpl_step_accumulated(state, batch, (rng_teacher, rng_labels, rng_student), deps)
  w_uda = common.uda_weight(state.step, deps.uda)

  # 1. Teacher forward (train mode) on its rows [x_l, u_w, u_s], kept for one vjp at the
  #    end; its supervised and UDA losses as a cotangent on its logits.
  t_all, teacher_vjp, teacher_model_state, d_sup_uda, teacher_losses = teacher_pass(
      deps, state.teacher, batch, rng_teacher, w_uda)
  t_s = t_all[strong_rows(batch):]

  # 2. Pseudo labels from the strong view.
  targets = pseudo_labels(deps, t_s, rng_labels)

  # 3. The student's step on the pseudo labels; 4. the reward: did that step lower the
  #    student's labeled loss?; 5. the feedback as a cotangent on t_s. The estimator's.
  out = student_step_and_feedback(state.student, targets, t_s, batch, state.step,
                                  state.reward_baseline, rng_student, deps=deps)

  # 6. The teacher: supervised + UDA + feedback, pulled back through the one forward pass.
  teacher_grads, part_metrics = sum_parts(
      teacher_gradient(deps, teacher_vjp, t_all, batch, d_sup_uda, out.d_feedback),
      deps.mpl.log_grad_parts)
  new_teacher = common.apply_grads(state.teacher, teacher_grads, deps.teacher,
                                   teacher_model_state, state.step)

  metrics = {**out.metrics, **part_metrics, **step_metrics(
      deps, state.step, teacher=new_teacher, teacher_grads=teacher_grads,
      student=out.student, g_u=out.g_u, teacher_losses=teacher_losses, w_uda=w_uda,
      u_loss=out.u_loss)}
  if "unlabeled_y" in batch:
    metrics["pseudo_labels/accuracy"] = losses.accuracy(targets, batch["unlabeled_y"])
  return common.finish(state, deps, student=out.student, teacher=new_teacher,
                       baseline=out.baseline), metrics


def _mpl_step_accumulated(state: TrainState, batch, rngs, deps: StepDeps
                          ) -> tuple[TrainState, Metrics]:
  """`mpl_step`'s steps 1-6 over k = deps.accum_steps micro-batches, in three passes.

  The reward h is one scalar over the whole batch, and the feedback needs it, so the
  teacher's gradient cannot be finished micro-batch by micro-batch in one pass:
  A. per micro-batch: 1. the teacher forward, 2. pseudo labels from t_s (kept, one row per
     unlabeled image), 3. the student's gradient on them, averaged into g_u;
  B. 3. the student's update with g_u, 4. the reward from the labeled micro-batches;
  C. per micro-batch: 1. the teacher forward again with the same key (the same t_s),
     5. the feedback with the now-known advantage, 6. one vjp; averaged.
  The teacher runs forward twice per micro-batch, which costs less than a second backward
  pass would. Only one micro-batch's activations of one network are alive at a time.
  Estimators whose feedback does not split into micro-batches (`meta`) are refused by the
  config check (`estimators.check_accumulation`).
  """
  mpl, k = deps.mpl, deps.accum_steps
  rng_teacher, rng_labels, rng_student = rngs
  rng_student_u, rng_student_l = jax.random.split(rng_student)
  student, teacher, step = state.student, state.teacher, state.step
  w_uda = common.uda_weight(step, deps.uda)
  with_accuracy = "unlabeled_y" in batch
  micro = accumulation.micro_batches(batch, k)

  # A. Per micro-batch: the teacher's pseudo labels and the student's gradient on them.
  def pseudo_labels_and_student_grad(i, mb):
    t_all, _ = teacher_forward(deps, teacher, mb, jax.random.fold_in(rng_teacher, i))(
        teacher.params)
    targets = pseudo_labels(deps, t_all[strong_rows(mb):],
                            jax.random.fold_in(rng_labels, i))
    u_loss, model_state, g_u = estimators.student_gradient(
        deps, student, mb["unlabeled_strong"], targets, jax.random.fold_in(rng_student_u, i))
    extra = {"pseudo_labels/accuracy": losses.accuracy(targets, mb["unlabeled_y"])
             } if with_accuracy else {}
    return (u_loss, model_state, g_u, extra), targets

  (u_loss, student_model_state, g_u, metrics), targets = accumulation.scan_micro_batches(
      pseudo_labels_and_student_grad, micro, k)

  # B. The student's update, then the reward over the whole labeled batch.
  new_student, direction = common.optimizer_step(student, g_u, deps.student,
                                                 student_model_state, step)
  advantage, baseline = jnp.zeros((), jnp.float32), state.reward_baseline
  if mpl.estimator.measures_reward:
    def losses_after(i, mb):
      labeled_loss = estimators.student_labeled_loss(
          deps, student, mb["labeled_x"], mb["labeled_y"], jax.random.fold_in(rng_student_l, i))
      return estimators.labeled_losses(mpl, labeled_loss, student.params, new_student.params)

    measured = accumulation.mean_over_micro_batches(
        losses_after, {n: micro[n] for n in ("labeled_x", "labeled_y")}, k)
    reward, advantage, baseline = estimators.reward_and_advantage(
        mpl, deps.student.learning_rate(step), measured, g_u, direction, baseline)
    metrics.update(estimators.reward_metrics(reward, advantage, baseline, measured, g_u))

  # C. Per micro-batch: supervised + UDA + feedback, one vjp, averaged.
  def teacher_grads(i, mb):
    t_all, teacher_vjp, model_state, d_sup_uda, teacher_losses = teacher_pass(
        deps, teacher, mb, jax.random.fold_in(rng_teacher, i), w_uda)
    d_feedback = mpl.estimator.feedback(t_all[strong_rows(mb):], mb["targets"],
                                        advantage)
    grads = teacher_gradient(deps, teacher_vjp, t_all, mb, d_sup_uda, d_feedback)
    return grads, model_state, teacher_losses

  grads, teacher_model_state, teacher_losses = accumulation.mean_over_micro_batches(
      teacher_grads, {**micro, "targets": targets}, k)
  grads, part_metrics = sum_parts(grads, mpl.log_grad_parts)
  new_teacher = common.apply_grads(teacher, grads, deps.teacher, teacher_model_state, step)
  metrics.update(part_metrics)
  metrics.update(step_metrics(deps, step, teacher=new_teacher, teacher_grads=grads,
                              student=new_student, g_u=g_u, teacher_losses=teacher_losses,
                              w_uda=w_uda, u_loss=u_loss))
  return common.finish(state, deps, student=new_student, teacher=new_teacher,
                       baseline=baseline), metrics
