"""The JAX side of the benchmarks: the MPL step a config file trains, compiled by
`mpl_jax.compiled` as `mpl_jax.train` runs it, and its parts, the step's own helpers, each
as its own jitted function.

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

from mpl_jax import compiled
from mpl_jax import config_files
from mpl_jax import data as data_lib
from mpl_jax import estimators
from mpl_jax import networks
from mpl_jax.state import NetState, TrainState, initial_state
from mpl_jax.steps import common
from mpl_jax.steps import mpl as mpl_steps

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
  if case.labeled_batch < 1 or case.mu < 1:
    raise ValueError("labeled_batch and mu must be at least 1")
  estimators.check(case.train_config)  # estimator, reward and student update: the registry's


def build_run(case: Case) -> compiled.Compiled:
  """What `mpl_jax.train` compiles for the case's config, on one device (no mesh)."""
  check(case)
  nets = networks.build(case.train_config)
  return compiled.Compiled(nets, mesh=None, skip_nonfinite=case.train_config.skip_nonfinite)


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


def init_state(run: compiled.Compiled, seed: int = 0) -> TrainState:
  """A fresh TrainState (teacher, student, EMA) of the run's structure.

  The variables get their shapes from the run's init (`jax.eval_shape`, nothing compiled)
  and their values from numpy on the host: the values do not change a step's cost, and
  compiling Flax's initializers for two ResNet-50s takes minutes on a CPU.
  """
  abstract, rng = run.abstract_state(), np.random.default_rng(seed)

  def net(shapes: NetState, tx) -> NetState:
    params = jax.device_put(_host_values(shapes.params, rng))
    return NetState(params=params, model_state=jax.device_put(
        _host_values(shapes.model_state, rng)), opt_state=jax.jit(tx.init)(params))

  deps = run.nets.deps
  teacher = None if abstract.teacher is None else net(abstract.teacher, deps.teacher.tx)
  return initial_state(net(abstract.student, deps.student.tx), teacher)


def make_batch(case: Case, run: compiled.Compiled, seed: int = 1) -> dict[str, jax.Array]:
  """Random values for the run's abstract batch of the case's sizes, on the default device:
  standard-normal floats (normalized images, or logits), labels below the class count."""
  rng = np.random.default_rng(seed)
  classes = run.nets.deps.num_classes

  def fill(leaf):
    if jnp.issubdtype(leaf.dtype, jnp.integer):
      return rng.integers(0, classes, leaf.shape).astype(leaf.dtype)
    return rng.standard_normal(leaf.shape, dtype=np.float32).astype(leaf.dtype)

  abstract = run.abstract_batch(case.labeled_batch, case.unlabeled_batch)
  return jax.device_put({name: fill(leaf) for name, leaf in abstract.items()})


def step(run: compiled.Compiled):
  """The run's first step (the case's MPL step), compiled as `mpl_jax.train` runs it."""
  return run.step(run.nets.phases[0])


# ---- The parts of the MPL step: its own helpers (`mpl_jax.steps.mpl`), each jitted alone. ----


def _teacher_forward_backward(deps, state, batch, rng):
  """Steps 1 and 6 without the feedback: the teacher's forward on its rows and one vjp of
  its supervised + UDA cotangent; (t_s, gradient, model state)."""
  w_uda = common.uda_weight(state.step, deps.uda)
  t_all, teacher_vjp, model_state, d_sup_uda, _ = mpl_steps.teacher_pass(
      deps, state.teacher, batch, rng, w_uda)
  t_s = t_all[mpl_steps.strong_rows(batch):]
  grads = mpl_steps.teacher_gradient(deps, teacher_vjp, t_all, batch, d_sup_uda,
                                     jnp.zeros_like(t_s))
  return t_s, grads, model_state


def _pseudo_labels(deps, t_s, rng):
  """Step 2."""
  return mpl_steps.pseudo_labels(deps, t_s, rng)


def _student_and_feedback(deps, state, targets, t_s, batch, rng):
  """Steps 3-5, the estimator's: the student's update, the reward, the feedback on t_s."""
  return mpl_steps.student_step_and_feedback(state.student, targets, t_s, batch, state.step,
                                             state.reward_baseline, rng, deps=deps)


def _teacher_update_and_ema(deps, state, student, teacher_grads, teacher_model_state):
  """Step 6's update of the teacher, and the end of the step (the student's EMA)."""
  teacher = common.apply_grads(state.teacher, teacher_grads, deps.teacher,
                               teacher_model_state, state.step)
  return common.finish(state, deps, student=student, teacher=teacher)


@dataclasses.dataclass(frozen=True)
class Part:
  """One pass, jitted alone, with the arguments to time it on."""

  name: str
  fn: Callable
  args: tuple


def parts(run: compiled.Compiled, state: TrainState, batch: dict[str, jax.Array]
          ) -> list[Part]:
  """The MPL step's parts, in the order the step runs them, each the step's own helper:

  - `teacher_forward_backward` (steps 1 and 6): the teacher's forward over its B(1 + 2 mu)
    rows and one vjp;
  - `pseudo_labels` (step 2);
  - `student_and_feedback` (steps 3-5, the estimator's): the student's forward+backward
    on the mu*B strong views and its update, and the reward's passes on the B labeled
    images (`reinforce`: a forward+backward at the updated student, `taylor` adds a
    forward; `meta`: a gradient of a gradient in their place);
  - `teacher_update_and_ema`: the teacher's optimizer update, the student's EMA.
  The arguments of each part are computed from the same state and batch.
  """
  deps = run.nets.deps
  rng = jax.random.key(3)
  forward_backward = jax.jit(functools.partial(_teacher_forward_backward, deps))
  labels = jax.jit(functools.partial(_pseudo_labels, deps))
  student = jax.jit(functools.partial(_student_and_feedback, deps))
  update = jax.jit(functools.partial(_teacher_update_and_ema, deps))
  t_s, grads, model_state = forward_backward(state, batch, rng)
  targets = labels(t_s, rng)
  new_student = student(state, targets, t_s, batch, rng).student
  return [Part("teacher_forward_backward", forward_backward, (state, batch, rng)),
          Part("pseudo_labels", labels, (t_s, rng)),
          Part("student_and_feedback", student, (state, targets, t_s, batch, rng)),
          Part("teacher_update_and_ema", update, (state, new_student, grads, model_state))]
