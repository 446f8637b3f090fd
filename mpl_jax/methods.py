"""The method registry: each method's networks, phases, step functions and config checks.

A method is one `Method` entry in `METHODS`; nothing outside this module chooses by a
method's name. A run is the method's phases, then, when `finetune.num_steps` > 0,
`FINETUNE`'s phase. Each phase runs `num_steps` consecutive global steps with one step
function, bound to the run's `StepDeps`.

Adding a method: write its step functions (`mpl_jax/steps/`), then one `Method` here:
its phases, its teacher's input (`TeacherInput`, or none) and its checks.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mpl_jax import data as data_lib
from mpl_jax import estimators
from mpl_jax.errors import ConfigError, one_of, positive
from mpl_jax.models import reduced_teacher
from mpl_jax.steps import baselines
from mpl_jax.steps import mpl as mpl_steps
from mpl_jax.steps.settings import (Batch, Network, StepDeps, large_teacher_logits,
                                    teacher_views)

# The networks of a finished run that reduced MPL can use as its frozen large teacher.
LARGE_TEACHER_NETWORKS = ("student", "student_ema", "teacher")


@dataclasses.dataclass(frozen=True)
class Phase:
  """`num_steps` consecutive global steps run by one step function."""

  name: str
  num_steps: int
  step_fn: Callable


def _no_checks(config) -> None:
  del config


def _no_pretraining(config) -> int:
  del config
  return 0


@dataclasses.dataclass(frozen=True)
class TeacherInput:
  """What a method's teacher reads, and the network that reads it.

  `rows(batch)` gives the teacher's rows [labeled, u_w, u_s]; `module(config, student,
  spec)` the teacher's module and the shape of one row (`student` is the student's
  module); `batch_keys(spec)` the batch entries it needs beyond the images, as
  {name: (shape of one row, dtype)}. A teacher that does not read the images
  (`reads_images` False) is not evaluated on them, and reads a frozen large teacher's
  logits (`mpl_jax.large_teacher`) added to the data set.
  """

  rows: Callable[[Batch], jax.Array]
  module: Callable
  batch_keys: Callable
  reads_images: bool


IMAGES = TeacherInput(teacher_views, lambda config, student, spec: (student, spec.input_shape),
                      lambda spec: {}, reads_images=True)
LARGE_TEACHER_LOGITS = TeacherInput(
    large_teacher_logits,
    lambda config, student, spec: (reduced_teacher.ReducedTeacher(
        num_classes=spec.num_classes, hidden=tuple(config.reduced_mpl.hidden)),
                                   (spec.num_classes,)),
    lambda spec: {name: ((spec.num_classes,), jnp.float32)
                  for name in ("teacher_labeled_x", "teacher_unlabeled_x")},
    reads_images=False)


def _all_data(name: str) -> bool:
  del name
  return True


@dataclasses.dataclass(frozen=True)
class Method:
  """What the rest of the system needs to know about one method.

  `phases(config, deps)` gives its phases in order. `pretrain_steps(config)` is how many
  of its first steps the teacher trains alone (the student's schedule waits that long;
  the teacher's schedule spans those steps only when > 0, else the whole run).
  `teacher` is what its teacher reads (None: no teacher). `feedback` marks methods whose
  teacher learns from the student (their runs are described by `mpl.estimator`).
  `supports(data.name)` says which data sets it can train on.
  """

  name: str
  phases: Callable[[Any, StepDeps], tuple[Phase, ...]]
  teacher: TeacherInput | None = None
  feedback: bool = False
  pretrain_steps: Callable[[Any], int] = _no_pretraining
  check: Callable[[Any], None] = _no_checks
  supports: Callable[[str], bool] = _all_data

  @property
  def has_teacher(self) -> bool:
    return self.teacher is not None

  @property
  def eval_teacher(self) -> bool:
    """Whether its teacher is evaluated: it has one and it reads images."""
    return self.has_teacher and self.teacher.reads_images

  @property
  def needs_large_teacher(self) -> bool:
    """Whether its teacher reads a frozen large teacher's logits, added to the data set
    (`mpl_jax.large_teacher`) in place of the images."""
    return self.has_teacher and not self.teacher.reads_images

  @property
  def teacher_rows(self) -> Callable[[Batch], jax.Array]:
    """The teacher's rows of a batch (the images for methods without a teacher: UDA's
    one network reads them)."""
    return (self.teacher or IMAGES).rows


def _one_phase(name: str, step_fn: Callable):
  def phases(config, deps: StepDeps) -> tuple[Phase, ...]:
    return (Phase(name, config.num_steps, functools.partial(step_fn, deps=deps)),)
  return phases


def _pseudo_labels_phases(config, deps: StepDeps) -> tuple[Phase, ...]:
  return (Phase("teacher", config.pseudo_labels.teacher_steps,
                functools.partial(baselines.teacher_pretrain_step, deps=deps)),
          Phase("pseudo_labels", config.num_steps,
                functools.partial(baselines.pseudo_label_step, deps=deps)))


def _check_pseudo_labels(config) -> None:
  positive("pseudo_labels.teacher_steps", config.pseudo_labels.teacher_steps)


def _check_fixmatch(config) -> None:
  if not 0.0 <= config.fixmatch.threshold <= 1.0:
    raise ConfigError(f"fixmatch.threshold={config.fixmatch.threshold} must be in [0, 1] "
                      "(FixMatch: 0.95)")
  positive("fixmatch.weight", config.fixmatch.weight, allow_zero=True)


def _check_mpl(config) -> None:
  estimators.check_accumulation(config)


def _check_reduced_mpl(config) -> None:
  """Reduced MPL's section; the large teacher's workdir is read at start-up
  (`mpl_jax.large_teacher`)."""
  _check_mpl(config)
  cfg = config.reduced_mpl
  if not cfg.large_teacher_workdir:
    raise ConfigError("method=reduced_mpl needs --config.reduced_mpl.large_teacher_workdir: "
                      "the workdir of a finished run whose network becomes the frozen teacher")
  one_of("reduced_mpl.large_teacher_network", cfg.large_teacher_network,
         LARGE_TEACHER_NETWORKS)
  if not all(isinstance(w, int) and w > 0 for w in cfg.hidden):
    raise ConfigError(f"reduced_mpl.hidden={tuple(cfg.hidden)} must be positive layer widths "
                      "(e.g. (128,))")
  if config.uda.weight:
    raise ConfigError(f"uda.weight={config.uda.weight}: the reduced teacher sees one "
                      "precomputed view of each image, so it has no consistency loss; set "
                      "--config.uda.weight=0")
  if not data_lib.held_in_memory(config.data.name):
    in_memory = [name for name in sorted(data_lib.DATASETS) if data_lib.held_in_memory(name)]
    raise ConfigError(f"method=reduced_mpl needs a data set whose batches come from numpy "
                      f"arrays in memory ({', '.join(in_memory)}); data.name="
                      f"{config.data.name} is fed through tf.data")


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("supervised", _one_phase("supervised", baselines.supervised_step)),
    Method("pseudo_labels", _pseudo_labels_phases, teacher=IMAGES,
           pretrain_steps=lambda config: config.pseudo_labels.teacher_steps,
           check=_check_pseudo_labels),
    Method("uda", _one_phase("uda", baselines.uda_step)),
    Method("fixmatch", _one_phase("fixmatch", baselines.fixmatch_step), check=_check_fixmatch),
    Method("mpl", _one_phase("mpl", mpl_steps.mpl_step), teacher=IMAGES, feedback=True,
           check=_check_mpl),
    Method("reduced_mpl", _one_phase("reduced_mpl", mpl_steps.mpl_step),
           teacher=LARGE_TEACHER_LOGITS, feedback=True, check=_check_reduced_mpl,
           supports=data_lib.held_in_memory),
)}


def _finetune_phases(config, deps: StepDeps) -> tuple[Phase, ...]:
  """The student on the labeled batch with its own optimizer (same momentum, decay and
  clipping, momentum restarted) at a constant learning rate, after the method's phases;
  none when finetune.num_steps = 0."""
  if not config.finetune.num_steps:
    return ()
  first_step = config.num_steps + get(config.method).pretrain_steps(config)
  rate = float(config.finetune.learning_rate)
  finetune_deps = dataclasses.replace(deps, student=Network(
      deps.student.apply, deps.student.tx, lambda step: jnp.asarray(rate, jnp.float32)))
  return (Phase("finetune", config.finetune.num_steps, functools.partial(
      baselines.finetune_step, deps=finetune_deps, first_step=first_step)),)


def _check_finetune(config) -> None:
  positive("finetune.num_steps", config.finetune.num_steps, allow_zero=True)
  positive("finetune.learning_rate", config.finetune.learning_rate, allow_zero=True)


# Finetuning: a phase any method may end with (the paper's recipe after MPL).
FINETUNE = Method("finetune", _finetune_phases, check=_check_finetune)


def get(name: str) -> Method:
  """The method called `name`; a ConfigError listing the valid names otherwise."""
  one_of("method", name, tuple(METHODS))
  return METHODS[name]


def for_data(name: str) -> tuple[str, ...]:
  """The methods that can train on data set `name` (what a config file offers)."""
  return tuple(m.name for m in METHODS.values() if m.supports(name))


def check(config) -> None:
  """The checks of `config.method` and of finetuning."""
  get(config.method).check(config)
  FINETUNE.check(config)


def phases(config, deps: StepDeps) -> tuple[Phase, ...]:
  """The run's phases: the method's, then finetuning if configured."""
  return get(config.method).phases(config, deps) + FINETUNE.phases(config, deps)
