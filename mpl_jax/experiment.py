"""From a config to what the loop runs: data, networks, step dependencies and phases."""

import bisect
import dataclasses
import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp

from mpl_jax import data as data_lib
from mpl_jax import errors
from mpl_jax import estimators
from mpl_jax import models
from mpl_jax import optim
from mpl_jax import reduced
from mpl_jax import sharding
from mpl_jax import step as step_lib
from mpl_jax.models import reduced as reduced_models
from mpl_jax.state import TrainState, init_net, initial_state, make_apply


@dataclasses.dataclass(frozen=True)
class Phase:
  """`num_steps` consecutive global steps run by one step function."""

  name: str
  num_steps: int
  step_fn: Callable


@dataclasses.dataclass(frozen=True)
class Experiment:
  dataset: data_lib.Dataset
  deps: step_lib.StepDeps
  phases: tuple[Phase, ...]
  init_fn: Callable[[jax.Array], TrainState]
  has_teacher: bool
  eval_teacher: bool = True  # False when the teacher reads no images (reduced MPL)

  @property
  def total_steps(self) -> int:
    return sum(p.num_steps for p in self.phases)

  @functools.cached_property
  def _ends(self) -> tuple[int, ...]:
    return tuple(itertools.accumulate(p.num_steps for p in self.phases))

  def phase_end(self, phase: Phase) -> int:
    """The global step count at which `phase` ends."""
    return self._ends[self.phases.index(phase)]

  def phase_at(self, step: int) -> Phase:
    """The phase that runs global step `step` (0-based)."""
    index = bisect.bisect_right(self._ends, step)
    if index == len(self.phases):
      raise IndexError(f"step {step} is past the last phase")
    return self.phases[index]


def build(config, mesh: jax.sharding.Mesh | None = None,
          check_data: Callable[[data_lib.Dataset], None] | None = None) -> Experiment:
  """Builds data, models, optimizers and step functions for `config` (already validated).

  With a `mesh` that has a model axis, each network's parameters are all-gathered where it
  runs (FSDP, `sharding.gather_before_use`). `check_data` sees the data set as soon as it
  exists, before anything is computed from it (reduced MPL's large-teacher pass).
  """
  dataset = data_lib.build(config.data, config.seed)
  if check_data is not None:
    check_data(dataset)
  method = config.method
  has_teacher = method in ("mpl", "pseudo_labels", "reduced_mpl")
  if method == "reduced_mpl":
    dataset = _with_large_teacher_logits(config, dataset)
  teacher_steps = config.pseudo_labels.teacher_steps if method == "pseudo_labels" else 0
  total = config.num_steps + teacher_steps

  module = models.build(config.model, dataset.num_classes)
  apply = make_apply(module)
  if mesh is not None:
    apply = sharding.gather_before_use(apply, mesh)
  student_cfg = dict(config.student)
  # The pseudo-labels student waits while its teacher trains (its schedule follows the
  # global step).
  student_cfg["wait_steps"] = config.student.wait_steps + teacher_steps
  student_tx, student_lr = optim.make_optimizer(student_cfg, total)
  student = step_lib.Network(apply, student_tx, student_lr)
  teacher = None
  if has_teacher:
    teacher_tx, teacher_lr = optim.make_optimizer(
        dict(config.teacher), teacher_steps or total)
    teacher_module, teacher_apply, teacher_sample = module, apply, None
    if method == "reduced_mpl":  # a small network on the large teacher's logits
      teacher_module = reduced_models.ReducedTeacher(
          num_classes=dataset.num_classes, hidden=tuple(config.reduced_mpl.hidden))
      teacher_apply = make_apply(teacher_module)
      if mesh is not None:
        teacher_apply = sharding.gather_before_use(teacher_apply, mesh)
      teacher_sample = jnp.zeros((1, dataset.num_classes), jnp.float32)
    teacher = step_lib.Network(teacher_apply, teacher_tx, teacher_lr)

  mpl = config.mpl
  deps = step_lib.StepDeps(
      student=student, teacher=teacher, num_classes=dataset.num_classes,
      label_smoothing=config.label_smoothing, ema_decay=config.student.ema_decay,
      uda=step_lib.UdaSettings(weight=config.uda.weight, ramp_steps=config.uda.ramp_steps,
                               temperature=config.uda.temperature,
                               threshold=config.uda.threshold),
      mpl=step_lib.MplSettings(
          estimator=mpl.estimator, reward=mpl.reward,
          labels=estimators.resolve_labels(mpl.estimator, mpl.labels),
          baseline_decay=mpl.baseline_decay, feedback_weight=mpl.feedback_weight,
          supervised_weight=mpl.supervised_weight,
          log_grad_parts=mpl.log_grad_parts),
      pseudo_label_kind=config.pseudo_labels.targets,
      accum_steps=config.accum_steps)

  bind = lambda fn: functools.partial(fn, deps=deps)
  if method == "supervised":
    phases = (Phase("supervised", config.num_steps, bind(step_lib.supervised_step)),)
  elif method == "uda":
    phases = (Phase("uda", config.num_steps, bind(step_lib.uda_step)),)
  elif method == "pseudo_labels":
    phases = (Phase("teacher", teacher_steps, bind(step_lib.teacher_pretrain_step)),
              Phase("pseudo_labels", config.num_steps, bind(step_lib.pseudo_label_step)))
  else:  # mpl, reduced_mpl
    phases = (Phase(method, config.num_steps, bind(step_lib.mpl_step)),)
  if config.finetune.num_steps:
    # The student's optimizer (same momentum, decay and clipping) at a constant rate.
    finetune_lr = float(config.finetune.learning_rate)
    finetune_deps = dataclasses.replace(deps, student=step_lib.Network(
        student.apply, student.tx, lambda step: jnp.asarray(finetune_lr, jnp.float32)))
    first = sum(p.num_steps for p in phases)
    phases += (Phase("finetune", config.finetune.num_steps, functools.partial(
        step_lib.finetune_step, deps=finetune_deps, first_step=first)),)

  sample = jnp.zeros((1,) + dataset.input_shape, jnp.float32)

  def init_fn(rng: jax.Array) -> TrainState:
    rng_student, rng_teacher = jax.random.split(rng)
    student_net = init_net(module, student_tx, rng_student, sample)
    teacher_net = init_net(teacher_module, teacher.tx, rng_teacher,
                           sample if teacher_sample is None else teacher_sample
                           ) if has_teacher else None
    return initial_state(student_net, teacher_net)

  return Experiment(dataset=dataset, deps=deps, phases=phases, init_fn=init_fn,
                    has_teacher=has_teacher, eval_teacher=method != "reduced_mpl")


def _with_large_teacher_logits(config, dataset: data_lib.Dataset) -> data_lib.Dataset:
  """Reduced MPL: the frozen large teacher's logits of every labeled and unlabeled example,
  computed once, batched with their rows as `teacher_labeled_x` / `teacher_unlabeled_x`."""
  source = dataset.source
  if not isinstance(source, data_lib.InMemorySource):
    raise errors.ConfigError(f"method=reduced_mpl needs a data set held in memory (twomoon, "
                             f"digits); data.name={config.data.name} is streamed")
  logits = reduced.precompute_logits(config, {"labeled": source.labeled_x,
                                              "unlabeled": source.unlabeled_x})
  return dataclasses.replace(dataset, source=dataclasses.replace(
      source, labeled_extra={"teacher_labeled_x": logits["labeled"]},
      unlabeled_extra={"teacher_unlabeled_x": logits["unlabeled"]}))


def batch_sizes(dataset: data_lib.Dataset) -> dict[str, int]:
  src = dataset.source
  return {"data.labeled_batch_size": src.labeled_batch_size,
          "data.unlabeled_batch_size": src.unlabeled_batch_size}
