"""Faults never cost a run: SIGKILL at random moments, SIGTERM, NaN, damaged checkpoints."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mpl_jax import train
from tests.helpers import (ROOT, checkpoint_steps, flat_params, read_checkpoint, run_main,
                           tiny_config)

STEPS = 3000
COMMON = ["--config=configs/twomoon.py:mpl", f"--config.num_steps={STEPS}",
          "--config.data.num_points=400", "--config.eval.every_steps=3000",
          "--config.checkpoint.max_to_keep=2"]


def _popen(args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             **_compile_cache_env())
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)


def _compile_cache_env():
  """A persistent XLA cache shared by the restarts, so each one skips recompiling."""
  cache = os.path.join(os.environ.get("PYTEST_CACHE_ROOT", "/tmp"), "mpl_jax_test_xla_cache")
  return {"JAX_COMPILATION_CACHE_DIR": cache,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _assert_same_final_state(workdir_a, workdir_b):
  a, b = read_checkpoint(str(workdir_a), STEPS), read_checkpoint(str(workdir_b), STEPS)
  for net in ("student", "teacher", "student_ema"):
    np.testing.assert_array_equal(flat_params(b[net]["params"]), flat_params(a[net]["params"]))
  assert float(a["reward_baseline"]) == float(b["reward_baseline"])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  result = run_main(COMMON + ["--config.checkpoint.every_steps=1000", "--config.print_progress=False",
                              f"--workdir={workdir}"])
  assert result.returncode == 0, result.stderr[-2000:]
  return workdir


@pytest.mark.serial  # kills timed to the millisecond against async saves
@pytest.mark.parametrize("min_kills", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_random_sigkills_then_resume_is_bit_identical(tmp_path, straight_run, min_kills):
  """Kill -9 at random moments (checkpoints every 10 steps, so saves are in flight):
  `min_kills` kills, more (up to 10) until one has landed during a checkpoint save.
  `make test` runs 3 (each kill is a fresh process: ~13 s); `make test-all` runs 10."""
  rng = random.Random(0)
  workdir = tmp_path / "killed"
  args = COMMON + ["--config.checkpoint.every_steps=10", "--config.print_progress=False",
                   f"--workdir={workdir}"]
  kills = kills_during_save = 0
  while kills < min_kills or (not kills_during_save and kills < 10):
    before = max(checkpoint_steps(str(workdir)), default=0)
    proc = _popen(args)
    deadline = time.time() + 120
    while time.time() < deadline and max(checkpoint_steps(str(workdir)), default=0) <= before:
      time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.15))
    in_flight = [d for d in os.listdir(workdir / "checkpoints") if "tmp" in d]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert max(checkpoint_steps(str(workdir))) < STEPS, "the run finished before the kill"
    kills += 1
    kills_during_save += bool(in_flight)
  print(f"\nSIGKILLs: {kills}, during a checkpoint save: {kills_during_save}")
  assert kills_during_save >= 1, "no kill landed during a checkpoint save"
  final = run_main(args)
  assert final.returncode == 0, final.stderr[-2000:]
  _assert_same_final_state(straight_run, workdir)


@pytest.mark.serial  # two signals timed against the training loop
def test_sigterm_checkpoints_the_current_step_and_exits_zero(tmp_path, straight_run):
  workdir = tmp_path / "term"
  args = COMMON + ["--config.checkpoint.every_steps=1000", "--config.log_every_steps=100",
                   f"--workdir={workdir}"]
  proc = _popen(args)
  for line in proc.stdout:  # wait until training is under way
    if "step 200/" in line:
      break
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGTERM)  # a second signal during the save changes nothing
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 75  # not finished: a supervisor starts it again
  saved = checkpoint_steps(str(workdir))
  assert len(saved) == 1 and 200 <= saved[0] < 1000, saved  # the current step, not a periodic one
  assert f"preempted: checkpoint saved at step {saved[0]}" in out
  assert not (workdir / "results.json").exists()
  resumed = run_main(args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resumed from step {saved[0]}" in resumed.stdout
  _assert_same_final_state(straight_run, workdir)


def test_injected_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  c = tiny_config("mpl")
  c.faults.nan_batch_at_step = 14  # the 15th step
  c.checkpoint.every_steps = 10
  with pytest.raises(train.NonFiniteError, match=r"non-finite .*loss.* at step 15 "):
    train.train_and_evaluate(c, str(tmp_path))
  assert checkpoint_steps(str(tmp_path)) == [10]  # saved every 10; step 20 was never saved
  good = read_checkpoint(str(tmp_path), 10)
  assert np.all(np.isfinite(flat_params(good["teacher"]["params"])))


def test_skip_nonfinite_finishes_and_counts_one_skipped_step(tmp_path):
  c = tiny_config("mpl")
  c.faults.nan_batch_at_step = 14
  c.skip_nonfinite = True
  result = train.train_and_evaluate(c, str(tmp_path))
  assert result.eval_metrics["train/skipped_steps"] == 1
  assert json.loads((tmp_path / "results.json").read_text())["train/skipped_steps"] == 1
  assert int(result.state.first_nonfinite_step) == 15
  for net in ("student", "teacher"):
    assert np.all(np.isfinite(flat_params(getattr(result.state, net).params)))


def _damage_array_data(folder):
  """Cuts every array-data file of a checkpoint (OCDBT's d/ folders) in half."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs
           if os.path.basename(d) == "d"]
  assert files
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
  c = tiny_config("mpl")
  c.checkpoint.every_steps = 20
  straight = train.train_and_evaluate(c, str(tmp_path / "straight")).state  # 40 steps
  workdir = tmp_path / "damaged"
  c.num_steps = 20
  train.train_and_evaluate(c, str(workdir))
  c.num_steps = 30
  c.checkpoint.every_steps = 30
  train.train_and_evaluate(c, str(workdir))
  assert checkpoint_steps(str(workdir)) == [20, 30]
  _damage_array_data(workdir / "checkpoints" / "30" / "state")
  capsys.readouterr()
  c.num_steps = 40
  c.checkpoint.every_steps = 20
  resumed = train.train_and_evaluate(c, str(workdir)).state
  err = capsys.readouterr().err
  assert "warning: checkpoint 30" in err and "is damaged" in err
  assert [d.split("-")[0] for d in os.listdir(workdir / "damaged_checkpoints")] == ["30"]
  for net in ("student", "teacher"):
    np.testing.assert_array_equal(flat_params(getattr(resumed, net).params),
                                  flat_params(getattr(straight, net).params))
