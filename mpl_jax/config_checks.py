"""Config validation: every mistake a user can make here fails before any compute, with
one line naming the field and what to change."""

from mpl_jax import data as data_lib
from mpl_jax import errors
from mpl_jax import estimators
from mpl_jax import methods
from mpl_jax import models
from mpl_jax import optim
from mpl_jax import sharding

ConfigError = errors.ConfigError
_one_of = errors.one_of
_positive = errors.positive


def _check_optimizer(name: str, cfg) -> None:
  for field in ("learning_rate", "warmup_steps", "weight_decay", "grad_clip_norm"):
    _positive(f"{name}.{field}", cfg[field], allow_zero=True)
  _one_of(f"{name}.schedule", cfg.schedule, optim.SCHEDULES)
  if not 0.0 <= cfg.momentum < 1.0:
    raise ConfigError(f"{name}.momentum={cfg.momentum} must be in [0, 1)")


def validate(config) -> None:
  """Raises ConfigError on the first field that cannot work."""
  methods.get(config.method)  # a known method, before its fields are read
  _one_of("data.name", config.data.name, sorted(data_lib.DATASETS))  # before model fields
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
  data_lib.check(config.data)  # the data set's own fields
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
  estimators.check(config)  # the mpl section, with the estimator registry
  if not isinstance(config.accum_steps, int) or config.accum_steps < 1:
    raise ConfigError(f"accum_steps={config.accum_steps!r} must be an integer >= 1 "
                      "(1 = no gradient accumulation)")
  _one_of("pseudo_labels.targets", config.pseudo_labels.targets, estimators.LABELS)
  _positive("mesh.num_devices", config.mesh.num_devices, allow_zero=True)
  if not isinstance(config.mesh.model_axis, int) or config.mesh.model_axis < 1:
    raise ConfigError(f"mesh.model_axis={config.mesh.model_axis!r} must be an integer >= 1 "
                      "(1 = data parallel only)")
  _one_of("mesh.gather", config.mesh.gather, sharding.GATHERS)
  if config.mesh.gather == "layer" and config.model.name not in models.LAYER_GATHER:
    raise ConfigError(f"mesh.gather=layer gathers each block's parameters inside the model, "
                      f"which model {config.model.name!r} cannot; use --config.mesh.gather="
                      f"network, or a model in {sorted(models.LAYER_GATHER)}")
  methods.check(config)  # the method's own fields, and finetuning's


def check_data_reachable(config, hosts: int) -> None:
  """A run over several hosts (a TPU pod slice) reads its data set on every host, so a
  data set prepared on disk must be on gs://; "" (~/tensorflow_datasets) or a local path
  would have to be prepared on each host. Data sets that need no files pass."""
  if hosts <= 1 or "data_dir" not in config.data:
    return
  data_dir = str(config.data.data_dir)
  if not data_dir.startswith("gs://"):
    shown = data_dir or "~/tensorflow_datasets"
    raise ConfigError(
        f"data.data_dir={data_dir!r} ({shown}) is on one machine's disk, but this run "
        f"spans {hosts} hosts that each read {config.data.name}; prepare it once on gs:// "
        f"(tfds build ... --data_dir=gs://BUCKET/tensorflow_datasets) and set "
        f"--config.data.data_dir=gs://BUCKET/tensorflow_datasets")
