"""Trains one experiment: python main.py --config=configs/<experiment>.py --workdir=DIR."""

import re
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_PREFLIGHT = flags.DEFINE_integer(
    "preflight_hosts", 0, "Only check the config for a run over this many hosts, then exit "
    "(0 if it can run, 2 with the error); launch/run.sh calls it before starting a pod.")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv):
  """absl flag parsing, with a one-line error for a misspelled --config.<field> override."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    text = str(e).replace("\\n", " ").replace("\n", " ").strip("'\" ")
    guess = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    if guess:
      text = f"no config field {guess.group(2)!r}; did you mean {guess.group(1)!r}?"
    print(f"error: bad --config override: {text}", file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


def _load_config():
  """The --config value; exits 2 with one line if its file could not be loaded."""
  try:
    config = _CONFIG.value
    config.to_dict()  # a file that failed to load raises here
  except OSError as e:
    print(f"error: --config: {str(e).strip().splitlines()[-1].strip()}", file=sys.stderr)
    sys.exit(2)
  return config


def _preflight(hosts: int) -> int:
  """Validates the config (with the checks a run over `hosts` hosts adds); no JAX work."""
  from mpl_jax import config_checks  # pylint: disable=g-import-not-at-top
  config = _load_config()
  try:
    config_checks.validate(config)
    config_checks.check_data_reachable(config, hosts)
  except config_checks.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"ok: {config.method} on {config.data.name} can run over {hosts} host(s)")
  return 0


def main(argv):
  del argv
  if _PREFLIGHT.value:
    sys.exit(_preflight(_PREFLIGHT.value))
  from mpl_jax import xla_options  # pylint: disable=g-import-not-at-top
  xla_options.set_up_entry_point()  # before JAX starts; MPL_CPU_CONVOLUTIONS, log level
  # Before any other JAX call: join the other processes of a multi-host run, if any.
  from mpl_jax import distributed  # pylint: disable=g-import-not-at-top
  try:
    distributed.maybe_initialize()  # MPL_DISTRIBUTED=auto|never|always; see the module
  except distributed.DistributedError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  # Keep TensorFlow (used by input pipelines and writers) off any GPU/TPU JAX uses.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from mpl_jax import config_checks  # pylint: disable=g-import-not-at-top
  from mpl_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from mpl_jax import train  # pylint: disable=g-import-not-at-top
  config = _load_config()
  try:
    result = train.train_and_evaluate(config, _WORKDIR.value)
  except (config_checks.ConfigError, checkpointing.IncompatibleCheckpointError,
          train.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if result.preempted:  # checkpoint saved; launch/ supervisors start it again
    sys.exit(train.PREEMPTED_EXIT_CODE)
  print(" ".join(f"{k}={v:.4f}" for k, v in sorted(result.eval_metrics.items())))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
