"""main.py end to end in fresh processes: overrides, resume, one-line errors."""

import json
import os

from tests.helpers import checkpoint_steps, run_main

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


def test_typo_in_override_and_missing_config_file_are_one_line(tmp_path):
  typo = run_main(["--config=configs/twomoon.py", f"--workdir={tmp_path}",
                   "--config.mpl.estimater=meta"])
  assert typo.returncode == 2
  assert typo.stderr.strip().splitlines()[-1] == (
      "error: bad --config override: no config field 'estimater'; did you mean 'estimator'?")
  missing = run_main(["--config=configs/nope.py", f"--workdir={tmp_path}"])
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines()[-1] == (
      "error: --config: [Errno 2] No such file or directory: 'configs/nope.py'")
