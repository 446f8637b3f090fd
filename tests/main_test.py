"""main.py end to end in fresh processes: overrides, resume, kill -9 and resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.helpers import ROOT, checkpoint_steps, flat_params, read_checkpoint, run_main

TINY = ["--config.data.num_points=400", "--config.log_every_steps=50",
        "--config.print_progress=False"]


def test_main_trains_meta_from_the_command_line_and_resumes(tmp_path):
  args = ["--config=configs/twomoon.py:mpl", f"--workdir={tmp_path}", "--config.num_steps=30",
          "--config.checkpoint.every_steps=10", "--config.mpl.estimator=meta", *TINY]
  first = run_main(args)
  assert first.returncode == 0, first.stderr[-2000:]
  assert "eval/student_accuracy=" in first.stdout
  assert json.loads((tmp_path / "config.json").read_text())["mpl"]["estimator"] == "meta"
  assert checkpoint_steps(str(tmp_path))[-1] == 30
  second = run_main(args[:-len(TINY) - 3] + ["--config.num_steps=40", *args[-len(TINY) - 2:]])
  assert second.returncode == 0, second.stderr[-2000:]
  assert "resumed from step 30" in second.stdout
  assert checkpoint_steps(str(tmp_path))[-1] == 40


def test_bad_input_is_one_line_before_any_compute(tmp_path):
  result = run_main(["--config=configs/twomoon.py", f"--workdir={tmp_path}",
                     "--config.mpl.estimator=reinforcee"])
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert errors == ["error: mpl.estimator='reinforcee' is unknown; valid: "
                    "['reinforce', 'meta', 'off']"]
  assert not os.path.exists(tmp_path / "checkpoints")


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
  """SIGKILL mid-run, restart: the final state equals an uninterrupted run's, bit for bit."""
  steps = 3000
  common = ["--config=configs/twomoon.py:mpl", f"--config.num_steps={steps}",
            "--config.checkpoint.every_steps=100", "--config.eval.every_steps=3000", *TINY]
  straight = run_main(common + [f"--workdir={tmp_path / 'straight'}"])
  assert straight.returncode == 0, straight.stderr[-2000:]

  killed_dir = tmp_path / "killed"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"), *common,
                           f"--workdir={killed_dir}"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline and not any(s >= 200 for s in checkpoint_steps(str(killed_dir))):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = checkpoint_steps(str(killed_dir))
  assert saved and saved[-1] < steps, f"the run was not interrupted: {saved}"
  assert not (killed_dir / "results.json").exists()

  resumed = run_main(common + [f"--workdir={killed_dir}"])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resumed from step {saved[-1]}" in resumed.stdout or "resumed from step" in resumed.stdout
  a = read_checkpoint(str(tmp_path / "straight"), steps)
  b = read_checkpoint(str(killed_dir), steps)
  for net in ("student", "teacher", "student_ema"):
    np.testing.assert_array_equal(flat_params(b[net]["params"]), flat_params(a[net]["params"]))
