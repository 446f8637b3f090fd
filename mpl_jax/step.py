"""Pure train steps: (state, batch, rng, *, deps) -> (state, metrics).

No TensorFlow, clu or ml_collections here: these functions run on any JAX install. They
are jit-compiled once, in `mpl_jax.train`, with shardings and the state donated.

A batch is a dict of arrays: `labeled_x`, `labeled_y`, `unlabeled_weak`,
`unlabeled_strong`, and optionally `unlabeled_y` (true labels of the "unlabeled" data,
used only for the logged pseudo-label accuracy, never for training). Reduced MPL adds
`teacher_labeled_x` and `teacher_unlabeled_x`, what its teacher reads in place of the
images (a frozen large teacher's logits of the same rows; one view of each unlabeled
image, so both of the teacher's unlabeled views are that one).

Gradient accumulation (`StepDeps.accum_steps > 1`): `mpl_jax/accumulation.py`; the MPL
step accumulates in three passes (`_mpl_step_accumulated`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from mpl_jax import accumulation
from mpl_jax import estimators
from mpl_jax import losses
from mpl_jax.state import ApplyFn, NetState, TrainState, ema_update, tree_dot, tree_norm

Metrics = dict[str, jax.Array]


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


@dataclasses.dataclass(frozen=True)
class StepDeps:
  """The static dependencies of the steps, bound with functools.partial."""

  student: Network
  teacher: Network | None
  num_classes: int
  label_smoothing: float = 0.0
  ema_decay: float = 0.0
  uda: UdaSettings = UdaSettings()
  mpl: MplSettings = MplSettings()
  pseudo_label_kind: str = "argmax"  # the pseudo-labels baseline's targets
  accum_steps: int = 1  # micro-batches per step (gradient accumulation); 1 = none


def _apply_grads(net: NetState, grads, network: Network, model_state, step) -> NetState:
  """One optimizer update at the learning rate of global step `step`."""
  updates, opt_state = network.tx.update(grads, net.opt_state, net.params)
  lr = network.learning_rate(step)
  updates = jax.tree.map(lambda u: lr * u, updates)
  return NetState(params=optax.apply_updates(net.params, updates),
                  model_state=model_state, opt_state=opt_state)


def _finish(state: TrainState, deps: StepDeps, *, student: NetState,
            teacher: NetState | None = None, baseline: jax.Array | None = None) -> TrainState:
  """Advances the step and the student's EMA."""
  return state.replace(
      step=state.step + 1,
      student=student,
      student_ema=ema_update(state.student_ema, student, deps.ema_decay),
      teacher=state.teacher if teacher is None else teacher,
      reward_baseline=state.reward_baseline if baseline is None else baseline)


def _net_metrics(prefix: str, net: NetState, grads, lr: jax.Array) -> Metrics:
  return {f"{prefix}/grad_norm": tree_norm(grads), f"{prefix}/param_norm": tree_norm(net.params),
          f"{prefix}/learning_rate": lr}


def uda_weight(step: jax.Array, uda: UdaSettings) -> jax.Array:
  """lambda_uda * min(1, step / ramp_steps)."""
  ramp = jnp.minimum(1.0, step.astype(jnp.float32) / max(uda.ramp_steps, 1))
  return uda.weight * ramp


def _supervised_update(net: NetState, network: Network, x, y, rng, step, deps: StepDeps,
                       prefix: str) -> tuple[NetState, Metrics]:
  """One optimizer step on smoothed CE over a labeled batch."""

  def loss_fn(params, b, rng):
    targets = losses.smooth(losses.one_hot(b["y"], deps.num_classes), deps.label_smoothing)
    logits, model_state = network.apply(params, net.model_state, b["x"], train=True, rng=rng)
    return losses.mean_cross_entropy(targets, logits), (losses.accuracy(logits, b["y"]),
                                                        model_state)

  (loss, (accuracy, model_state)), grads = accumulation.value_and_grad(
      loss_fn, net.params, {"x": x, "y": y}, rng, deps.accum_steps)
  new_net = _apply_grads(net, grads, network, model_state, step)
  metrics = {f"{prefix}/loss_labeled": loss, f"{prefix}/accuracy_labeled": accuracy,
             **_net_metrics(prefix, new_net, grads, network.learning_rate(step))}
  return new_net, metrics


def supervised_step(state: TrainState, batch, rng, *, deps: StepDeps
                    ) -> tuple[TrainState, Metrics]:
  """Supervised baseline: the student learns from the labeled batch only."""
  rng = jax.random.fold_in(rng, state.step)
  student, metrics = _supervised_update(state.student, deps.student, batch["labeled_x"],
                                        batch["labeled_y"], rng, state.step, deps, "student")
  return _finish(state, deps, student=student), metrics


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
  rng = jax.random.fold_in(rng, state.step)
  student, metrics = _supervised_update(state.student, deps.student, batch["labeled_x"],
                                        batch["labeled_y"], rng, state.step, deps, "student")
  return _finish(state, deps, student=student), metrics


def teacher_pretrain_step(state: TrainState, batch, rng, *, deps: StepDeps
                          ) -> tuple[TrainState, Metrics]:
  """Pseudo-labels baseline, phase 1: the teacher learns from the labeled batch."""
  rng = jax.random.fold_in(rng, state.step)
  teacher, metrics = _supervised_update(state.teacher, deps.teacher, batch["labeled_x"],
                                        batch["labeled_y"], rng, state.step, deps, "teacher")
  return state.replace(step=state.step + 1, teacher=teacher), metrics


def teacher_inputs(batch) -> jax.Array:
  """What the teacher runs on: [x_l, u_w, u_s], or reduced MPL's inputs in their place."""
  if "teacher_unlabeled_x" in batch:
    return jnp.concatenate([batch["teacher_labeled_x"], batch["teacher_unlabeled_x"],
                            batch["teacher_unlabeled_x"]])
  return jnp.concatenate([batch["labeled_x"], batch["unlabeled_weak"],
                          batch["unlabeled_strong"]])


def _split3(logits, n_labeled, n_unlabeled):
  return (logits[:n_labeled], logits[n_labeled:n_labeled + n_unlabeled],
          logits[n_labeled + n_unlabeled:])


def _sup_uda_loss(logits, y_onehot_smoothed, n_labeled, n_unlabeled, weight, uda: UdaSettings,
                  supervised_weight=1.0):
  """supervised_weight * CE on the labeled part + weight * UDA on the unlabeled parts."""
  t_l, t_w, t_s = _split3(logits, n_labeled, n_unlabeled)
  sup = losses.mean_cross_entropy(y_onehot_smoothed, t_l)
  if uda.weight > 0:
    uda_loss, mask_rate = losses.uda_consistency(t_w, t_s, temperature=uda.temperature,
                                                 threshold=uda.threshold)
  else:
    uda_loss, mask_rate = jnp.zeros(()), jnp.zeros(())
  return supervised_weight * sup + weight * uda_loss, (sup, uda_loss, mask_rate)


def uda_step(state: TrainState, batch, rng, *, deps: StepDeps) -> tuple[TrainState, Metrics]:
  """UDA baseline: one network, supervised CE + ramped consistency on unlabeled views."""
  rng = jax.random.fold_in(rng, state.step)
  weight = uda_weight(state.step, deps.uda)
  net = state.student

  def loss_fn(params, b, rng):
    n_l, n_u = b["labeled_x"].shape[0], b["unlabeled_weak"].shape[0]
    inputs = jnp.concatenate([b["labeled_x"], b["unlabeled_weak"], b["unlabeled_strong"]])
    targets = losses.smooth(losses.one_hot(b["labeled_y"], deps.num_classes),
                            deps.label_smoothing)
    logits, model_state = deps.student.apply(params, net.model_state, inputs, train=True, rng=rng)
    loss, parts = _sup_uda_loss(logits, targets, n_l, n_u, weight, deps.uda)
    return loss, (parts, model_state)

  train_batch = {k: batch[k] for k in ("labeled_x", "labeled_y", "unlabeled_weak",
                                       "unlabeled_strong")}
  (loss, ((sup, uda_loss, mask_rate), model_state)), grads = accumulation.value_and_grad(
      loss_fn, net.params, train_batch, rng, deps.accum_steps)
  student = _apply_grads(net, grads, deps.student, model_state, state.step)
  metrics = {"student/loss": loss, "student/loss_labeled": sup, "student/loss_uda": uda_loss,
             "uda/mask_rate": mask_rate, "uda/weight": weight,
             **_net_metrics("student", student, grads, deps.student.learning_rate(state.step))}
  return _finish(state, deps, student=student), metrics


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
  student = _apply_grads(net, grads, deps.student, model_state, state.step)
  metrics = {"student/loss_unlabeled": loss, **extra,
             **_net_metrics("student", student, grads, deps.student.learning_rate(state.step))}
  return _finish(state, deps, student=student), metrics


def _cosine(a, b) -> jax.Array:
  return tree_dot(a, b) / (tree_norm(a) * tree_norm(b) + 1e-30)


def student_step_and_feedback(student: NetState, targets: jax.Array, t_s: jax.Array, batch,
                              step: jax.Array, baseline: jax.Array, rng: jax.Array, *,
                              deps: StepDeps):
  """The student's update on pseudo labels `targets` and the teacher's feedback on t_s.

  Returns (new student, d_feedback = cotangent of the feedback term on t_s, new reward
  baseline, the student's unlabeled loss, its gradient g_u, metrics). `targets` are the
  pseudo labels drawn from t_s (one-hot for reinforce/off, softmax(t_s) for meta).
  """
  mpl = deps.mpl
  rng_student_u, rng_student_l = jax.random.split(rng)
  x_l, u_s = batch["labeled_x"], batch["unlabeled_strong"]
  y_onehot = losses.one_hot(batch["labeled_y"], deps.num_classes)
  student_lr = deps.student.learning_rate(step)

  def unlabeled_loss(params, soft_targets):
    logits, model_state = deps.student.apply(params, student.model_state, u_s, train=True,
                                             rng=rng_student_u)
    return losses.mean_cross_entropy(soft_targets, logits), model_state

  def labeled_loss(params):
    logits, _ = deps.student.apply(params, student.model_state, x_l, train=True,
                                   rng=rng_student_l)
    return losses.mean_cross_entropy(y_onehot, logits)

  metrics: Metrics = {}
  if mpl.estimator == "meta":
    # Exact one-step meta-gradient through the soft labels (a gradient of a gradient).
    def meta_objective(strong_logits):
      soft = losses.smooth(jax.nn.softmax(losses.at_least_f32(strong_logits)),
                           deps.label_smoothing)
      (u_loss, model_state), g_u = jax.value_and_grad(unlabeled_loss, has_aux=True)(
          student.params, soft)
      stepped = jax.tree.map(lambda p, g: p - student_lr * g, student.params, g_u)
      return labeled_loss(stepped), (g_u, u_loss, model_state)

    (loss_after, (g_u, u_loss, student_model_state)), d_feedback = jax.value_and_grad(
        meta_objective, has_aux=True)(t_s)
    new_student = _apply_grads(student, g_u, deps.student, student_model_state, step)
    metrics["mpl/labeled_loss_after"] = loss_after
    return new_student, d_feedback, baseline, u_loss, g_u, metrics

  (u_loss, student_model_state), g_u = jax.value_and_grad(unlabeled_loss, has_aux=True)(
      student.params, losses.smooth(targets, deps.label_smoothing))
  new_student = _apply_grads(student, g_u, deps.student, student_model_state, step)
  if mpl.estimator != "reinforce":  # off: no feedback
    return new_student, jnp.zeros_like(t_s), baseline, u_loss, g_u, metrics

  # 4. The reward: did the pseudo labels lower the student's labeled loss?
  loss_after, g_after = jax.value_and_grad(labeled_loss)(new_student.params)
  if mpl.reward == "dot":
    reward = estimators.dot_reward(student_lr, g_after, g_u)
  else:
    reward = estimators.taylor_reward(labeled_loss(student.params), loss_after)
  advantage = reward - baseline if mpl.baseline_decay > 0 else reward
  if mpl.baseline_decay > 0:
    baseline = estimators.update_baseline(baseline, reward, mpl.baseline_decay)
  # 5. REINFORCE: sg(h - b) * CE(y_hat, t_s).
  d_feedback = estimators.reinforce_cotangent(t_s, targets, advantage)
  metrics.update({"mpl/reward": reward, "mpl/advantage": advantage,
                  "mpl/baseline": baseline, "mpl/labeled_loss_after": loss_after,
                  "mpl/cos_grad_labeled_unlabeled": _cosine(g_after, g_u)})
  return new_student, d_feedback, baseline, u_loss, g_u, metrics


def mpl_step(state: TrainState, batch, rng, *, deps: StepDeps) -> tuple[TrainState, Metrics]:
  """One Meta Pseudo Labels step: the student learns from the teacher's pseudo labels, the
  teacher from labels, UDA consistency and the student's feedback (docs/METHOD.md, section 2).

  The teacher runs forward once on concat[x_l, u_w, u_s]; every part of its loss is turned
  into a cotangent on its logits and pulled back with a single vjp.
  """
  mpl = deps.mpl
  rng = jax.random.fold_in(rng, state.step)
  rng_teacher, rng_labels, rng_student = jax.random.split(rng, 3)
  if deps.accum_steps > 1:
    return _mpl_step_accumulated(state, batch, (rng_teacher, rng_labels, rng_student), deps)
  n_l, n_u = batch["labeled_x"].shape[0], batch["unlabeled_weak"].shape[0]
  y_onehot = losses.one_hot(batch["labeled_y"], deps.num_classes)

  # 1. Teacher forward (train mode) on all three views, kept for one vjp at the end.
  def teacher_forward(params):
    return deps.teacher.apply(params, state.teacher.model_state, teacher_inputs(batch),
                              train=True, rng=rng_teacher)

  t_all, teacher_vjp, teacher_model_state = jax.vjp(
      teacher_forward, state.teacher.params, has_aux=True)
  t_s = t_all[n_l + n_u:]
  w_uda = uda_weight(state.step, deps.uda)
  (_, (sup_loss, uda_loss, mask_rate)), d_sup_uda = jax.value_and_grad(
      _sup_uda_loss, has_aux=True)(t_all, losses.smooth(y_onehot, deps.label_smoothing),
                                   n_l, n_u, w_uda, deps.uda, mpl.supervised_weight)

  # 2. Pseudo labels from the strong view: the same y_hat for the student and the feedback.
  targets = estimators.pseudo_label_targets(t_s, mpl.labels, rng_labels)

  # 3-5. The student's step on the pseudo labels and the teacher's feedback.
  new_student, d_feedback, baseline, u_loss, g_u, metrics = student_step_and_feedback(
      state.student, targets, t_s, batch, state.step, state.reward_baseline, rng_student,
      deps=deps)

  # 6. Teacher: pull sup + UDA + feedback back through the one forward pass.
  d_feedback_all = jnp.zeros_like(t_all).at[n_l + n_u:].set(mpl.feedback_weight * d_feedback)
  if mpl.log_grad_parts:
    d_sup_only = jnp.zeros_like(t_all).at[:n_l].set(d_sup_uda[:n_l])  # UDA: rows n_l..
    cotangents = jnp.stack([d_sup_only, d_sup_uda - d_sup_only, d_feedback_all])
    parts = jax.vmap(lambda c: teacher_vjp(c)[0])(cotangents)
    teacher_grads = jax.tree.map(lambda g: jnp.sum(g, axis=0), parts)
    norms = [tree_norm(jax.tree.map(lambda g, i=i: g[i], parts)) for i in range(3)]
    metrics.update({"teacher/grad_norm_supervised": norms[0], "teacher/grad_norm_uda": norms[1],
                    "teacher/grad_norm_feedback": norms[2],
                    "teacher/feedback_to_supervised": norms[2] / (norms[0] + 1e-30)})
  else:
    (teacher_grads,) = teacher_vjp(d_sup_uda + d_feedback_all)
  new_teacher = _apply_grads(state.teacher, teacher_grads, deps.teacher, teacher_model_state,
                             state.step)

  metrics.update({
      "teacher/loss_labeled": sup_loss, "teacher/loss_uda": uda_loss,
      "uda/mask_rate": mask_rate, "uda/weight": w_uda,
      "student/loss_unlabeled": u_loss,
      **_net_metrics("teacher", new_teacher, teacher_grads,
                     deps.teacher.learning_rate(state.step)),
      **_net_metrics("student", new_student, g_u, deps.student.learning_rate(state.step)),
  })
  if "unlabeled_y" in batch:
    metrics["pseudo_labels/accuracy"] = losses.accuracy(targets, batch["unlabeled_y"])
  return _finish(state, deps, student=new_student, teacher=new_teacher,
                 baseline=baseline), metrics


def _mpl_step_accumulated(state: TrainState, batch, rngs, deps: StepDeps
                          ) -> tuple[TrainState, Metrics]:
  """`mpl_step` over k = deps.accum_steps micro-batches, in three passes.

  The reward h is one scalar over the whole batch, and the feedback term needs it, so the
  teacher's gradient cannot be finished micro-batch by micro-batch in one pass:
  1. per micro-batch: the teacher forward (train mode) on [x_l, u_w, u_s], pseudo labels
     from t_s (kept, one row per unlabeled image), and the student's gradient on them;
     the gradients are averaged into g_u;
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
  w_uda = uda_weight(step, deps.uda)
  with_accuracy = "unlabeled_y" in batch
  names = ("labeled_x", "labeled_y", "unlabeled_weak", "unlabeled_strong", "unlabeled_y",
           "teacher_labeled_x", "teacher_unlabeled_x")
  micro = accumulation.micro_batches({n: batch[n] for n in names if n in batch}, k)

  def teacher_forward(params, mb, i):
    return deps.teacher.apply(params, teacher.model_state, teacher_inputs(mb), train=True,
                              rng=jax.random.fold_in(rng_teacher, i))

  # 1. Pseudo labels and the student's gradient on them.
  def pseudo_labels_and_student_grad(i, mb):
    n_lw = mb["labeled_x"].shape[0] + mb["unlabeled_weak"].shape[0]
    t_all, _ = teacher_forward(teacher.params, mb, i)
    targets = estimators.pseudo_label_targets(t_all[n_lw:], mpl.labels,
                                              jax.random.fold_in(rng_labels, i))

    def unlabeled_loss(params):
      logits, model_state = deps.student.apply(
          params, student.model_state, mb["unlabeled_strong"], train=True,
          rng=jax.random.fold_in(rng_student_u, i))
      return losses.mean_cross_entropy(losses.smooth(targets, deps.label_smoothing),
                                       logits), model_state

    (u_loss, model_state), g_u = jax.value_and_grad(unlabeled_loss, has_aux=True)(
        student.params)
    extra = {"pseudo_labels/accuracy": losses.accuracy(targets, mb["unlabeled_y"])
             } if with_accuracy else {}
    return (u_loss, model_state, g_u, extra), targets

  (u_loss, student_model_state, g_u, extra), targets = accumulation.scan_micro_batches(
      pseudo_labels_and_student_grad, micro, k)

  # 2. The student's update and the reward over the whole labeled batch.
  new_student = _apply_grads(student, g_u, deps.student, student_model_state, step)
  metrics: Metrics = dict(extra)
  advantage, baseline = jnp.zeros((), jnp.float32), state.reward_baseline
  if mpl.estimator == "reinforce":
    def labeled_loss(params, mb, i):
      logits, _ = deps.student.apply(params, student.model_state, mb["labeled_x"], train=True,
                                     rng=jax.random.fold_in(rng_student_l, i))
      return losses.mean_cross_entropy(losses.one_hot(mb["labeled_y"], deps.num_classes),
                                       logits)

    def losses_after(i, mb):
      loss_after, g_after = jax.value_and_grad(labeled_loss)(new_student.params, mb, i)
      before = labeled_loss(student.params, mb, i) if mpl.reward == "taylor" else loss_after
      return loss_after, before, g_after

    loss_after, loss_before, g_after = accumulation.mean_over_micro_batches(
        losses_after, {n: micro[n] for n in ("labeled_x", "labeled_y")}, k)
    if mpl.reward == "dot":
      reward = estimators.dot_reward(deps.student.learning_rate(step), g_after, g_u)
    else:
      reward = estimators.taylor_reward(loss_before, loss_after)
    advantage = reward - baseline if mpl.baseline_decay > 0 else reward
    if mpl.baseline_decay > 0:
      baseline = estimators.update_baseline(baseline, reward, mpl.baseline_decay)
    metrics.update({"mpl/reward": reward, "mpl/advantage": advantage, "mpl/baseline": baseline,
                    "mpl/labeled_loss_after": loss_after,
                    "mpl/cos_grad_labeled_unlabeled": _cosine(g_after, g_u)})

  # 3. The teacher's gradient: supervised + UDA + feedback, one vjp per micro-batch.
  smoothed_labels = lambda y: losses.smooth(losses.one_hot(y, deps.num_classes),
                                            deps.label_smoothing)

  def teacher_grads(i, mb):
    n_l, n_u = mb["labeled_x"].shape[0], mb["unlabeled_weak"].shape[0]
    t_all, teacher_vjp, model_state = jax.vjp(
        lambda p: teacher_forward(p, mb, i), teacher.params, has_aux=True)
    (_, (sup, uda_loss, mask_rate)), d_sup_uda = jax.value_and_grad(
        _sup_uda_loss, has_aux=True)(t_all, smoothed_labels(mb["labeled_y"]), n_l, n_u,
                                     w_uda, deps.uda, mpl.supervised_weight)
    d_feedback = jnp.zeros_like(t_all)
    if mpl.estimator == "reinforce":
      d_feedback = d_feedback.at[n_l + n_u:].set(mpl.feedback_weight * (
          estimators.reinforce_cotangent(t_all[n_l + n_u:], mb["targets"], advantage)))
    if mpl.log_grad_parts:
      d_sup_only = jnp.zeros_like(t_all).at[:n_l].set(d_sup_uda[:n_l])
      cotangents = jnp.stack([d_sup_only, d_sup_uda - d_sup_only, d_feedback])
      grads = jax.vmap(lambda c: teacher_vjp(c)[0])(cotangents)
    else:
      (grads,) = teacher_vjp(d_sup_uda + d_feedback)
    return grads, model_state, sup, uda_loss, mask_rate

  grads, teacher_model_state, sup_loss, uda_loss, mask_rate = (
      accumulation.mean_over_micro_batches(teacher_grads, {**micro, "targets": targets}, k))
  if mpl.log_grad_parts:
    norms = [tree_norm(jax.tree.map(lambda g, i=i: g[i], grads)) for i in range(3)]
    grads = jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)
    metrics.update({"teacher/grad_norm_supervised": norms[0], "teacher/grad_norm_uda": norms[1],
                    "teacher/grad_norm_feedback": norms[2],
                    "teacher/feedback_to_supervised": norms[2] / (norms[0] + 1e-30)})
  new_teacher = _apply_grads(teacher, grads, deps.teacher, teacher_model_state, step)
  metrics.update({
      "teacher/loss_labeled": sup_loss, "teacher/loss_uda": uda_loss,
      "uda/mask_rate": mask_rate, "uda/weight": w_uda, "student/loss_unlabeled": u_loss,
      **_net_metrics("teacher", new_teacher, grads, deps.teacher.learning_rate(step)),
      **_net_metrics("student", new_student, g_u, deps.student.learning_rate(step)),
  })
  return _finish(state, deps, student=new_student, teacher=new_teacher,
                 baseline=baseline), metrics


def predict(apply: ApplyFn, params, model_state, inputs) -> jax.Array:
  """Eval-mode logits."""
  logits, _ = apply(params, model_state, inputs, train=False)
  return logits
