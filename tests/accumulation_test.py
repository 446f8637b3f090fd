"""Gradient accumulation: k micro-batches give the update of one k-times-larger batch."""

import dataclasses

import jax
import numpy as np
import pytest

from configs import digits
from mpl_jax import accumulation
from mpl_jax import config_checks
from mpl_jax import experiment
from mpl_jax import train
from mpl_jax.steps import baselines as baseline_steps
from mpl_jax.steps import mpl as mpl_steps
from tests.helpers import assert_close_on_scale, flat_params, tiny_config

UDA_THRESHOLD = 0.85  # masks part of the unlabeled rows (about 60% kept)
# max|a - b| / max|b| (tests/helpers.py) of k micro-batches against the whole batch: at
# least 10x the worst figures of tools/tolerance_survey.py over five XLA:CPU code paths
# (RELIABILITY.md, "Numerical tolerances"), never below 1e-5.
TOL_STATE = 2e-5  # each tensor of the parameters, EMA, statistics, baseline: worst 1.7e-6
TOL_METRICS = 1e-5  # each logged scalar on its own scale: worst 7.4e-7
TOL_BATCHNORM = 2e-5  # WRN-10-1 with BatchNorm: worst 1.2e-6



def _method_step(exp, config):
  """The step of the method's last phase (pseudo labels: the student's), from the method
  registry, with the deps given at call time."""
  return lambda s, b, r, deps: exp.method.phases(config, deps)[-1].step_fn(s, b, r)


def _state_trees(state) -> dict[str, object]:
  """The state's parts, each a pytree of numpy arrays (each tensor compared on its scale)."""
  nets = {"student": state.student, "student_ema": state.student_ema}
  if state.teacher is not None:
    nets["teacher"] = state.teacher
  out = {f"{name}/params": jax.device_get(net.params) for name, net in nets.items()}
  out.update({f"{name}/model_state": jax.device_get(net.model_state)
              for name, net in nets.items() if jax.tree.leaves(net.model_state)})
  out["reward_baseline"] = np.asarray(state.reward_baseline)
  return out


def _one_step(exp, step_fn, batch, accum_steps: int, rng, num_steps: int = 1):
  deps = dataclasses.replace(exp.deps, accum_steps=accum_steps)
  state = exp.init_fn(jax.random.key(0))
  fn = jax.jit(lambda s, b: step_fn(s, b, rng, deps=deps))
  for _ in range(num_steps):
    state, metrics = fn(state, batch)
  return state, {k: float(v) for k, v in metrics.items()}


def _compare(exp, step_fn, batch, k: int, num_steps: int = 3, fixed_teacher=False):
  rng = jax.random.key(1)
  init = _state_trees(exp.init_fn(jax.random.key(0)))
  big, big_metrics = _one_step(exp, step_fn, batch, 1, rng, num_steps)
  micro, micro_metrics = _one_step(exp, step_fn, batch, k, rng, num_steps)
  big, micro = _state_trees(big), _state_trees(micro)
  for name in big:
    if name.endswith("params") and not (name.startswith("teacher") and fixed_teacher):
      assert not np.allclose(flat_params(big[name]), flat_params(init[name])), \
          f"{name} did not train"
    assert_close_on_scale(micro[name], big[name], TOL_STATE, name)
  assert set(micro_metrics) == set(big_metrics)
  for name, value in big_metrics.items():
    assert_close_on_scale(micro_metrics[name], value, TOL_METRICS, name)
  return big_metrics


def _twomoon(method: str, **mpl):
  c = tiny_config(method)
  c.data.labeled_batch_size = 16
  c.uda.weight = 1.0  # the teacher's (or UDA's) consistency loss takes part,
  c.uda.temperature = 0.5
  c.uda.threshold = UDA_THRESHOLD  # its confidence mask drops some rows,
  c.data.strong_noise = 0.1  # and the strong view differs from the weak one
  c.model.activation, c.model.init_scale = "tanh", 1.0  # outputs that vary over the inputs
  c.uda.ramp_steps = 1
  c.student.wait_steps = 0
  c.mpl.labels = "argmax"  # deterministic pseudo labels: equal, not only in distribution
  c.pseudo_labels.teacher_steps = 1  # the pseudo-labels student waits for its teacher
  for key, value in mpl.items():
    c.mpl[key] = value
  exp = experiment.build(c)
  return exp, exp.dataset.source.batch(0), c


@pytest.mark.parametrize("method,mpl,partial_mask", [
    ("supervised", {}, False),
    ("uda", {}, True),
    ("pseudo_labels", {}, False),
    ("mpl", {"reward": "dot"}, True),
    ("mpl", {"reward": "taylor", "baseline_decay": 0.9, "log_grad_parts": True}, False),
    ("mpl", {"estimator": "off"}, True),
])
def test_micro_batches_equal_the_large_batch(method, mpl, partial_mask):
  """MLPs (no BatchNorm, no dropout): parameters, EMA, baseline and every logged metric
  after three steps with 4 micro-batches equal those of the whole batch at once."""
  exp, batch, config = _twomoon(method, **mpl)
  metrics = _compare(exp, _method_step(exp, config), batch, k=4,
                     fixed_teacher=method == "pseudo_labels")
  if method in ("uda", "mpl"):  # the consistency loss took part (on some rows only)
    assert 0.0 < metrics["uda/mask_rate"] <= 1.0
    assert metrics["uda/mask_rate"] < 1.0 or not partial_mask
  if "teacher/grad_norm_uda" in metrics:
    assert metrics["teacher/grad_norm_uda"] > 0.0


def test_finetune_micro_batches_equal_the_large_batch():
  exp, batch, _ = _twomoon("mpl")
  step_fn = lambda s, b, r, deps: baseline_steps.finetune_step(s, b, r, deps=deps, first_step=0)
  _compare(exp, step_fn, batch, k=2, fixed_teacher=True)


@pytest.mark.slow  # a BatchNorm WRN's step compiled for 1 and k micro-batches
def test_batchnorm_statistics_follow_the_mean_of_the_micro_batches():
  """WRN-10-1 with BatchNorm: a batch made of k copies of each row splits into k micro-batches
  that each equal the original batch, so the accumulated step on it must equal the plain
  step on the original batch: parameters and running statistics (normalized per
  micro-batch, moved once toward the mean of the micro-batches' statistics)."""
  c = digits.get_config("mpl")
  c.model.dropout_rate = 0.0
  c.mpl.labels = "argmax"
  c.student.wait_steps = 0
  c.data.unlabeled_batch_size = 32
  exp = experiment.build(c)
  batch = exp.dataset.source.batch(0)
  k = 2
  repeated = {name: np.repeat(v, k, axis=0) for name, v in batch.items()}
  rng = jax.random.key(1)
  plain, _ = _one_step(exp, mpl_steps.mpl_step, batch, 1, rng, num_steps=2)
  accumulated, _ = _one_step(exp, mpl_steps.mpl_step, repeated, k, rng, num_steps=2)
  plain, accumulated = _state_trees(plain), _state_trees(accumulated)
  assert "student/model_state" in plain and "teacher/model_state" in plain
  for name in plain:
    assert_close_on_scale(accumulated[name], plain[name], TOL_BATCHNORM, name)


@pytest.mark.slow  # as above
def test_batchnorm_running_statistics_are_the_mean_over_distinct_micro_batches():
  """Distinct micro-batches: after one accumulated step the running statistics of student
  and teacher equal the mean of those that plain steps on each micro-batch alone reach
  (each moves from the same start toward its own micro-batch's statistics)."""
  c = digits.get_config("mpl")
  c.model.dropout_rate = 0.0
  c.mpl.labels = "argmax"
  c.data.unlabeled_batch_size = 32
  exp = experiment.build(c)
  batch = exp.dataset.source.batch(0)
  k = 2
  rng = jax.random.key(1)
  accumulated, _ = _one_step(exp, mpl_steps.mpl_step, batch, k, rng)
  micro = accumulation.micro_batches(batch, k)
  alone = [_one_step(exp, mpl_steps.mpl_step, {n: np.asarray(v[i]) for n, v in micro.items()},
                     1, rng)[0] for i in range(k)]
  for net in ("student", "teacher"):
    got = jax.device_get(getattr(accumulated, net).model_state)
    each = [jax.device_get(getattr(s, net).model_state) for s in alone]
    # the micro-batches' statistics differ
    assert not np.allclose(flat_params(each[0]), flat_params(each[1]))
    mean = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *each)
    assert_close_on_scale(got, mean, TOL_BATCHNORM, net)


def test_micro_batch_rows_are_interleaved():
  x = np.arange(12)
  micro = accumulation.micro_batches({"x": x}, 3)["x"]
  np.testing.assert_array_equal(np.asarray(micro), [[0, 3, 6, 9], [1, 4, 7, 10],
                                                    [2, 5, 8, 11]])


def test_training_loop_on_eight_devices_matches_the_large_batch(tmp_path):
  """The same through train_and_evaluate, sharded over 8 devices: 2 micro-batches."""
  results = {}
  for k in (1, 2):
    c = tiny_config("mpl")
    c.num_steps = 10
    c.data.labeled_batch_size = 16
    c.mpl.labels = "argmax"
    c.accum_steps = k
    results[k] = train.train_and_evaluate(c, str(tmp_path / f"k{k}")).state
  for net in ("student", "teacher"):
    assert_close_on_scale(jax.device_get(getattr(results[2], net).params),
                          jax.device_get(getattr(results[1], net).params), TOL_STATE, net)


@pytest.mark.parametrize("changes,expected", [
    ({"accum_steps": 0}, "accum_steps=0 must be an integer >= 1"),
    ({"accum_steps": 2, "mpl.estimator": "meta"},
     "accum_steps=2 does not support mpl.estimator=meta"),
])
def test_bad_accumulation_settings_fail_before_compute(changes, expected):
  c = tiny_config("mpl")
  for field, value in changes.items():
    if "." in field:
      section, key = field.split(".")
      c[section][key] = value
    else:
      c[field] = value
  with pytest.raises(config_checks.ConfigError, match=expected):
    config_checks.validate(c)


def test_batch_that_does_not_split_into_micro_batches(tmp_path):
  c = tiny_config("mpl")  # labeled batch 8 over 8 devices: 1 row each, not 2 micro-batches
  c.accum_steps = 2
  with pytest.raises(config_checks.ConfigError,
                     match=r"labeled_batch_size=8 does not divide into accum_steps=2 "
                           r"micro-batches over the 8 devices.*multiple of 16"):
    train.train_and_evaluate(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
