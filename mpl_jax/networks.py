"""From a config to the networks and steps of a run, without its data.

What the networks need from the data is its `DataSpec` (classes, input shape), which each
data module computes from the config alone; so the step a config trains can be built,
benchmarked or compiled ahead of time on a machine that holds none of the data
(`benchmarks/jax_case.py`, `tools/aot_tpu.py`). `mpl_jax.experiment` adds the data.
"""

import bisect
import dataclasses
import functools
import itertools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mpl_jax import data as data_lib
from mpl_jax import estimators
from mpl_jax import methods
from mpl_jax import models
from mpl_jax import optim
from mpl_jax import sharding
from mpl_jax.state import TrainState, init_net, initial_state, make_apply
from mpl_jax.steps import settings


@dataclasses.dataclass(frozen=True)
class Networks:
  """The run's networks, the settings its steps read, its phases and its initial state."""

  method: methods.Method
  deps: settings.StepDeps
  phases: tuple[methods.Phase, ...]
  init_fn: Callable[[jax.Array], TrainState]
  student_module: nn.Module
  teacher_module: nn.Module | None
  spec: data_lib.DataSpec  # what the networks read: classes and one input row's shape

  @property
  def has_teacher(self) -> bool:
    return self.method.has_teacher

  @property
  def eval_teacher(self) -> bool:
    """False when the teacher reads no images (reduced MPL)."""
    return self.method.eval_teacher

  @property
  def evaluated(self) -> dict[str, Callable]:
    """The networks a run evaluates, by TrainState field, each with its apply function:
    the student, its EMA and, when it reads images, the teacher."""
    nets = {"student": self.deps.student.apply, "student_ema": self.deps.student.apply}
    if self.eval_teacher:
      nets["teacher"] = self.deps.teacher.apply
    return nets

  @property
  def total_steps(self) -> int:
    return sum(p.num_steps for p in self.phases)

  @functools.cached_property
  def _ends(self) -> tuple[int, ...]:
    return tuple(itertools.accumulate(p.num_steps for p in self.phases))

  def phase_end(self, phase: methods.Phase) -> int:
    """The global step count at which `phase` ends."""
    return self._ends[self.phases.index(phase)]

  def phase_at(self, step: int) -> methods.Phase:
    """The phase that runs global step `step` (0-based)."""
    index = bisect.bisect_right(self._ends, step)
    if index == len(self.phases):
      raise IndexError(f"step {step} is past the last phase")
    return self.phases[index]


def step_deps(config, method: methods.Method, student: settings.Network,
              teacher: settings.Network | None, num_classes: int) -> settings.StepDeps:
  """The `StepDeps` of `config` (validated): every setting a step reads, from the config
  alone (configs/common.py holds the defaults)."""
  return settings.StepDeps(
      student=student, teacher=teacher, num_classes=num_classes,
      label_smoothing=config.label_smoothing, ema_decay=config.student.ema_decay,
      uda=settings.UdaSettings.from_config(config.uda), mpl=estimators.settings(config.mpl),
      fixmatch=settings.FixMatchSettings.from_config(config.fixmatch),
      pseudo_label_kind=config.pseudo_labels.targets, accum_steps=config.accum_steps,
      teacher_inputs=method.teacher_rows)


def build(config, spec: data_lib.DataSpec | None = None, mesh: jax.sharding.Mesh | None = None,
          *, split_gradients: bool = True) -> Networks:
  """The networks, step settings and phases of `config` (already validated).

  `spec` defaults to what `config.data` describes. With a `mesh` that has a model axis,
  each network's parameters are all-gathered where it runs (FSDP,
  `sharding.gather_before_use`; `split_gradients` as there), or, with
  `mesh.gather="layer"`, each block's where the block runs (`sharding.layer_gather`).
  """
  spec = spec or data_lib.spec(config.data)
  method = methods.get(config.method)
  pretrain = method.pretrain_steps(config)
  total = config.num_steps + pretrain

  def runnable(module):
    if mesh is None:
      return make_apply(module)
    per_layer = config.mesh.gather == "layer" and hasattr(module, "param_gather")
    if per_layer:  # the model gathers each block's parameters; BatchNorm statistics here
      module = module.clone(param_gather=sharding.layer_gather(mesh, split_gradients))
    if hasattr(module, "batch_layout"):  # FSDP: activations stay split over the batch
      module = module.clone(batch_layout=sharding.batch_layout(mesh))
    return sharding.gather_before_use(make_apply(module), mesh, split_gradients,
                                      gather_params=not per_layer)

  student_module = models.build(config.model, spec.num_classes)
  # The student waits while a pretraining teacher trains (its schedule follows the
  # global step).
  student_tx, student_lr = optim.make_optimizer(
      {**dict(config.student), "wait_steps": config.student.wait_steps + pretrain}, total)
  student = settings.Network(runnable(student_module), student_tx, student_lr)
  teacher, teacher_module, teacher_row = None, None, None
  if method.has_teacher:
    teacher_module, teacher_row = method.teacher.module(config, student_module, spec)
    teacher_apply = student.apply if teacher_module is student_module else runnable(
        teacher_module)
    teacher = settings.Network(teacher_apply,
                               *optim.make_optimizer(dict(config.teacher), pretrain or total))

  deps = step_deps(config, method, student, teacher, spec.num_classes)

  def init_fn(rng: jax.Array) -> TrainState:
    rng_student, rng_teacher = jax.random.split(rng)
    student_net = init_net(student_module, student_tx, rng_student,
                           jnp.zeros((1,) + spec.input_shape, jnp.float32))
    teacher_net = None
    if teacher is not None:
      teacher_net = init_net(teacher_module, teacher.tx, rng_teacher,
                             jnp.zeros((1,) + teacher_row, jnp.float32))
    return initial_state(student_net, teacher_net)

  return Networks(method=method, deps=deps, phases=methods.phases(config, deps),
                  init_fn=init_fn, student_module=student_module,
                  teacher_module=teacher_module, spec=spec)
