"""Reduced MPL: a frozen large teacher's logits, computed once, and a small reduced teacher
trained by MPL on top of them."""

import json

import jax
import numpy as np
import pytest

from mpl_jax import config_checks
from mpl_jax import experiment
from mpl_jax import multiseed
from mpl_jax import train
from mpl_jax.models import reduced_teacher
from tests.helpers import assert_close_on_scale, flat_params, tiny_config

# max|a - b| / max|b| (tests/helpers.py) of the logits the pipeline stored (batched over the
# whole data set) against the same network applied to one batch: worst 0 (bit-identical)
# over five XLA:CPU code paths of tools/tolerance_survey.py (RELIABILITY.md, "Numerical
# tolerances"); 1e-5 is the float32 floor.
TOL_BATCHING = 1e-5


def test_reduced_teacher_starts_as_the_identity_on_logits():
  module = reduced_teacher.ReducedTeacher(num_classes=10, hidden=(32,))
  logits = jax.random.normal(jax.random.key(0), (5, 10)) * 4
  params = module.init(jax.random.key(1), logits)
  np.testing.assert_array_equal(np.asarray(module.apply(params, logits)), np.asarray(logits))


def _large_teacher(tmp_path):
  """A finished supervised TwoMoon run: the large teacher."""
  c = tiny_config("supervised")
  c.num_steps = 20
  workdir = str(tmp_path / "large")
  result = train.train_and_evaluate(c, workdir)
  return workdir, result


def _reduced_config(large_workdir):
  c = tiny_config("reduced_mpl")
  c.num_steps = 20
  c.reduced_mpl.large_teacher_workdir = large_workdir
  c.reduced_mpl.hidden = (16,)
  return c


def test_reduced_mpl_trains_on_the_large_teachers_logits(tmp_path):
  large_workdir, large = _large_teacher(tmp_path)
  # A large teacher trained before fields were added to the config still loads.
  saved = json.loads((tmp_path / "large" / "config.json").read_text())
  del saved["accum_steps"], saved["mesh"]["model_axis"]
  (tmp_path / "large" / "config.json").write_text(json.dumps(saved))
  c = _reduced_config(large_workdir)
  exp = experiment.build(c)

  # The teacher's inputs are the large teacher's eval-mode logits of the very same rows.
  batch = exp.dataset.source.batch(3)
  apply = exp.deps.student.apply
  net = large.state.student
  expected_u = apply(net.params, net.model_state, batch["unlabeled_weak"], train=False)[0]
  expected_l = apply(net.params, net.model_state, batch["labeled_x"], train=False)[0]
  assert_close_on_scale(batch["teacher_unlabeled_x"], expected_u, TOL_BATCHING, "unlabeled")
  assert_close_on_scale(batch["teacher_labeled_x"], expected_l, TOL_BATCHING, "labeled")

  init = exp.init_fn(jax.random.split(jax.random.key(c.seed))[0])
  result = train.train_and_evaluate(c, str(tmp_path / "reduced"))
  state = result.state
  # The reduced teacher is small and it learned (its correction left zero).
  teacher_size = sum(x.size for x in jax.tree.leaves(state.teacher.params))
  assert teacher_size == 2 * 16 + 16 + 16 * 2 + 2
  assert np.abs(flat_params(state.teacher.params["Dense_1"])).max() > 0
  assert not np.allclose(flat_params(state.student.params), flat_params(init.student.params))
  assert "mpl/reward" in result.history
  results = json.loads((tmp_path / "reduced" / "results.json").read_text())
  assert results["method"] == "reduced_mpl"
  assert "eval/student_accuracy" in results and "eval/teacher_accuracy" not in results


def test_large_teacher_of_other_data_is_refused(tmp_path):
  large_workdir, _ = _large_teacher(tmp_path)
  c = _reduced_config(large_workdir)
  c.seed = 1  # other labeled points: the teacher's logits would leak their labels
  with pytest.raises(config_checks.ConfigError, match=r"trained on other data \(seed=0 there, "
                                                      r"1 here\)"):
    train.train_and_evaluate(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("change,expected", [
    ({}, "needs --config.reduced_mpl.large_teacher_workdir"),
    ({"large_teacher_workdir": "/nonexistent/run"}, "holds no finished run"),
    ({"large_teacher_workdir": "/tmp", "large_teacher_network": "ema"},
     "large_teacher_network='ema' is unknown"),
    ({"large_teacher_workdir": "/tmp", "uda.weight": 1.0}, "set --config.uda.weight=0"),
])
def test_bad_reduced_settings_fail_before_compute(tmp_path, change, expected):
  c = tiny_config("reduced_mpl")
  for field, value in change.items():
    if field == "uda.weight":
      c.uda.weight = value
    else:
      c.reduced_mpl[field] = value
  with pytest.raises(config_checks.ConfigError, match=expected):
    train.train_and_evaluate(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_reduced_teacher_step_holds_one_large_network():
  """The compiled reduced-MPL step's arguments (train state + batch) are about half of
  full MPL's: one image network instead of two (benchmarks/reduced_memory.py measures it
  at the paper's sizes)."""
  from benchmarks import reduced_memory  # pylint: disable=g-import-not-at-top
  rows = {r["variant"]: r for r in reduced_memory.measure(depth=10, width=1, labeled_batch=4,
                                                          mu=2, image_size=8)}
  full, small = rows["mpl"], rows["reduced_mpl"]
  assert small["teacher_params"] < 0.1 * full["teacher_params"]
  assert small["state_bytes"] < 0.65 * full["state_bytes"]  # student + EMA + momentum: 3 of 5
  assert small["peak_bytes"] < 0.6 * full["peak_bytes"]


def test_batch_sizes_are_checked_before_the_large_teacher_is_read(tmp_path):
  c = _reduced_config(str(tmp_path / "no_such_run"))
  c.data.labeled_batch_size = 6  # does not divide by the 8 devices
  with pytest.raises(config_checks.ConfigError, match=r"labeled_batch_size=6 does not divide"):
    train.train_and_evaluate(c, str(tmp_path / "w"))


def test_a_reduced_run_is_not_a_large_teacher(tmp_path):
  large_workdir, _ = _large_teacher(tmp_path)
  saved = json.loads((tmp_path / "large" / "config.json").read_text())
  saved["method"] = "reduced_mpl"
  (tmp_path / "large" / "config.json").write_text(json.dumps(saved))
  with pytest.raises(config_checks.ConfigError, match=r"is itself a reduced_mpl run"):
    train.train_and_evaluate(_reduced_config(large_workdir), str(tmp_path / "w"))


def test_a_damaged_large_teacher_checkpoint_is_reported_and_left_alone(tmp_path):
  """The large teacher's workdir belongs to another run: reading it changes nothing there."""
  from mpl_jax import checkpointing  # pylint: disable=g-import-not-at-top
  large_workdir, _ = _large_teacher(tmp_path)
  for data_file in (tmp_path / "large" / "checkpoints" / "20" / "state").rglob("d/*"):
    data_file.write_bytes(data_file.read_bytes()[:8])  # every array's bytes cut short
  before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "large").rglob("*"))
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=r"checkpoint 20 in .*large/checkpoints could not be read"):
    train.train_and_evaluate(_reduced_config(large_workdir), str(tmp_path / "w"))
  after = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "large").rglob("*"))
  assert after == before


def test_multiseed_evaluates_what_train_evaluates(tmp_path):
  """A teacher of another architecture (the reduced teacher reads logits, not images):
  multiseed evaluates the networks train.py evaluates, each with its own apply function,
  and gets the same accuracies."""
  large_workdir, _ = _large_teacher(tmp_path)
  c = _reduced_config(large_workdir)
  c.mesh.num_devices = 1
  seeds = multiseed.train_seeds(c, [c.seed])
  single = train.train_and_evaluate(c, str(tmp_path / "reduced"))
  evaluated = sorted(k for k in single.eval_metrics if k.startswith("eval/"))
  assert evaluated == ["eval/student_accuracy", "eval/student_ema_accuracy"]
  assert sorted(k for k in seeds.eval_metrics if k.startswith("eval/")) == evaluated
  for name in evaluated:
    assert abs(float(seeds.eval_metrics[name][0]) - single.eval_metrics[name]) < 0.01, name
