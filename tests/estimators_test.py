"""The estimator check of docs/METHOD.md, section 4.

A linear teacher and student, n = 3 unlabeled points, 3 classes: enumerate all 27 hard
pseudo-label assignments y_hat to get the true objective
    J(theta_T) = sum_y p_T(y) * L_l(theta_S - eta * grad CE(y, S))
and its gradient by jax.grad. The expected REINFORCE gradient of the feedback term,
sum_y p_T(y) * grad_T[h(y) * mean CE(y, T)], must equal grad J / n: exactly for the
`taylor` reward, with relative error O(eta) for `dot`. `meta` must equal jax.grad of the
soft-label objective. The per-assignment feedback comes from the library's own
`student_step_and_feedback`, which `mpl_step` calls.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mpl_jax import estimators
from mpl_jax import losses
from mpl_jax.models import mlp
from mpl_jax.state import EmaState, NetState, TrainState, make_apply
from mpl_jax.steps import baselines as baseline_steps
from mpl_jax.steps import mpl as mpl_steps
from mpl_jax.steps import settings as step_settings
from tests.helpers import assert_close_on_scale, cos_and_rel_error, flat_tree, step_deps

NUM_CLASSES, FEATURES, N_UNLABELED, N_LABELED = 3, 4, 3, 5
# max|a - b| / max|b| (tests/helpers.py) of a step's float64 update against the same math
# written out in another order: worst 1.7e-15 over five XLA:CPU code paths of
# tools/tolerance_survey.py (RELIABILITY.md, "Numerical tolerances"), far below any error
# of a method (the plain-step reward misses by 1e-3 and more).
TOL_FLOAT64 = 1e-12


def _linear():
  return mlp.MLP(num_classes=NUM_CLASSES, hidden=(), init_scale=1.0)


def _problem(seed=0):
  k = jax.random.split(jax.random.key(seed), 6)
  module = _linear()
  sample = jnp.zeros((1, FEATURES))
  to64 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float64), tree)
  teacher_params = to64(module.init(k[0], sample)["params"])
  student_params = to64(module.init(k[1], sample)["params"])
  batch = {
      "labeled_x": jax.random.normal(k[2], (N_LABELED, FEATURES)),
      "labeled_y": jax.random.randint(k[3], (N_LABELED,), 0, NUM_CLASSES),
      "unlabeled_weak": jax.random.normal(k[4], (N_UNLABELED, FEATURES)),
  }
  # A strong view distinct from the weak one: labels must come from the strong view.
  batch["unlabeled_strong"] = batch["unlabeled_weak"] + 0.5 * jax.random.normal(
      k[5], (N_UNLABELED, FEATURES))
  return module, teacher_params, student_params, batch


def _deps(module, eta, *, estimator, reward="dot", labels="sample", teacher_lr=1.0,
          supervised_weight=0.0, feedback_weight=1.0, label_smoothing=0.0):
  apply = make_apply(module)
  sgd = optax.sgd(1.0)  # the step scales by the schedule's learning rate
  return step_deps(
      step_settings.Network(apply, sgd, lambda step: jnp.asarray(eta)),
      step_settings.Network(apply, sgd, lambda step: jnp.asarray(teacher_lr)),
      NUM_CLASSES, label_smoothing=label_smoothing,
      **{"mpl.estimator": estimator, "mpl.reward": reward, "mpl.labels": labels,
         "mpl.supervised_weight": supervised_weight, "mpl.feedback_weight": feedback_weight})


def _labeled_loss(module, params, batch):
  logits = module.apply({"params": params}, batch["labeled_x"])
  return losses.mean_cross_entropy(losses.one_hot(batch["labeled_y"], NUM_CLASSES), logits)


def _true_objective(module, teacher_params, student_params, batch, eta):
  """J(theta_T) by enumeration of every hard label assignment."""
  u = batch["unlabeled_strong"]

  def after_step_loss(targets):
    def unlabeled(p):
      return losses.mean_cross_entropy(targets, module.apply({"params": p}, u))
    g = jax.grad(unlabeled)(student_params)
    stepped = jax.tree.map(lambda p, gi: p - eta * gi, student_params, g)
    return _labeled_loss(module, stepped, batch)

  def objective(t_params):
    log_p = jax.nn.log_softmax(module.apply({"params": t_params}, u))
    total = 0.0
    for labels in itertools.product(range(NUM_CLASSES), repeat=N_UNLABELED):
      labels = jnp.array(labels)
      prob = jnp.exp(jnp.sum(log_p[jnp.arange(N_UNLABELED), labels]))
      total = total + prob * after_step_loss(losses.one_hot(labels, NUM_CLASSES))
    return total

  return objective


def _expected_reinforce_grad(module, teacher_params, student_params, batch, deps):
  """sum_y p_T(y) * (teacher gradient of the feedback term for labels y)."""
  u = batch["unlabeled_strong"]
  t_s, pullback = jax.vjp(lambda p: module.apply({"params": p}, u), teacher_params)
  probs = jax.nn.softmax(t_s)
  student = NetState(params=student_params, model_state={},
                     opt_state=deps.student.tx.init(student_params))
  total = jax.tree.map(jnp.zeros_like, teacher_params)
  for labels in itertools.product(range(NUM_CLASSES), repeat=N_UNLABELED):
    labels = jnp.array(labels)
    prob = jnp.prod(probs[jnp.arange(N_UNLABELED), labels])
    targets = losses.one_hot(labels, NUM_CLASSES)
    _, d_feedback, _, _, _, _ = mpl_steps.student_step_and_feedback(
        student, targets, t_s, batch, jnp.int32(0), jnp.float32(0.0), jax.random.key(0),
        deps=deps)
    (grad,) = pullback(d_feedback)
    total = jax.tree.map(lambda acc, g: acc + prob * g, total, grad)
  return total


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


def test_taylor_reinforce_matches_true_gradient_exactly():
  module, tp, sp, batch = _problem()
  eta = 0.1
  deps = _deps(module, eta, estimator="reinforce", reward="taylor")
  expected = _expected_reinforce_grad(module, tp, sp, batch, deps)
  true = jax.grad(_true_objective(module, tp, sp, batch, eta))(tp)
  true = jax.tree.map(lambda g: g / N_UNLABELED, true)
  cos, rel = cos_and_rel_error(expected, true)
  assert cos > 1 - 1e-9
  assert rel < 1e-8


def test_dot_reinforce_error_shrinks_like_eta():
  module, tp, sp, batch = _problem()
  errors = []
  for eta in (1e-1, 1e-2, 1e-3):
    deps = _deps(module, eta, estimator="reinforce", reward="dot")
    expected = _expected_reinforce_grad(module, tp, sp, batch, deps)
    true = jax.grad(_true_objective(module, tp, sp, batch, eta))(tp)
    true = jax.tree.map(lambda g: g / N_UNLABELED, true)
    cos, rel = cos_and_rel_error(expected, true)
    assert cos > 0.99, (eta, cos)
    errors.append(rel)
  # Relative error O(eta): each 10x smaller eta cuts it by about 10x.
  assert errors[0] / errors[1] > 5 and errors[1] / errors[2] > 5, errors
  assert errors[2] < 1e-2, errors


def test_reward_sign_new_minus_old_would_point_the_wrong_way(monkeypatch):
  """The public codes' sign (new - old) makes the estimator point against the true
  gradient: this check has the power to catch it."""
  module, tp, sp, batch = _problem()
  deps = _deps(module, 0.1, estimator="reinforce", reward="taylor")
  true = jax.grad(_true_objective(module, tp, sp, batch, 0.1))(tp)
  monkeypatch.setattr(estimators, "taylor_reward", lambda before, after: after - before)
  flipped = _expected_reinforce_grad(module, tp, sp, batch, deps)
  cos_flipped, _ = cos_and_rel_error(flipped, true)
  assert cos_flipped < -0.999


def _state(module, tp, sp, deps):
  sgd = deps.student.tx
  return TrainState(
      step=jnp.int32(0),
      student=NetState(sp, {}, sgd.init(sp)),
      student_ema=EmaState(sp, {}),
      teacher=NetState(tp, {}, sgd.init(tp)),
      reward_baseline=jnp.float32(0.0), skipped_steps=jnp.int32(0),
      first_nonfinite_step=jnp.int32(-1))


def test_meta_step_equals_grad_of_soft_label_objective():
  module, tp, sp, batch = _problem()
  eta = 0.5
  deps = _deps(module, eta, estimator="meta", labels="soft")
  new_state, _ = mpl_steps.mpl_step(_state(module, tp, sp, deps), batch, jax.random.key(1),
                                   deps=deps)

  def objective(t_params):
    u = batch["unlabeled_strong"]
    soft = jax.nn.softmax(module.apply({"params": t_params}, u))

    def unlabeled(p):
      return losses.mean_cross_entropy(soft, module.apply({"params": p}, u))

    g = jax.grad(unlabeled)(sp)
    return _labeled_loss(module, jax.tree.map(lambda p, gi: p - eta * gi, sp, g), batch)

  true = jax.grad(objective)(tp)
  # Teacher SGD at learning rate 1: theta_T - theta_T' is its gradient.
  step_grad = jax.tree.map(lambda a, b: a - b, tp, new_state.teacher.params)
  assert_close_on_scale(flat_tree(step_grad), flat_tree(true), TOL_FLOAT64, "teacher update")
  assert float(jnp.linalg.norm(flat_tree(true))) > 1e-4  # not a vacuous zero


def test_mpl_step_uses_the_feedback_of_its_own_pseudo_labels():
  """With argmax labels (deterministic), the step's teacher update is exactly
  grad of its smoothed supervised CE + feedback_weight * the pull-back of the feedback
  computed for argmax(t_s) of the strong view."""
  module, tp, sp, batch = _problem()
  deps = _deps(module, 0.3, estimator="reinforce", reward="dot", labels="argmax",
               supervised_weight=1.0, feedback_weight=2.0, label_smoothing=0.1)
  new_state, metrics = mpl_steps.mpl_step(_state(module, tp, sp, deps), batch,
                                         jax.random.key(1), deps=deps)
  u = batch["unlabeled_strong"]
  t_s, pullback = jax.vjp(lambda p: module.apply({"params": p}, u), tp)
  targets = losses.one_hot(jnp.argmax(t_s, -1), NUM_CLASSES)
  student = NetState(sp, {}, deps.student.tx.init(sp))
  _, d_feedback, _, _, _, m = mpl_steps.student_step_and_feedback(
      student, targets, t_s, batch, jnp.int32(0), jnp.float32(0.0), jax.random.key(0),
      deps=deps)
  (feedback,) = pullback(d_feedback)
  smoothed = losses.smooth(losses.one_hot(batch["labeled_y"], NUM_CLASSES), 0.1)
  supervised = jax.grad(lambda p: losses.mean_cross_entropy(
      smoothed, module.apply({"params": p}, batch["labeled_x"])))(tp)
  expected = jax.tree.map(lambda s, f: s + 2.0 * f, supervised, feedback)
  step_grad = jax.tree.map(lambda a, b: a - b, tp, new_state.teacher.params)
  assert_close_on_scale(flat_tree(step_grad), flat_tree(expected), TOL_FLOAT64,
                        "teacher update")
  assert_close_on_scale(metrics["mpl/reward"], m["mpl/reward"], TOL_FLOAT64, "reward")
  assert float(jnp.linalg.norm(flat_tree(feedback))) > 1e-6


def test_off_estimator_leaves_teacher_untouched_without_supervision():
  module, tp, sp, batch = _problem()
  deps = _deps(module, 0.3, estimator="off", labels="sample")
  new_state, _ = mpl_steps.mpl_step(_state(module, tp, sp, deps), batch, jax.random.key(1),
                                   deps=deps)
  np.testing.assert_array_equal(flat_tree(new_state.teacher.params), flat_tree(tp))
  assert not np.array_equal(flat_tree(new_state.student.params), flat_tree(sp))


def test_sampled_labels_follow_the_teacher_distribution():
  logits = jnp.array([[2.0, 0.0, -1.0]] * 20000)
  targets = estimators.pseudo_label_targets(logits, "sample", jax.random.key(3))
  freq = np.asarray(jnp.mean(targets, axis=0))
  np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(logits[0])), atol=0.01)


def test_baseline_moves_toward_reward():
  b = estimators.update_baseline(jnp.float32(0.0), jnp.float32(1.0), 0.99)
  assert float(b) == pytest.approx(0.01)


def test_finetune_restarts_momentum_at_its_first_step():
  module, tp, sp, batch = _problem()
  apply = make_apply(module)
  momentum = optax.sgd(1.0, momentum=0.9)
  network = step_settings.Network(apply, momentum, lambda step: jnp.asarray(0.1))
  deps = step_deps(network, None, NUM_CLASSES, method="supervised")
  stale = jax.tree.map(lambda x: jnp.full_like(x, 7.0), momentum.init(sp))
  state = TrainState(step=jnp.int32(5), student=NetState(sp, {}, stale),
                     student_ema=EmaState(sp, {}), teacher=None,
                     reward_baseline=jnp.float32(0.0), skipped_steps=jnp.int32(0),
                     first_nonfinite_step=jnp.int32(-1))
  grads = jax.grad(lambda p: _labeled_loss(module, p, batch))(sp)
  at_start, _ = baseline_steps.finetune_step(state, batch, jax.random.key(0), deps=deps,
                                       first_step=5)
  later, _ = baseline_steps.finetune_step(state, batch, jax.random.key(0), deps=deps, first_step=2)
  # A fresh trace after one step is the gradient itself; a stale one is 0.9 * 7 + g.
  assert_close_on_scale(flat_tree(at_start.student.opt_state[0].trace), flat_tree(grads),
                        TOL_FLOAT64, "fresh trace")
  assert_close_on_scale(flat_tree(later.student.opt_state[0].trace),
                        0.9 * 7.0 + flat_tree(grads), TOL_FLOAT64, "stale trace")
