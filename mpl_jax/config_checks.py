"""Config validation: every mistake a user can make here fails before any compute, with
one line naming the field and what to change."""

from typing import Any

from mpl_jax import data as data_lib
from mpl_jax import errors
from mpl_jax import estimators
from mpl_jax import models
from mpl_jax import optim
from mpl_jax.data import twomoon

METHODS = ("supervised", "pseudo_labels", "uda", "mpl", "reduced_mpl")


ConfigError = errors.ConfigError


def _one_of(field: str, value: Any, valid) -> None:
  if value not in valid:
    raise ConfigError(f"{field}={value!r} is unknown; valid: {list(valid)}")


def _positive(field: str, value, *, allow_zero: bool = False) -> None:
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"{field}={value} must be {'>= 0' if allow_zero else '> 0'}")


def _check_optimizer(name: str, cfg) -> None:
  for field in ("learning_rate", "warmup_steps", "weight_decay", "grad_clip_norm"):
    _positive(f"{name}.{field}", cfg[field], allow_zero=True)
  _one_of(f"{name}.schedule", cfg.schedule, optim.SCHEDULES)
  if not 0.0 <= cfg.momentum < 1.0:
    raise ConfigError(f"{name}.momentum={cfg.momentum} must be in [0, 1)")


IMAGE_SETS = ("cifar10", "svhn_cropped", "imagenet2012")
_IMAGE_FIELDS = {"name", "data_dir", "split_seed", "labeled_batch_size",
                 "unlabeled_batch_size", "image_size", "randaugment_layers",
                 "randaugment_magnitude", "cutout_size"}
_IMAGE_SET_FIELDS = {
    "cifar10": {"labeled_per_class", "validation_per_class"},
    "svhn_cropped": {"labeled_per_class", "validation_per_class", "use_extra"},
    "imagenet2012": {"labeled_fraction", "validation_per_class", "unlabeled_source",
                     "shuffle_buffer", "eval_image_size"},
}


def _check_image_data(data) -> None:
  """The data section of a tfds image set: fields, sizes, process divisibility."""
  import jax  # pylint: disable=g-import-not-at-top
  valid = _IMAGE_FIELDS | _IMAGE_SET_FIELDS[data.name]
  present = set(data.keys())
  if present - valid or valid - present - {"use_extra"}:
    wrong = sorted(present - valid) or sorted(valid - present)
    what = "unknown" if present - valid else "missing"
    raise errors.ConfigError(f"data ({data.name}) has {what} fields {wrong}; valid: "
                             f"{sorted(valid)}")
  for field in ("labeled_batch_size", "unlabeled_batch_size", "image_size"):
    _positive(f"data.{field}", data[field])
  for field in ("split_seed", "randaugment_layers", "randaugment_magnitude", "cutout_size",
                "validation_per_class"):
    _positive(f"data.{field}", data[field], allow_zero=True)
  if "labeled_per_class" in data:
    _positive("data.labeled_per_class", data.labeled_per_class)
  if "labeled_fraction" in data and not 0.0 < data.labeled_fraction <= 1.0:
    raise errors.ConfigError(f"data.labeled_fraction={data.labeled_fraction} must be in "
                             "(0, 1] (ImageNet-10%: 0.1)")
  if data.cutout_size > data.image_size:
    raise errors.ConfigError(f"data.cutout_size={data.cutout_size} exceeds "
                             f"data.image_size={data.image_size}")
  processes = jax.process_count()
  for field in ("labeled_batch_size", "unlabeled_batch_size"):
    if data[field] % processes:
      raise errors.ConfigError(f"data.{field}={data[field]} does not divide by the "
                               f"{processes} processes; use a multiple of {processes}")


def _check_reduced(config) -> None:
  """Reduced MPL's section; the large teacher's workdir is read at start-up (reduced.py)."""
  from mpl_jax import reduced  # pylint: disable=g-import-not-at-top
  cfg = config.reduced_mpl
  if not cfg.large_teacher_workdir:
    raise ConfigError("method=reduced_mpl needs --config.reduced_mpl.large_teacher_workdir: "
                      "the workdir of a finished run whose network becomes the frozen teacher")
  _one_of("reduced_mpl.large_teacher_network", cfg.large_teacher_network, reduced.NETWORKS)
  if not all(isinstance(w, int) and w > 0 for w in cfg.hidden):
    raise ConfigError(f"reduced_mpl.hidden={tuple(cfg.hidden)} must be positive layer widths "
                      "(e.g. (128,))")
  if config.uda.weight:
    raise ConfigError(f"uda.weight={config.uda.weight}: the reduced teacher sees one "
                      "precomputed view of each image, so it has no consistency loss; set "
                      "--config.uda.weight=0")
  if config.data.name not in ("twomoon", "digits"):
    raise ConfigError(f"method=reduced_mpl needs a data set held in memory (twomoon, digits);"
                      f" data.name={config.data.name} is streamed")


def validate(config) -> None:
  """Raises ConfigError on the first field that cannot work."""
  _one_of("method", config.method, METHODS)
  _one_of("data.name", config.data.name, sorted(data_lib.DATASETS))
  _one_of("model.name", config.model.name, sorted(models.MODELS))
  try:  # every model checks its own fields; building a module computes nothing
    models.build(config.model, num_classes=2)
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(str(e).strip("'\"")) from None
  _positive("num_steps", config.num_steps)
  _positive("log_every_steps", config.log_every_steps)
  _positive("checkpoint.every_steps", config.checkpoint.every_steps)
  _positive("eval.every_steps", config.eval.every_steps)
  if config.seed < 0:
    raise ConfigError(f"seed={config.seed} must be >= 0")
  _positive("eval.batch_size", config.eval.batch_size)
  _positive("checkpoint.max_to_keep", config.checkpoint.max_to_keep)
  if config.data.name == "digits":
    for field in ("labeled_per_class", "validation_per_class", "test_per_class"):
      _positive(f"data.{field}", config.data[field])
    _positive("data.unlabeled_batch_size", config.data.unlabeled_batch_size)
    for field in ("labeled_batch_size", "max_shift", "cutout_size", "strong_noise"):
      _positive(f"data.{field}", config.data[field], allow_zero=True)
    per_class = (config.data.labeled_per_class + config.data.validation_per_class +
                 config.data.test_per_class)
    if per_class > 170:  # the smallest digit class has 174 images
      raise ConfigError(f"data: labeled + validation + test per class = {per_class} leaves "
                        "too few unlabeled images (each class has at least 174); lower them")
  if config.data.name in IMAGE_SETS:
    _check_image_data(config.data)
  if config.data.name == "twomoon":
    data = config.data
    _one_of("data.labeled_selection", data.labeled_selection, twomoon.LABELED_SELECTIONS)
    _positive("data.labeled_per_class", data.labeled_per_class)
    if data.num_points < 2 * data.labeled_per_class:
      raise ConfigError(f"data.num_points={data.num_points} cannot hold "
                        f"data.labeled_per_class={data.labeled_per_class} per moon; use at "
                        f"least {2 * data.labeled_per_class} points")
    for field in ("noise", "strong_noise", "labeled_batch_size", "unlabeled_batch_size"):
      _positive(f"data.{field}", data[field], allow_zero=True)
  for name in ("student", "teacher"):
    if config[name].nesterov and not config[name].momentum:
      raise ConfigError(f"{name}.nesterov=True needs {name}.momentum > 0 (e.g. 0.9)")
  _check_optimizer("student", config.student)
  _check_optimizer("teacher", config.teacher)
  _positive("student.wait_steps", config.student.wait_steps, allow_zero=True)
  if not 0.0 <= config.student.ema_decay < 1.0:
    raise ConfigError(f"student.ema_decay={config.student.ema_decay} must be in [0, 1)")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"label_smoothing={config.label_smoothing} must be in [0, 1)")
  uda = config.uda
  _positive("uda.weight", uda.weight, allow_zero=True)
  _positive("uda.temperature", uda.temperature)
  _positive("uda.ramp_steps", uda.ramp_steps, allow_zero=True)
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
  _positive("mpl.feedback_weight", mpl.feedback_weight, allow_zero=True)
  _positive("mpl.supervised_weight", mpl.supervised_weight, allow_zero=True)
  if not 0.0 <= mpl.baseline_decay < 1.0:
    raise ConfigError(f"mpl.baseline_decay={mpl.baseline_decay} must be in [0, 1) (0 = off)")
  if not isinstance(config.accum_steps, int) or config.accum_steps < 1:
    raise ConfigError(f"accum_steps={config.accum_steps!r} must be an integer >= 1 "
                      "(1 = no gradient accumulation)")
  if config.accum_steps > 1 and config.method in ("mpl", "reduced_mpl") and (
      mpl.estimator == "meta"):
    raise ConfigError(f"accum_steps={config.accum_steps} does not support mpl.estimator=meta"
                      " (its meta-gradient runs through the whole batch's student gradient); "
                      "use --config.mpl.estimator=reinforce or --config.accum_steps=1")
  if config.method == "reduced_mpl":
    _check_reduced(config)
  _one_of("pseudo_labels.targets", config.pseudo_labels.targets, estimators.LABELS)
  if config.method == "pseudo_labels":
    _positive("pseudo_labels.teacher_steps", config.pseudo_labels.teacher_steps)
  _positive("mesh.num_devices", config.mesh.num_devices, allow_zero=True)
  if not isinstance(config.mesh.model_axis, int) or config.mesh.model_axis < 1:
    raise ConfigError(f"mesh.model_axis={config.mesh.model_axis!r} must be an integer >= 1 "
                      "(1 = data parallel only)")
  _positive("finetune.num_steps", config.finetune.num_steps, allow_zero=True)
  _positive("finetune.learning_rate", config.finetune.learning_rate, allow_zero=True)
