"""Reduced MPL's frozen large teacher (paper Appendix E): one large network in memory, not two.

A large teacher is trained first, by any method, in its own workdir, and frozen. At the
start of a `reduced_mpl` run its logits on every labeled and unlabeled example are
computed once (eval mode, un-augmented inputs) and the large network is dropped. MPL then
trains a small reduced teacher (`models.reduced_teacher.ReducedTeacher`, which starts as the
identity on those logits) together with the student: the reduced teacher reads the large
teacher's logits of each image instead of the image, and the student learns from its
pseudo labels on the image's strong view, as in MPL.

Only in-memory data sets are supported (the logits are held next to the arrays).
"""

import dataclasses
import json
from typing import Any

import jax
import ml_collections
import numpy as np

from mpl_jax import checkpointing
from mpl_jax import compiled
from mpl_jax import data as data_lib
from mpl_jax import files
from mpl_jax import methods
from mpl_jax import networks
from mpl_jax.errors import ConfigError
# Data fields that change how batches are drawn or augmented, not which examples are
# labeled, held out or tested: the large teacher may differ in these.
NOT_SPLIT_FIELDS = ("labeled_batch_size", "unlabeled_batch_size", "max_shift", "cutout_size",
                    "strong_noise")


def _split_fields(data: Any) -> Any:
  if not isinstance(data, dict):
    return data
  return {k: v for k, v in data.items() if k not in NOT_SPLIT_FIELDS}


def _first_difference(a: Any, b: Any, prefix: str) -> str | None:
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b)):
      found = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}")
      if found:
        return found
    return None
  return None if a == b else f"{prefix}={a!r} there, {b!r} here"


def large_teacher_config(config) -> ml_collections.ConfigDict:
  """The config the large teacher's workdir was trained with, checked against `config`.

  The large teacher must have been trained on the same data and splits (the same data
  section but for batch sizes and augmentation, and the same seed): otherwise its logits
  could carry labels this run must not see.
  """
  cfg = config.reduced_mpl
  workdir = cfg.large_teacher_workdir  # set: methods' check of reduced_mpl
  root = files.path(workdir)
  if not (root / "config.json").exists() or not (root / "results.json").exists():
    raise ConfigError(f"reduced_mpl.large_teacher_workdir={workdir} holds no finished run "
                      "(config.json and results.json); train the large teacher there first")
  saved = json.loads((root / "config.json").read_text())
  here = json.loads(json.dumps(config.to_dict(), default=str))
  saved_method = methods.METHODS.get(saved.get("method"))
  if saved_method is None:
    raise ConfigError(f"the run in {workdir} has method={saved.get('method')!r}, unknown "
                      f"here; valid: {list(methods.METHODS)}")
  if saved_method.needs_large_teacher:
    raise ConfigError(f"the run in {workdir} is itself a {saved_method.name} run; use the "
                      "large teacher's own workdir (or any run that trains its network on "
                      "images)")
  for section in ("data", "seed"):
    found = _first_difference(_split_fields(saved.get(section)), _split_fields(here[section]),
                              section)
    if found:
      raise ConfigError(f"the large teacher in {workdir} was trained on other data ({found}); "
                        "reduced MPL needs the same data splits and seed, so that its "
                        "logits carry no label this run must not see")
  if cfg.large_teacher_network == "teacher" and not saved_method.has_teacher:
    raise ConfigError(f"reduced_mpl.large_teacher_network=teacher but the run in {workdir} "
                      f"({saved['method']}) has no teacher; use student or student_ema")
  # A workdir written before fields were added to the config: those take today's values.
  return ml_collections.ConfigDict(_with_missing_fields(saved, here))


def _with_missing_fields(saved: dict, current: dict) -> dict:
  """`saved`, with fields added since it was written taken from `current` (defaults)."""
  out = dict(saved)
  for key, value in current.items():
    if key not in out:
      out[key] = value
    elif isinstance(out[key], dict) and isinstance(value, dict):
      out[key] = _with_missing_fields(out[key], value)
  return out


def precompute_logits(config, inputs: dict[str, np.ndarray], batch_size: int = 512
                      ) -> dict[str, np.ndarray]:
  """The frozen large teacher's eval-mode logits of each array in `inputs` (float32)."""
  teacher_config = large_teacher_config(config)
  nets = networks.build(teacher_config)
  abstract = jax.eval_shape(nets.init_fn, jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                        abstract)
  checkpointer = checkpointing.Checkpointer(
      files.path(config.reduced_mpl.large_teacher_workdir) / "checkpoints", max_to_keep=1,
      read_only=True)
  try:
    restored = checkpointer.restore(target, checkpointing.signature(teacher_config.method,
                                                                    abstract))
  finally:
    checkpointer.close()
  if restored is None:
    raise ConfigError(f"{config.reduced_mpl.large_teacher_workdir} has no checkpoint to read "
                      "the large teacher from")
  network = config.reduced_mpl.large_teacher_network
  net = getattr(restored[0], network)
  logits_fn = compiled.Compiled(nets, mesh=None, skip_nonfinite=False).predict(network)
  out = {}
  for name, x in inputs.items():
    parts = [np.asarray(logits_fn(net.params, net.model_state, x[i:i + batch_size]),
                        np.float32) for i in range(0, len(x), batch_size)]
    out[name] = np.concatenate(parts) if parts else np.zeros((0, nets.deps.num_classes),
                                                              np.float32)
  return out


def with_logits(config, dataset: data_lib.Dataset) -> data_lib.Dataset:
  """`dataset` whose batches also carry the frozen large teacher's logits of every labeled
  and unlabeled row, as `teacher_labeled_x` / `teacher_unlabeled_x` (computed once)."""
  source = dataset.source  # held in memory: methods' check of reduced_mpl
  logits = precompute_logits(config, {"labeled": source.labeled_x,
                                      "unlabeled": source.unlabeled_x})
  return dataclasses.replace(dataset, source=dataclasses.replace(
      source, labeled_extra={"teacher_labeled_x": logits["labeled"]},
      unlabeled_extra={"teacher_unlabeled_x": logits["unlabeled"]}))
