"""The Meta Pseudo Labels step (docs/METHOD.md, section 2), numbered as the method.

The teacher runs forward once on its three views; each part of its loss becomes a
cotangent on its logits, and the sum is pulled back with one vjp. The helpers below are
the pieces of that step; `mpl_step` runs them in order, and its gradient-accumulation
variant (`StepDeps.accum_steps > 1`, `_mpl_step_accumulated`) runs the same pieces over
micro-batches.
"""

import jax
import jax.numpy as jnp
import optax

from mpl_jax import accumulation
from mpl_jax import estimators
from mpl_jax import losses
from mpl_jax.state import NetState, TrainState, tree_dot, tree_norm
from mpl_jax.steps import common
from mpl_jax.steps.settings import MplSettings, StepDeps

Metrics = common.Metrics


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


def labeled_losses(mpl: MplSettings, labeled_loss, old_params, new_params):
  """(L_l(theta_S'), L_l(theta_S) for `taylor` else L_l(theta_S'), grad L_l(theta_S'))."""
  loss_after, g_after = jax.value_and_grad(labeled_loss)(new_params)
  before = labeled_loss(old_params) if mpl.reward == "taylor" else loss_after
  return loss_after, before, g_after


def reward_and_advantage(mpl: MplSettings, student_lr, g_after, g_u, direction, loss_before,
                         loss_after, baseline):
  """The reward h, the advantage h - b and the updated baseline b.

  `dot` is first order along the student's step: its real one, theta_S - theta_S' =
  -eta_S * direction (`student_update=real`), or the plain -eta_S * g_u. `taylor` is
  L_l(theta_S) - L_l(theta_S') itself.
  """
  if mpl.reward == "dot" and mpl.student_update == "real":
    reward = estimators.real_dot_reward(student_lr, g_after, direction)
  elif mpl.reward == "dot":
    reward = estimators.dot_reward(student_lr, g_after, g_u)
  else:
    reward = estimators.taylor_reward(loss_before, loss_after)
  advantage = reward - baseline if mpl.baseline_decay > 0 else reward
  if mpl.baseline_decay > 0:
    baseline = estimators.update_baseline(baseline, reward, mpl.baseline_decay)
  return reward, advantage, baseline


def _cosine(a, b) -> jax.Array:
  return tree_dot(a, b) / (tree_norm(a) * tree_norm(b) + 1e-30)


def reward_metrics(reward, advantage, baseline, loss_after, g_after, g_u) -> Metrics:
  return {"mpl/reward": reward, "mpl/advantage": advantage, "mpl/baseline": baseline,
          "mpl/labeled_loss_after": loss_after,
          "mpl/cos_grad_labeled_unlabeled": _cosine(g_after, g_u)}


def meta_student_step(student: NetState, t_s, batch, step, rngs, *, deps: StepDeps):
  """The `meta` estimator's steps 3-5: the student's update on softmax(t_s) and the exact
  one-step meta-gradient of its labeled loss with respect to t_s (a gradient of a gradient),
  through the optimizer's real update (`student_update=real`: momentum, weight decay,
  clipping) or the plain step theta_S - eta_S * g_u."""
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
    if deps.mpl.student_update == "real":
      direction, _ = deps.student.tx.update(g_u, student.opt_state, student.params)
      stepped = optax.apply_updates(student.params,
                                    jax.tree.map(lambda u: student_lr * u, direction))
    else:
      stepped = jax.tree.map(lambda p, g: p - student_lr * g, student.params, g_u)
    return labeled_loss(stepped), (g_u, u_loss, model_state)

  (loss_after, (g_u, u_loss, model_state)), d_feedback = jax.value_and_grad(
      meta_objective, has_aux=True)(t_s)
  new_student = common.apply_grads(student, g_u, deps.student, model_state, step)
  return new_student, d_feedback, u_loss, g_u, {"mpl/labeled_loss_after": loss_after}


def student_step_and_feedback(student: NetState, targets: jax.Array, t_s: jax.Array, batch,
                              step: jax.Array, baseline: jax.Array, rng: jax.Array, *,
                              deps: StepDeps):
  """Steps 3-5 of `mpl_step` for the pseudo labels `targets` drawn from t_s.

  Returns (new student, d_feedback = cotangent of the feedback term on t_s, new reward
  baseline, the student's unlabeled loss, its gradient g_u, metrics). `targets` are one-hot
  for reinforce/off, softmax(t_s) for meta.
  """
  mpl = deps.mpl
  rngs = jax.random.split(rng)  # (unlabeled pass, labeled pass)
  if mpl.estimator == "meta":
    new_student, d_feedback, u_loss, g_u, metrics = meta_student_step(
        student, t_s, batch, step, rngs, deps=deps)
    return new_student, d_feedback, baseline, u_loss, g_u, metrics

  # 3. The student's update on the pseudo labels.
  unlabeled_loss = student_unlabeled_loss(deps, student, batch["unlabeled_strong"], rngs[0])
  (u_loss, model_state), g_u = jax.value_and_grad(unlabeled_loss, has_aux=True)(
      student.params, losses.smooth(targets, deps.label_smoothing))
  new_student, direction = common.optimizer_step(student, g_u, deps.student, model_state,
                                                 step)
  if mpl.estimator != "reinforce":  # off: no feedback
    return new_student, jnp.zeros_like(t_s), baseline, u_loss, g_u, {}

  # 4. The reward: did the pseudo labels lower the student's labeled loss?
  labeled_loss = student_labeled_loss(deps, student, batch["labeled_x"], batch["labeled_y"],
                                      rngs[1])
  loss_after, loss_before, g_after = labeled_losses(mpl, labeled_loss, student.params,
                                                    new_student.params)
  reward, advantage, baseline = reward_and_advantage(
      mpl, deps.student.learning_rate(step), g_after, g_u, direction, loss_before, loss_after,
      baseline)
  # 5. REINFORCE: the cotangent of sg(h - b) * CE(y_hat, t_s) on t_s.
  d_feedback = estimators.reinforce_cotangent(t_s, targets, advantage)
  return new_student, d_feedback, baseline, u_loss, g_u, reward_metrics(
      reward, advantage, baseline, loss_after, g_after, g_u)


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


def mpl_step(state: TrainState, batch, rng, *, deps: StepDeps) -> tuple[TrainState, Metrics]:
  """One Meta Pseudo Labels step: the student learns from the teacher's pseudo labels, the
  teacher from labels, UDA consistency and the student's feedback."""
  mpl = deps.mpl
  rng = jax.random.fold_in(rng, state.step)
  rng_teacher, rng_labels, rng_student = jax.random.split(rng, 3)
  if deps.accum_steps > 1:
    return _mpl_step_accumulated(state, batch, (rng_teacher, rng_labels, rng_student), deps)
  n_l, n_u = batch["labeled_x"].shape[0], batch["unlabeled_weak"].shape[0]

  # 1. Teacher forward (train mode) on [x_l, u_w, u_s], kept for one vjp at the end; its
  #    supervised and UDA losses as a cotangent on its logits.
  t_all, teacher_vjp, teacher_model_state = jax.vjp(
      teacher_forward(deps, state.teacher, batch, rng_teacher), state.teacher.params,
      has_aux=True)
  t_s = t_all[n_l + n_u:]
  w_uda = common.uda_weight(state.step, deps.uda)
  d_sup_uda, teacher_losses = teacher_loss_cotangent(deps, t_all, batch["labeled_y"], n_l,
                                                     n_u, w_uda)

  # 2. Pseudo labels from the strong view: the same y_hat for the student and the feedback.
  targets = estimators.pseudo_label_targets(t_s, mpl.labels, rng_labels)

  # 3. The student's step on the pseudo labels; 4. the reward h: did that step lower the
  #    student's labeled loss?; 5. the feedback sg(h - b) * CE(y_hat, t_s) as a cotangent
  #    on t_s (`meta`: the gradient of a gradient in place of 4 and 5).
  new_student, d_feedback, baseline, u_loss, g_u, metrics = student_step_and_feedback(
      state.student, targets, t_s, batch, state.step, state.reward_baseline, rng_student,
      deps=deps)

  # 6. Teacher: supervised + UDA + feedback, pulled back through the one forward pass.
  d_feedback_all = feedback_rows(t_all, n_l + n_u, d_feedback, mpl.feedback_weight)
  teacher_grads, part_metrics = sum_parts(
      pull_back(teacher_vjp, d_sup_uda, d_feedback_all, n_l, mpl.log_grad_parts),
      mpl.log_grad_parts)
  new_teacher = common.apply_grads(state.teacher, teacher_grads, deps.teacher,
                                   teacher_model_state, state.step)

  metrics.update(part_metrics)
  metrics.update(step_metrics(deps, state.step, teacher=new_teacher,
                              teacher_grads=teacher_grads, student=new_student, g_u=g_u,
                              teacher_losses=teacher_losses, w_uda=w_uda, u_loss=u_loss))
  if "unlabeled_y" in batch:
    metrics["pseudo_labels/accuracy"] = losses.accuracy(targets, batch["unlabeled_y"])
  return common.finish(state, deps, student=new_student, teacher=new_teacher,
                       baseline=baseline), metrics


def _mpl_step_accumulated(state: TrainState, batch, rngs, deps: StepDeps
                          ) -> tuple[TrainState, Metrics]:
  """`mpl_step` over k = deps.accum_steps micro-batches, in three passes.

  The reward h is one scalar over the whole batch, and the feedback term needs it, so the
  teacher's gradient cannot be finished micro-batch by micro-batch in one pass:
  1. per micro-batch: the teacher forward (train mode), pseudo labels from t_s (kept, one
     row per unlabeled image), and the student's gradient on them, averaged into g_u;
  2. the student's update with g_u, then the reward from the labeled micro-batches at the
     updated student (and, for `taylor`, at the old one);
  3. per micro-batch: the teacher forward again with the same key (the same t_s) and one
     vjp of supervised + UDA + the feedback with the now-known advantage, averaged.
  The teacher runs forward twice per micro-batch, which costs less than a second backward
  pass would. Only one micro-batch's activations of one network are alive at a time.
  The `meta` estimator is not offered here (its gradient runs through the mean g_u).
  """
  mpl, k = deps.mpl, deps.accum_steps
  if mpl.estimator not in ("reinforce", "off"):
    raise ValueError(f"accum_steps={k} supports mpl.estimator reinforce or off, not "
                     f"{mpl.estimator!r}")
  rng_teacher, rng_labels, rng_student = rngs
  rng_student_u, rng_student_l = jax.random.split(rng_student)
  student, teacher, step = state.student, state.teacher, state.step
  w_uda = common.uda_weight(step, deps.uda)
  with_accuracy = "unlabeled_y" in batch
  micro = accumulation.micro_batches(batch, k)
  forward = lambda mb, i: teacher_forward(deps, teacher, mb, jax.random.fold_in(rng_teacher, i))

  # 1-3. Per micro-batch: the teacher's pseudo labels and the student's gradient on them.
  def pseudo_labels_and_student_grad(i, mb):
    n_lu = mb["labeled_x"].shape[0] + mb["unlabeled_weak"].shape[0]
    t_all, _ = forward(mb, i)(teacher.params)
    targets = estimators.pseudo_label_targets(t_all[n_lu:], mpl.labels,
                                              jax.random.fold_in(rng_labels, i))
    unlabeled_loss = student_unlabeled_loss(deps, student, mb["unlabeled_strong"],
                                            jax.random.fold_in(rng_student_u, i))
    (u_loss, model_state), g_u = jax.value_and_grad(unlabeled_loss, has_aux=True)(
        student.params, losses.smooth(targets, deps.label_smoothing))
    extra = {"pseudo_labels/accuracy": losses.accuracy(targets, mb["unlabeled_y"])
             } if with_accuracy else {}
    return (u_loss, model_state, g_u, extra), targets

  (u_loss, student_model_state, g_u, metrics), targets = accumulation.scan_micro_batches(
      pseudo_labels_and_student_grad, micro, k)
  new_student, direction = common.optimizer_step(student, g_u, deps.student,
                                                 student_model_state, step)

  # 4. The reward over the whole labeled batch.
  advantage, baseline = jnp.zeros((), jnp.float32), state.reward_baseline
  if mpl.estimator == "reinforce":
    def losses_after(i, mb):
      labeled_loss = student_labeled_loss(deps, student, mb["labeled_x"], mb["labeled_y"],
                                          jax.random.fold_in(rng_student_l, i))
      return labeled_losses(mpl, labeled_loss, student.params, new_student.params)

    loss_after, loss_before, g_after = accumulation.mean_over_micro_batches(
        losses_after, {n: micro[n] for n in ("labeled_x", "labeled_y")}, k)
    reward, advantage, baseline = reward_and_advantage(
        mpl, deps.student.learning_rate(step), g_after, g_u, direction, loss_before,
        loss_after, baseline)
    metrics.update(reward_metrics(reward, advantage, baseline, loss_after, g_after, g_u))

  # 5-6. Per micro-batch: supervised + UDA + feedback, one vjp, averaged.
  def teacher_grads(i, mb):
    n_l, n_u = mb["labeled_x"].shape[0], mb["unlabeled_weak"].shape[0]
    t_all, teacher_vjp, model_state = jax.vjp(forward(mb, i), teacher.params, has_aux=True)
    d_sup_uda, teacher_losses = teacher_loss_cotangent(deps, t_all, mb["labeled_y"], n_l, n_u,
                                                       w_uda)
    d_feedback = jnp.zeros_like(t_all)
    if mpl.estimator == "reinforce":
      d_feedback = feedback_rows(t_all, n_l + n_u, estimators.reinforce_cotangent(
          t_all[n_l + n_u:], mb["targets"], advantage), mpl.feedback_weight)
    grads = pull_back(teacher_vjp, d_sup_uda, d_feedback, n_l, mpl.log_grad_parts)
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
