"""The JAX side of the benchmarks: the MPL step a config file trains, built and jitted as
`mpl_jax.train` does it, and the passes it is made of, each as its own jitted function.

Every setting comes from a config file (`CONFIGS`, or `Case.config`): the networks,
optimizers and `StepDeps` are `mpl_jax.networks.build` of that config, with only what a
benchmark varies written over it (`Case.overrides`: batch, model size, estimator, dtype,
image size; the student does not wait, so its learning rate and the reward are not zero).
No data is read and neither TensorFlow nor clu is imported: this module runs where JAX,
Flax, optax and ml_collections (pure Python, for the config files) are installed.
"""

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mpl_jax import config_files
from mpl_jax import data as data_lib
from mpl_jax import estimators
from mpl_jax import guards
from mpl_jax import losses
from mpl_jax import networks
from mpl_jax.state import NetState, TrainState, ema_update, initial_state
from mpl_jax.steps import mpl as mpl_steps
from mpl_jax.steps import settings as step_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = ("float32", "bfloat16")
# The config each model is benchmarked with: the paper's CIFAR-10 and ImageNet-10% runs.
CONFIGS = {"wide_resnet": os.path.join(ROOT, "configs", "cifar10_wrn28_2.py") + ":mpl",
           "resnet50": os.path.join(ROOT, "configs", "imagenet10_resnet50.py") + ":mpl"}
MODELS = tuple(CONFIGS)


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark case: the model, the batch composition and the estimator."""

  model: str = "wide_resnet"   # wide_resnet | resnet50
  depth: int = 28              # WRN depth (wide_resnet only)
  width: int = 2               # WRN widening factor (wide_resnet only)
  labeled_batch: int = 16      # B
  mu: int = 7                  # unlabeled batch = mu * B, each seen as a weak and a strong view
  estimator: str = "reinforce"  # reinforce | meta | off
  reward: str = "dot"          # dot | taylor (reinforce only)
  dtype: str = "float32"       # compute dtype; parameters stay float32
  student_update: str = "real"  # what dot and meta model: real | plain (mpl.student_update)
  image_size: int | None = None  # None: the config's (32 CIFAR, 224 ImageNet)
  config: str | None = None    # a config file[:arg]; None: CONFIGS[model]

  @property
  def unlabeled_batch(self) -> int:
    return self.mu * self.labeled_batch

  @property
  def config_file(self) -> str:
    return self.config or CONFIGS[self.model]

  def overrides(self) -> dict[str, Any]:
    """What the benchmark writes over the config file."""
    out = {"data.labeled_batch_size": self.labeled_batch,
           "data.unlabeled_batch_size": self.unlabeled_batch,
           "mpl.estimator": self.estimator, "mpl.reward": self.reward, "mpl.labels": "auto",
           "mpl.student_update": self.student_update,
           "model.dtype": self.dtype, "student.wait_steps": 0, "accum_steps": 1}
    if self.image_size:
      out["data.image_size"] = self.image_size
    if self.model == "wide_resnet":
      out.update({"model.depth": self.depth, "model.width": self.width})
    return out

  @functools.cached_property
  def train_config(self):
    """The config file's config with `overrides` written over it."""
    return config_files.load(self.config_file, self.overrides())

  @property
  def size(self) -> int:
    return int(self.train_config.data.image_size)

  @property
  def num_classes(self) -> int:
    return data_lib.spec(self.train_config.data).num_classes

  @property
  def images_per_step(self) -> int:
    """Images the input pipeline delivers per step: labeled + weak + strong views."""
    return self.labeled_batch * (1 + 2 * self.mu)

  def describe(self) -> dict[str, Any]:
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out["image_size"] = self.size
    out["config"] = os.path.relpath(self.config_file, ROOT)
    if self.model != "wide_resnet":
      out.pop("depth")
      out.pop("width")
    return out


def check(case: Case) -> None:
  """Fails with the valid values when a field is off."""
  if case.model not in MODELS:
    raise ValueError(f"model {case.model!r} is unknown; valid: {list(MODELS)}")
  if case.dtype not in DTYPES:
    raise ValueError(f"dtype {case.dtype!r} is unknown; valid: {list(DTYPES)}")
  if case.estimator not in estimators.ESTIMATORS:
    raise ValueError(f"estimator {case.estimator!r} is unknown; valid: "
                     f"{list(estimators.ESTIMATORS)}")
  if case.reward not in estimators.REWARDS:
    raise ValueError(f"reward {case.reward!r} is unknown; valid: {list(estimators.REWARDS)}")
  if case.student_update not in estimators.STUDENT_UPDATES:
    raise ValueError(f"student_update {case.student_update!r} is unknown; valid: "
                     f"{list(estimators.STUDENT_UPDATES)}")
  if case.labeled_batch < 1 or case.mu < 1:
    raise ValueError("labeled_batch and mu must be at least 1")


def build_networks(case: Case) -> networks.Networks:
  """`mpl_jax.networks.build` of the case's config: what `mpl_jax.train` would train."""
  check(case)
  return networks.build(case.train_config)


def build_module(case: Case):
  """The Flax module of the case (the same for teacher and student, as in the paper)."""
  return build_networks(case).student_module


def build_deps(case: Case) -> step_settings.StepDeps:
  """The StepDeps `mpl_jax.train` binds to the MPL step of the case's config."""
  return build_networks(case).deps


def _host_values(abstract, rng: np.random.Generator):
  """Values for an abstract variable tree, made on the host: He-normal kernels (fan-in),
  unit BatchNorm scales and variances, zero biases and means."""
  def fill(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    shape, dtype = leaf.shape, leaf.dtype
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    if name in ("scale", "var"):
      return np.ones(shape, dtype)
    return np.zeros(shape, dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def init_state(case: Case, deps: step_settings.StepDeps, seed: int = 0) -> TrainState:
  """A fresh TrainState (teacher, student, EMA) of the experiment's structure.

  The variables get their shapes from Flax (`jax.eval_shape` of the module's init) and
  their values from numpy on the host: the values do not change a step's cost, and
  compiling Flax's initializers for two ResNet-50s takes minutes on a CPU.
  """
  module = build_module(case)
  sample = jnp.zeros((1, case.size, case.size, 3), jnp.float32)
  key = jax.random.key(seed)
  abstract = jax.eval_shape(lambda: module.init({"params": key, "dropout": key}, sample,
                                                train=False))
  rng = np.random.default_rng(seed)

  def net(tx):
    variables = dict(jax.device_put(_host_values(abstract, rng)))
    params = variables.pop("params")
    return NetState(params=params, model_state=variables, opt_state=jax.jit(tx.init)(params))

  student, teacher = net(deps.student.tx), net(deps.teacher.tx)
  return initial_state(student, teacher)


def make_batch(case: Case, seed: int = 1) -> dict[str, jax.Array]:
  """Random normalized images and labels of the case's shapes, on the default device."""
  rng = np.random.default_rng(seed)
  image = lambda n: rng.standard_normal((n, case.size, case.size, 3), dtype=np.float32)
  b, u = case.labeled_batch, case.unlabeled_batch
  weak = image(u)
  batch = {"labeled_x": image(b),
           "labeled_y": rng.integers(0, case.num_classes, b).astype(np.int32),
           "unlabeled_weak": weak, "unlabeled_strong": weak + 0.5 * image(u)}
  return jax.device_put(batch)


def jit_step(deps: step_settings.StepDeps) -> Callable:
  """The MPL step as `mpl_jax.train` jits it: guarded, the state donated."""
  step_fn = guards.guard_step(functools.partial(mpl_steps.mpl_step, deps=deps),
                              skip_nonfinite=False)
  return jax.jit(step_fn, donate_argnums=(0,))


# ---- The passes a step is made of, each one jitted alone. ----


def _fwd_bwd(apply, params, model_state, x, targets, rng):
  """Loss, parameter gradients and new BatchNorm statistics of one train-mode pass."""
  def loss_fn(p):
    logits, new_state = apply(p, model_state, x, train=True, rng=rng)
    return losses.mean_cross_entropy(targets, logits), new_state

  (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, new_state


def _forward(apply, params, model_state, x, targets, rng):
  logits, _ = apply(params, model_state, x, train=True, rng=rng)
  return losses.mean_cross_entropy(targets, logits)


def _meta_feedback(apply, tx, lr, params, opt_state, model_state, u_s, t_s, x_l, y_l, rng):
  """The meta estimator's student side: d/dt_s L_l(theta'(g_u)), g_u the gradient of
  CE(softmax(t_s), S(u_s)) and theta' the optimizer's real update (tx given) or the
  plain step theta - lr * g_u (tx None)."""
  rng_u, rng_l = jax.random.split(rng)

  def objective(strong_logits):
    soft = jax.nn.softmax(strong_logits)

    def unlabeled(p):
      logits, new_state = apply(p, model_state, u_s, train=True, rng=rng_u)
      return losses.mean_cross_entropy(soft, logits), new_state

    (_, new_state), g_u = jax.value_and_grad(unlabeled, has_aux=True)(params)
    if tx is None:
      stepped = jax.tree.map(lambda p, g: p - lr * g, params, g_u)
    else:
      direction, _ = tx.update(g_u, opt_state, params)
      stepped = jax.tree.map(lambda p, u: p + lr * u, params, direction)
    logits, _ = apply(stepped, model_state, x_l, train=True, rng=rng_l)
    return losses.mean_cross_entropy(y_l, logits), (g_u, new_state)

  return jax.grad(objective, has_aux=True)(t_s)


def _updates_and_ema(deps: step_settings.StepDeps, state: TrainState, teacher_grads, student_grads):
  """Both optimizer updates at the step's learning rates and the student's EMA."""
  def update(net, network, grads):
    updates, opt_state = network.tx.update(grads, net.opt_state, net.params)
    lr = network.learning_rate(state.step)
    params = jax.tree.map(lambda p, u: p + lr * u, net.params, updates)
    return net.replace(params=params, opt_state=opt_state)

  student = update(state.student, deps.student, student_grads)
  teacher = update(state.teacher, deps.teacher, teacher_grads)
  return student, teacher, ema_update(state.student_ema, student, deps.ema_decay)


@dataclasses.dataclass(frozen=True)
class Part:
  """One pass, jitted alone, with the arguments to time it on."""

  name: str
  fn: Callable
  args: tuple


def parts(case: Case, deps: step_settings.StepDeps, state: TrainState,
          batch: dict[str, jax.Array]) -> list[Part]:
  """The passes the case's step needs, in the order the step runs them.

  - teacher forward+backward over concat[x_l, u_w, u_s]: B (1 + 2 mu) images, once;
  - the student's forward+backward on u_s (B mu images) for g_u;
  - the reward's passes on the B labeled images: one forward+backward at the updated
    student (reinforce; `taylor` adds a forward at the old student); `meta` replaces the
    student's passes with its gradient-of-gradient;
  - both optimizer updates and the student's EMA.
  """
  apply = deps.student.apply
  num_classes = case.num_classes
  rng = jax.random.key(3)
  x_l, u_w, u_s = batch["labeled_x"], batch["unlabeled_weak"], batch["unlabeled_strong"]
  y_l = losses.one_hot(batch["labeled_y"], num_classes)
  all_x = jnp.concatenate([x_l, u_w, u_s])
  onehot = lambda n: losses.one_hot(jnp.arange(n) % num_classes, num_classes)
  fwd_bwd = jax.jit(functools.partial(_fwd_bwd, apply))
  teacher, student = state.teacher, state.student

  out = [Part("teacher_fwd_bwd", fwd_bwd,
              (teacher.params, teacher.model_state, all_x, onehot(all_x.shape[0]), rng))]
  if case.estimator == "meta":
    t_s = jnp.zeros((case.unlabeled_batch, num_classes), jnp.float32)
    lr = deps.student.learning_rate(jnp.asarray(1000))
    tx = deps.student.tx if case.student_update == "real" else None
    out.append(Part("student_meta_grad",
                    jax.jit(functools.partial(_meta_feedback, apply, tx)),
                    (lr, student.params, student.opt_state, student.model_state, u_s, t_s,
                     x_l, y_l, rng)))
  else:
    out.append(Part("student_unlabeled_fwd_bwd", fwd_bwd,
                    (student.params, student.model_state, u_s, onehot(u_s.shape[0]), rng)))
    if case.estimator == "reinforce":
      out.append(Part("student_labeled_fwd_bwd", fwd_bwd,
                      (student.params, student.model_state, x_l, y_l, rng)))
      if case.reward == "taylor":
        out.append(Part("student_labeled_fwd", jax.jit(functools.partial(_forward, apply)),
                        (student.params, student.model_state, x_l, y_l, rng)))
  out.append(Part("updates_and_ema", jax.jit(functools.partial(_updates_and_ema, deps)),
                  (state, teacher.params, student.params)))
  return out
