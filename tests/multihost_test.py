"""Two processes (4 CPU devices each, jax.distributed on localhost) train like one process
with 8 devices, and each layout resumes the other's checkpoints."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from mpl_jax import train
from tests.helpers import ROOT, assert_close_on_scale, checkpoint_steps, read_checkpoint
from tests.helpers import tiny_config

STEPS = 40           # tiny_config: checkpoints and evaluations at 20 and 40
# max|a - b| / max|b| (tests/helpers.py) of each saved array, two processes against one: at
# least 10x the worst figure of tools/tolerance_survey.py over five XLA:CPU code paths
# (RELIABILITY.md, "Numerical tolerances"): 1.0e-6, a bias with 128-bit vectors.
TOL_PROCESSES = 2e-5
RESUMED_STEPS = 60   # the cross-layout resumes go on to here
CONFIG_FILE = '''
from tests.helpers import tiny_config


def get_config():
  return tiny_config("mpl")
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _main_on_two_processes(tmp_path, workdir, num_steps: int, *extra: str) -> list[str]:
  """main.py as processes 0 and 1 of a localhost cluster; their stdouts."""
  config = tmp_path / "tiny_config.py"
  config.write_text(CONFIG_FILE)
  base = {k: v for k, v in os.environ.items() if not k.startswith(("MPL_", "SLURM_"))}
  env = dict(base, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=(base.get("XLA_FLAGS", "") +
                        " --xla_force_host_platform_device_count=4").strip(),
             MPL_COORDINATOR_ADDRESS=f"localhost:{_free_port()}", MPL_NUM_PROCESSES="2")
  args = [sys.executable, os.path.join(ROOT, "main.py"), f"--config={config}",
          f"--config.num_steps={num_steps}", f"--workdir={workdir}", *extra]
  procs = [subprocess.Popen(args, cwd=ROOT, env=dict(env, MPL_PROCESS_ID=str(i)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, (_, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}: {err[-3000:]}"
  return [out for out, _ in outputs]


def _main_on_one_process(workdir, num_steps: int) -> train.TrainResult:
  """The same config in this process: one process, the 8 test devices."""
  assert jax.process_count() == 1 and jax.device_count() == 8
  config = tiny_config("mpl")
  config.num_steps = num_steps
  return train.train_and_evaluate(config, str(workdir))


def _assert_same_state(workdir_a, workdir_b, step: int) -> None:
  """Every array of the saved TrainState (parameters, optimizer, EMA, baseline) agrees."""
  a, b = read_checkpoint(str(workdir_a), step), read_checkpoint(str(workdir_b), step)
  leaves_a = jax.tree_util.tree_flatten_with_path(a)[0]
  leaves_b = jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 10
  for (path, x), y in zip(leaves_a, leaves_b):
    assert_close_on_scale(np.asarray(x), np.asarray(y), TOL_PROCESSES,
                          jax.tree_util.keystr(path))


@pytest.mark.slow
def test_two_processes_match_one_and_share_checkpoints(tmp_path, capsys):
  two, one = tmp_path / "two_processes", tmp_path / "one_process"
  outputs = _main_on_two_processes(tmp_path, two, STEPS)
  _main_on_one_process(one, STEPS)
  assert checkpoint_steps(str(two)) == checkpoint_steps(str(one)) == [20, STEPS]
  _assert_same_state(two, one, STEPS)
  # Both processes print the final evaluation; process 0 alone wrote the run's files,
  # whole (no temporary files left), and its evaluation over global arrays counts
  # each of the 400 points once, like the single process.
  assert len({out.strip().splitlines()[-1] for out in outputs}) == 1
  results_two = json.loads((two / "results.json").read_text())
  results_one = json.loads((one / "results.json").read_text())
  for key in ("eval/student_accuracy", "eval/student_ema_accuracy", "eval/teacher_accuracy"):
    assert abs(results_two[key] - results_one[key]) <= 1 / 400, key
  assert sorted(p.name for p in two.iterdir()) == ["checkpoints", "config.json", "curves.png",
                                                   "results.json", "tensorboard"]

  # Cross resumes: 2-process checkpoints on one process, 1-process ones on two, the
  # latter with every parameter split over all 8 devices of both processes (FSDP).
  two_then_one, one_then_two = tmp_path / "two_then_one", tmp_path / "one_then_two"
  shutil.copytree(two, two_then_one)
  shutil.copytree(one, one_then_two)
  capsys.readouterr()
  resumed = _main_on_one_process(two_then_one, RESUMED_STEPS)
  assert f"resumed from step {STEPS}" in capsys.readouterr().out
  assert len(resumed.history["train/skipped_steps"]) == 2  # steps 50 and 60 only
  outputs = _main_on_two_processes(tmp_path, one_then_two, RESUMED_STEPS,
                                   "--config.mesh.model_axis=8")
  assert all(f"resumed from step {STEPS}" in out for out in outputs)
  assert checkpoint_steps(str(two_then_one)) == checkpoint_steps(str(one_then_two)) == [
      STEPS, RESUMED_STEPS]
  _assert_same_state(two_then_one, one_then_two, RESUMED_STEPS)
