"""The training loop: set-up, the compiled steps (`mpl_jax.compiled`), checkpoints, metrics,
evaluation.

`train_and_evaluate(config, workdir)` is what main.py, the demo and the tests call.
"""

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from etils import epath

from mpl_jax import checkpointing
from mpl_jax import compiled as compiled_lib
from mpl_jax import config_checks
from mpl_jax import evaluate
from mpl_jax import experiment as experiment_lib
from mpl_jax import files
from mpl_jax import guards
from mpl_jax import plots
from mpl_jax import sharding

CONSOLE_KEYS = ("loss", "reward", "accuracy", "feedback_to_supervised")


class NonFiniteError(FloatingPointError):
  """A loss or metric became NaN or Inf."""


@dataclasses.dataclass
class TrainResult:
  state: Any                 # the final TrainState, on the host
  eval_metrics: dict[str, float]
  experiment: experiment_lib.Experiment
  history: dict[str, list[float]]  # logged step metrics of this invocation, by name
  preempted: bool = False          # stopped by SIGTERM/preemption after a checkpoint


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _check_finite(metrics: dict[str, float], step: int, checkpointer,
                  skip_nonfinite: bool) -> None:
  """Raises NonFiniteError (unless skipping) if any step so far had a non-finite metric."""
  first = int(metrics["train/first_nonfinite_step"])
  if first < 0 or skip_nonfinite:
    return
  bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
  what = ", ".join(bad) if bad else "a loss, gradient or reward"
  last = checkpointer.latest_step()
  kept = (f"the newest checkpoint (step {last}) predates it" if last is not None
          else "no checkpoint was written")
  raise NonFiniteError(
      f"non-finite {what} at step {first} (seen at step {step}); stopped, {kept}; lower "
      "the learning rates, inspect the data, or set --config.skip_nonfinite=True")


def _global_eval_batches(batches, mesh: jax.sharding.Mesh):
  """Padded (x, y, mask) host batches, identical on every process, as global arrays
  with rows split over the mesh: each device scores its rows, across processes too."""
  for batch in batches:
    yield tuple(sharding.global_rows(np.asarray(part), mesh) for part in batch)


def _evaluate(run: compiled_lib.Compiled, dataset, state, batch_size: int,
              split: str = "eval") -> dict[str, float]:
  """Accuracy of each evaluated network (`Networks.evaluated`: the student, its EMA and
  a teacher that reads images) on `eval` (validation) or `test`: `{split}/{net}_accuracy`
  (top-1) and, with more than 5 classes, `..._top5_accuracy`; on `real` (the test images'
  ImageNet-ReaL labels): `test/{net}_real_accuracy`."""
  out = {}
  for name in run.nets.evaluated:
    net = getattr(state, name)
    batches = _global_eval_batches(dataset.eval_batches(split, batch_size), run.mesh)
    if split == "real":
      out[f"test/{name}_real_accuracy"] = evaluate.real_accuracy(
          run.real_counts(name), net.params, net.model_state, batches)
      continue
    acc = evaluate.accuracy(run.eval_counts(name), net.params, net.model_state, batches)
    out[f"{split}/{name}_accuracy"] = acc["top1"]
    if dataset.num_classes > 5:
      out[f"{split}/{name}_top5_accuracy"] = acc["top5"]
  return out


def _to_host(state, replicated: jax.sharding.NamedSharding):
  """The state as host arrays, on every process. Arrays split over devices of other
  processes (a model axis across processes) are first gathered by a jit."""
  if not all(leaf.is_fully_addressable or leaf.is_fully_replicated
             for leaf in jax.tree.leaves(state)):
    state = jax.jit(lambda s: s, out_shardings=replicated)(state)
  return jax.device_get(state)


def _record_phase_end(root: epath.Path, phase: str, step: int, evals: dict[str, float]) -> None:
  """Keeps each finished phase's evaluation (phase_ends.json) for results.json."""
  path = root / "phase_ends.json"
  record = files.read_json(path)
  record[phase] = {"step": step, **evals}
  files.write_json(path, record)


# main.py's exit status after a preemption (SIGTERM) once its checkpoint is saved: "not
# finished, start me again" (EX_TEMPFAIL), for launch/watch.sh and SLURM requeues.
PREEMPTED_EXIT_CODE = 75


def train_and_evaluate(config, workdir: str) -> TrainResult:
  """Trains `config.method` in `workdir`, resuming from its newest checkpoint if any."""
  config_checks.validate(config)
  if jax.default_backend() == "tpu":  # pod hosts share no disk
    config_checks.check_data_reachable(config, jax.process_count())
  mesh = sharding.make_mesh(config.mesh.num_devices, config.mesh.model_axis)

  def check_batches(dataset) -> None:
    for name, size in experiment_lib.batch_sizes(dataset).items():
      sharding.check_batch_divides(name, size, mesh, config.accum_steps)
    sharding.check_batch_divides("eval.batch_size", config.eval.batch_size, mesh)

  exp = experiment_lib.build(config, mesh, check_data=check_batches)

  run = compiled_lib.Compiled(exp, mesh, skip_nonfinite=config.skip_nonfinite)
  rng_init, rng_train = jax.random.split(jax.random.key(config.seed))
  restore_target = run.abstract_state()  # replicated, or FSDP
  replicated = run.replicated
  meta = checkpointing.signature(config.method, restore_target)

  root = files.path(workdir)  # local or gs://; every process may create it
  root.mkdir(parents=True, exist_ok=True)
  checkpointer = checkpointing.Checkpointer(
      root / "checkpoints", max_to_keep=config.checkpoint.max_to_keep)
  restored = checkpointer.restore(restore_target, meta)  # refuses other experiments' dirs
  is_main = jax.process_index() == 0
  if restored is None:
    state = run.init(rng_init)
    start = 0
    if is_main:  # every file outside checkpoints/ is written by process 0 alone
      files.write_json(root / "config.json", config.to_dict())
      if "normalization" in exp.dataset.extras:  # the input statistics the run uses
        files.write_json(root / "normalization.json", exp.dataset.extras["normalization"])
  else:
    state, start = restored
    logging.info("Resumed from %s at step %d", checkpointer.directory, start)
    print(f"[{config.method}] resumed from step {start} in {workdir}", flush=True)
    recorded = root / "normalization.json"
    stats = exp.dataset.extras.get("normalization")
    if stats and recorded.exists() and files.read_json(recorded) != stats:
      checkpointer.close()
      raise config_checks.ConfigError(
          f"the training images' statistics {stats} differ from those this run started with "
          f"({recorded}); restore the images, give --config.data.mean and "
          "--config.data.std as recorded there, or use a new workdir")
    first = files.read_json(root / "config.json") if is_main else {}
    if first and first != json.loads(json.dumps(config.to_dict(), default=str)):
      changed = root / f"config.resumed_at_{start}.json"
      files.write_json(changed, config.to_dict())
      print(f"[{config.method}] warning: the config differs from the one this run started "
            f"with (config.json); it is saved as {changed}", flush=True)

  writer = metric_writers.create_default_writer(
      os.fspath(root / "tensorboard"), just_logging=not is_main, asynchronous=True)
  total = exp.total_steps
  # Replicated over the mesh by a jit (device_put cannot target other processes' devices).
  rng_train = jax.jit(lambda key: key, out_shardings=replicated)(rng_train)
  last_time, last_step = time.time(), start
  history: dict[str, list[float]] = {}
  preempted = False
  done = start
  per_process = exp.dataset.source.per_process
  try:
    with guards.PreemptionSignal(install=jax.process_count() == 1) as preemption:
      for step in range(start, total):
        phase = exp.phase_at(step)
        host_batch = exp.dataset.source.batch(step)
        if step == config.faults.nan_batch_at_step:
          host_batch = guards.corrupt_batch(host_batch)
        global_batch = sharding.to_global(host_batch, mesh, local=per_process)
        state, metrics = run.step(phase)(state, global_batch, rng_train)
        done = step + 1
        # One process: our SIGTERM handler. Several: orbax's preemption sync point, which
        # every process reaches at the same step (JAX's own handler stays installed).
        preempted = (preemption.requested or step == config.faults.preempt_at_step or (
            jax.process_count() > 1 and checkpointer.manager.reached_preemption(done)))
        save_now = done % config.checkpoint.every_steps == 0 or done == total or preempted
        phase_end = done == exp.phase_end(phase) and done < total
        if done % config.log_every_steps == 0 or save_now or phase_end:
          host_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
          _check_finite(host_metrics, done, checkpointer, config.skip_nonfinite)
          if done % config.log_every_steps == 0:
            now = time.time()
            rate = (done - last_step) / max(now - last_time, 1e-9)
            last_time, last_step = now, done
            writer.write_scalars(done, {**host_metrics, "steps_per_sec": rate})
            for k, v in host_metrics.items():
              history.setdefault(k, []).append(v)
            shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(host_metrics.items())
                             if any(s in k for s in CONSOLE_KEYS))
            if is_main and config.print_progress:
              print(f"[{config.method}:{phase.name}] step {done}/{total} {shown} "
                    f"{rate:.1f} steps/s ETA {_format_eta((total - done) / rate)}", flush=True)
        periodic_eval = (done % config.eval.every_steps == 0 or done == total) and not preempted
        if periodic_eval or phase_end:  # a phase end is recorded even when preempted
          evals = _evaluate(run, exp.dataset, state, config.eval.batch_size)
          writer.write_scalars(done, evals)
          if phase_end and is_main:  # e.g. the student before finetuning
            _record_phase_end(root, phase.name, done, evals)
        if save_now:
          checkpointer.save(done, state, meta)
        if preempted:
          break
  finally:
    exp.dataset.close()  # input threads must not outlive the loop (they block exit)
    checkpointer.wait()  # in-flight saves land even when the loop raises
    checkpointer.close()
    writer.flush()  # the metrics before a failure are what explains it
    if preempted or sys.exc_info()[0] is not None:
      writer.close()

  if preempted:
    print(f"[{config.method}] preempted: checkpoint saved at step {done} in "
          f"{checkpointer.directory}; rerun the same command to resume", flush=True)
    return TrainResult(state=_to_host(state, replicated), eval_metrics={}, experiment=exp,
                       history=history, preempted=True)
  final = _evaluate(run, exp.dataset, state, config.eval.batch_size)
  for split in ("test", "real"):  # the test split and its ReaL labels: once, at the end
    if exp.dataset.has_split(split):
      final.update(_evaluate(run, exp.dataset, state, config.eval.batch_size, split=split))
  final["train/skipped_steps"] = int(jax.device_get(state.skipped_steps))
  writer.write_scalars(total, final)
  writer.close()
  if is_main:
    files.write_json(root / "results.json",
                     {"method": config.method, "step": total, **final,
                      "phase_ends": files.read_json(root / "phase_ends.json")})
    try:  # a figure is a convenience: failing to draw it does not fail the run
      plots.write_curves(root)
    except Exception as err:  # pylint: disable=broad-except
      logging.warning("Could not draw %s: %s", root / plots.CURVES_FILE, err)
  return TrainResult(state=_to_host(state, replicated), eval_metrics=final, experiment=exp,
                     history=history)


def predict_numpy(exp: experiment_lib.Experiment, params, model_state, x: np.ndarray
                  ) -> np.ndarray:
  """Eval-mode logits on host inputs (for plots and notebooks)."""
  run = compiled_lib.Compiled(exp, mesh=None, skip_nonfinite=False)
  return np.asarray(run.predict("student")(params, model_state, x))
