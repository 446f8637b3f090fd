"""Config validation: every mistake a user can make here fails before any compute, with
one line naming the field and what to change."""

from typing import Any

from mpl_jax import data as data_lib
from mpl_jax import estimators
from mpl_jax import models
from mpl_jax import optim
from mpl_jax.data import twomoon
from mpl_jax.models import mlp

METHODS = ("supervised", "pseudo_labels", "uda", "mpl")


class ConfigError(ValueError):
  """A config field has a value that cannot work."""


def _one_of(field: str, value: Any, valid) -> None:
  if value not in valid:
    raise ConfigError(f"{field}={value!r} is unknown; valid: {list(valid)}")


def _positive(field: str, value, *, allow_zero: bool = False) -> None:
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"{field}={value} must be {'>= 0' if allow_zero else '> 0'}")


def _check_optimizer(name: str, cfg) -> None:
  _positive(f"{name}.learning_rate", cfg.learning_rate, allow_zero=True)
  _positive(f"{name}.warmup_steps", cfg.warmup_steps, allow_zero=True)
  _one_of(f"{name}.schedule", cfg.schedule, optim.SCHEDULES)
  if not 0.0 <= cfg.momentum < 1.0:
    raise ConfigError(f"{name}.momentum={cfg.momentum} must be in [0, 1)")


def validate(config) -> None:
  """Raises ConfigError on the first field that cannot work."""
  _one_of("method", config.method, METHODS)
  _one_of("data.name", config.data.name, sorted(data_lib.DATASETS))
  _one_of("model.name", config.model.name, sorted(models.MODELS))
  if config.model.name == "mlp":
    _one_of("model.activation", config.model.activation, sorted(mlp.ACTIVATIONS))
  _positive("num_steps", config.num_steps)
  _positive("log_every_steps", config.log_every_steps)
  _positive("checkpoint.every_steps", config.checkpoint.every_steps)
  _positive("eval.every_steps", config.eval.every_steps)
  if config.data.name == "twomoon":
    _one_of("data.labeled_selection", config.data.labeled_selection,
            twomoon.LABELED_SELECTIONS)
    _positive("data.labeled_per_class", config.data.labeled_per_class)
  _check_optimizer("student", config.student)
  _check_optimizer("teacher", config.teacher)
  if not 0.0 <= config.student.ema_decay < 1.0:
    raise ConfigError(f"student.ema_decay={config.student.ema_decay} must be in [0, 1)")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"label_smoothing={config.label_smoothing} must be in [0, 1)")
  uda = config.uda
  _positive("uda.weight", uda.weight, allow_zero=True)
  _positive("uda.temperature", uda.temperature)
  if not 0.0 <= uda.threshold <= 1.0:
    raise ConfigError(f"uda.threshold={uda.threshold} must be in [0, 1]")
  mpl = config.mpl
  _one_of("mpl.estimator", mpl.estimator, estimators.ESTIMATORS)
  _one_of("mpl.reward", mpl.reward, estimators.REWARDS)
  _one_of("mpl.labels", mpl.labels, ("auto",) + estimators.LABELS)
  labels = estimators.resolve_labels(mpl.estimator, mpl.labels)
  if mpl.estimator == "reinforce" and labels == "soft":
    raise ConfigError("mpl.labels=soft has no REINFORCE estimator; use "
                      "--config.mpl.estimator=meta for soft labels, or mpl.labels=sample|argmax")
  if mpl.estimator == "meta" and labels != "soft":
    raise ConfigError(f"mpl.estimator=meta differentiates through soft labels; set "
                      f"--config.mpl.labels=soft (or auto), not {labels!r}")
  if not 0.0 <= mpl.baseline_decay < 1.0:
    raise ConfigError(f"mpl.baseline_decay={mpl.baseline_decay} must be in [0, 1) (0 = off)")
  _one_of("pseudo_labels.targets", config.pseudo_labels.targets, estimators.LABELS)
  if config.method == "pseudo_labels":
    _positive("pseudo_labels.teacher_steps", config.pseudo_labels.teacher_steps)
  _positive("mesh.num_devices", config.mesh.num_devices, allow_zero=True)
