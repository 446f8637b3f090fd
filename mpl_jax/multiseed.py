"""Many seeds of one config in one process: the same pure steps under `jax.vmap`.

For small models (TwoMoon, digits) a Python loop of tiny steps is dispatch-bound; stacking
S seeds along a leading axis runs them for the price of about one. Each seed gets exactly
the data, initialization and randomness `train.train_and_evaluate` would give it, so a
seed's result here matches a single run up to float reassociation. No checkpoints: this
is for sweeps and reports, not for long runs.
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mpl_jax import compiled as compiled_lib
from mpl_jax import config_checks
from mpl_jax import experiment as experiment_lib


@dataclasses.dataclass
class SeedsResult:
  seeds: list[int]
  eval_metrics: dict[str, np.ndarray]      # name -> [num_seeds], incl. non-finite steps
  history: dict[str, np.ndarray]           # name -> [num_logs, num_seeds]
  history_steps: np.ndarray                # [num_logs]
  states: object                           # stacked final TrainState on the host


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def train_seeds(config, seeds: Sequence[int]) -> SeedsResult:
  """Trains `config` once per seed, all seeds at once; returns per-seed eval accuracies."""
  config_checks.validate(config)
  exps = []
  for seed in seeds:
    cfg = config.copy_and_resolve_references()
    cfg.seed = int(seed)
    exps.append(experiment_lib.build(cfg))
  exp = exps[0]
  keys = [jax.random.split(jax.random.key(int(s))) for s in seeds]
  init_keys = jnp.stack([k[0] for k in keys])
  train_keys = jnp.stack([k[1] for k in keys])
  run = compiled_lib.Compiled(exp, mesh=None, skip_nonfinite=config.skip_nonfinite,
                              seeds=len(exps))
  state = run.init(init_keys)

  history: dict[str, list] = {}
  history_steps = []
  for step in range(exp.total_steps):
    phase = exp.phase_at(step)
    batch = _stack([e.dataset.source.batch(step) for e in exps])
    state, metrics = run.step(phase)(state, batch, train_keys)
    if (step + 1) % config.log_every_steps == 0:
      history_steps.append(step + 1)
      for k, v in jax.device_get(metrics).items():
        history.setdefault(k, []).append(np.asarray(v))

  eval_x = np.stack([e.dataset.eval_x for e in exps])
  eval_y = np.stack([e.dataset.eval_y for e in exps])
  evals = {}
  for name in exp.evaluated:  # the networks train.py evaluates, each with its own apply
    net = getattr(state, name)
    logits = np.asarray(run.predict(name)(net.params, net.model_state, eval_x))
    evals[f"eval/{name}_accuracy"] = (logits.argmax(-1) == eval_y).mean(axis=1)
  # -1 where a seed stayed finite; else its first step with a NaN/Inf metric.
  evals["train/first_nonfinite_step"] = np.asarray(state.first_nonfinite_step)
  evals["train/skipped_steps"] = np.asarray(state.skipped_steps)
  return SeedsResult(seeds=[int(s) for s in seeds], eval_metrics=evals,
                     history={k: np.stack(v) for k, v in history.items()},
                     history_steps=np.asarray(history_steps), states=jax.device_get(state))
