"""The feedback for the student's real update (`mpl.student_update=real`), by enumeration.

A small nonlinear problem: a teacher and a tanh-MLP student, n = 3 unlabeled points, 3
classes, every one of the 27 hard pseudo-label assignments y enumerated. The student's
optimizer is the configs' kind (`optim.make_optimizer`): SGD-Nesterov 0.9 whose momentum
buffer holds earlier steps, weight decay on kernels, gradient clipping that binds for every
y, and a warmup + cosine learning rate read at step 5. With theta_S'(y) the parameters
after that optimizer's real update, the true objective is
    J(theta_T) = sum_y p_T(y) * L_l(theta_S'(y)),
and the expected REINFORCE gradient of the feedback term must equal grad J / n: exactly
for `taylor`, with an error that shrinks like eta for the real `dot`. The `meta` step must
equal jax.grad of the soft-label objective through the real update, to float64 precision.
The `plain` model (theta_S - eta * g_u) keeps a gap that does not shrink.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mpl_jax import losses
from mpl_jax import optim
from mpl_jax.models import mlp
from mpl_jax.state import EmaState, NetState, TrainState, make_apply
from mpl_jax.steps import mpl as mpl_steps
from mpl_jax.steps import settings as step_settings
from tests.helpers import cos_and_rel_error, flat_tree, step_deps

NUM_CLASSES, FEATURES, N_UNLABELED, N_LABELED = 3, 4, 3, 5
STEP = 5  # not 0: the schedule is past its warmup, the momentum buffer is full


@pytest.fixture(autouse=True)
def _float64():
  with jax.enable_x64(True):
    yield


def _problem(seed=0):
  k = jax.random.split(jax.random.key(seed), 8)
  teacher = mlp.MLP(num_classes=NUM_CLASSES, hidden=(), init_scale=1.0)
  student = mlp.MLP(num_classes=NUM_CLASSES, hidden=(6,), activation="tanh", init_scale=0.8)
  sample = jnp.zeros((1, FEATURES))
  to64 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float64), tree)
  tp = to64(teacher.init(k[0], sample)["params"])
  sp = to64(student.init(k[1], sample)["params"])
  batch = {"labeled_x": jax.random.normal(k[2], (N_LABELED, FEATURES)),
           "labeled_y": jax.random.randint(k[3], (N_LABELED,), 0, NUM_CLASSES),
           "unlabeled_weak": jax.random.normal(k[4], (N_UNLABELED, FEATURES))}
  batch["unlabeled_strong"] = batch["unlabeled_weak"] + 0.5 * jax.random.normal(
      k[5], (N_UNLABELED, FEATURES))
  return teacher, student, tp, sp, batch, k[6]


def _unlabeled_grad(student, sp, u, targets):
  return jax.grad(lambda p: losses.mean_cross_entropy(
      targets, student.apply({"params": p}, u)))(sp)


def _assignments():
  for labels in itertools.product(range(NUM_CLASSES), repeat=N_UNLABELED):
    yield jnp.array(labels)


def _student_optimizer(student, sp, batch, base_lr, key):
  """The configs' optimizer, its momentum buffer filled by three earlier updates, and a
  clipping norm that binds for every assignment."""
  norm = jax.jit(lambda targets: optax.tree.norm(_unlabeled_grad(
      student, sp, batch["unlabeled_strong"], targets)))
  norms = [float(norm(losses.one_hot(y, NUM_CLASSES))) for y in _assignments()]
  clip = 0.5 * min(norms)
  tx, schedule = optim.make_optimizer(
      {"learning_rate": base_lr, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05,
       "grad_clip_norm": clip, "warmup_steps": 2, "schedule": "cosine"}, total_steps=20)
  opt_state = tx.init(sp)
  for i in range(3):
    earlier = jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.fold_in(key, i),
                                                            p.shape, p.dtype), sp)
    _, opt_state = tx.update(earlier, opt_state, sp)
  assert max(norms) > min(norms) > clip  # clipping binds for every y
  return tx, schedule, opt_state


def _setup(base_lr, *, estimator, reward="dot", labels="sample", student_update="real"):
  teacher, student, tp, sp, batch, key = _problem()
  tx, schedule, opt_state = _student_optimizer(student, sp, batch, base_lr, key)
  deps = step_deps(
      step_settings.Network(make_apply(student), tx, schedule),
      step_settings.Network(make_apply(teacher), optax.sgd(1.0), lambda step: jnp.asarray(1.0)),
      NUM_CLASSES, **{"mpl.estimator": estimator, "mpl.reward": reward, "mpl.labels": labels,
                      "mpl.supervised_weight": 0.0, "mpl.student_update": student_update})
  net = NetState(params=sp, model_state={}, opt_state=opt_state)
  return teacher, student, tp, net, batch, deps


def _labeled_loss(student, params, batch):
  logits = student.apply({"params": params}, batch["labeled_x"])
  return losses.mean_cross_entropy(losses.one_hot(batch["labeled_y"], NUM_CLASSES), logits)


def _real_step(deps, net, grads):
  """theta_S' of the real optimizer, as the library's optimizer update makes it."""
  direction, _ = deps.student.tx.update(grads, net.opt_state, net.params)
  lr = deps.student.learning_rate(STEP)
  return optax.apply_updates(net.params, jax.tree.map(lambda u: lr * u, direction))


def _true_gradient(teacher, student, tp, net, batch, deps):
  """grad J / n, J = sum_y p_T(y) L_l(theta_S'(y)) with the real optimizer's update."""
  u = batch["unlabeled_strong"]
  loss_after = jax.jit(lambda targets: _labeled_loss(student, _real_step(
      deps, net, _unlabeled_grad(student, net.params, u, targets)), batch))
  after = {tuple(np.asarray(y)): loss_after(losses.one_hot(y, NUM_CLASSES))
           for y in _assignments()}

  def objective(t_params):
    log_p = jax.nn.log_softmax(teacher.apply({"params": t_params}, u))
    return sum(jnp.exp(jnp.sum(log_p[jnp.arange(N_UNLABELED), y])) * after[tuple(np.asarray(y))]
               for y in _assignments())

  return jax.tree.map(lambda g: g / N_UNLABELED, jax.grad(objective)(tp))


def _expected_feedback(teacher, tp, net, batch, deps):
  """sum_y p_T(y) * the teacher gradient of the library's feedback for labels y."""
  t_s, pullback = jax.vjp(lambda p: teacher.apply({"params": p}, batch["unlabeled_strong"]),
                          tp)
  probs = jax.nn.softmax(t_s)
  feedback = jax.jit(lambda targets: mpl_steps.student_step_and_feedback(
      net, targets, t_s, batch, jnp.int32(STEP), jnp.float64(0.0), jax.random.key(0),
      deps=deps)[1])
  total = jax.tree.map(jnp.zeros_like, tp)
  for y in _assignments():
    prob = jnp.prod(probs[jnp.arange(N_UNLABELED), y])
    (grad,) = pullback(feedback(losses.one_hot(y, NUM_CLASSES)))
    total = jax.tree.map(lambda acc, g: acc + prob * g, total, grad)
  return total


def _reinforce_errors(base_lrs, **kwargs):
  out = []
  for base_lr in base_lrs:
    teacher, student, tp, net, batch, deps = _setup(base_lr, estimator="reinforce", **kwargs)
    out.append(cos_and_rel_error(_expected_feedback(teacher, tp, net, batch, deps),
                                  _true_gradient(teacher, student, tp, net, batch, deps)))
  return out


def test_taylor_matches_the_real_objective_exactly():
  ((cos, rel),) = _reinforce_errors([0.1], reward="taylor")
  assert cos > 1 - 1e-9 and rel < 1e-8, (cos, rel)


def test_real_dot_error_shrinks_like_eta():
  results = _reinforce_errors([1e-1, 1e-2, 1e-3], reward="dot", student_update="real")
  errors = [rel for _, rel in results]
  assert all(cos > 0.99 for cos, _ in results), results
  assert errors[0] / errors[1] > 5 and errors[1] / errors[2] > 5, errors
  assert errors[2] < 1e-2, errors


def test_plain_dot_keeps_a_gap_to_the_real_objective():
  """The paper's form (theta_S - eta * g_u) is not the real step: its error stays as eta
  shrinks. Reverting `real` to this form fails the test above."""
  results = _reinforce_errors([1e-2, 1e-3], reward="dot", student_update="plain")
  assert all(rel > 0.2 for _, rel in results), results
  assert abs(results[0][1] - results[1][1]) < 0.5 * results[1][1], results  # no shrinking


def _mpl_state(tp, net):
  return TrainState(
      step=jnp.int32(STEP), student=net, student_ema=EmaState(net.params, {}),
      teacher=NetState(tp, {}, optax.sgd(1.0).init(tp)), reward_baseline=jnp.float64(0.0),
      skipped_steps=jnp.int32(0), first_nonfinite_step=jnp.int32(-1))


def _meta_gap(student_update: str) -> float:
  """|| the meta step's teacher gradient - grad of the real soft-label objective || / ||.||"""
  teacher, student, tp, net, batch, deps = _setup(0.3, estimator="meta", labels="soft",
                                                  student_update=student_update)
  new_state, _ = mpl_steps.mpl_step(_mpl_state(tp, net), batch, jax.random.key(1),
                                    deps=deps)
  u = batch["unlabeled_strong"]

  def objective(t_params):
    soft = jax.nn.softmax(teacher.apply({"params": t_params}, u))
    stepped = _real_step(deps, net, _unlabeled_grad(student, net.params, u, soft))
    return _labeled_loss(student, stepped, batch)

  true = jax.grad(objective)(tp)
  assert float(jnp.linalg.norm(flat_tree(true))) > 1e-4  # not a vacuous zero
  step_grad = jax.tree.map(lambda a, b: a - b, tp, new_state.teacher.params)  # teacher lr 1
  return cos_and_rel_error(step_grad, true)[1]


def test_real_meta_is_the_gradient_through_the_real_update():
  assert _meta_gap("real") < 1e-10


def test_plain_meta_is_not():
  assert _meta_gap("plain") > 0.1
