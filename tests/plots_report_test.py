"""curves.png at the end of every run (mpl_jax.plots); results over workdirs (report)."""

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from mpl_jax import plots
from mpl_jax import report
from mpl_jax import train
from tests.helpers import ROOT, tiny_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PANELS = ["Accuracy", "Losses", "Reward h and baseline", "UDA mask rate",
              "Teacher feedback / supervised gradient"]


def _png_size(path) -> tuple[int, int]:
  """(width, height) from the PNG header; fails on anything that is not a PNG."""
  data = open(path, "rb").read()
  assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One finished tiny MPL run and one supervised run (40 steps, logged every 10)."""
  root = tmp_path_factory.mktemp("runs")
  for method in ("mpl", "supervised"):
    train.train_and_evaluate(tiny_config(method), str(root / method))
  return root


def test_finished_run_has_a_readable_curves_png(runs):
  for method in ("mpl", "supervised"):
    path = runs / method / "curves.png"
    width, height = _png_size(path)
    assert 500 <= width <= 3000 and 250 <= height <= 2000, (method, width, height)
    assert os.path.getsize(path) > 10_000  # drawn lines and text, not a blank canvas
  # Three panels a row for MPL, two panels for the supervised run: a narrower figure.
  assert _png_size(runs / "supervised" / "curves.png")[0] < _png_size(
      runs / "mpl" / "curves.png")[0]


def test_panels_follow_the_logged_tags(runs):
  mpl = plots.read_scalars(runs / "mpl")
  assert list(mpl["eval/student_accuracy"][0]) == [20, 40]
  assert list(mpl["mpl/reward"][0]) == [10, 20, 30, 40]
  assert [p.title for p in plots.plan_panels(mpl)] == ALL_PANELS
  supervised = plots.read_scalars(runs / "supervised")
  panels = {p.title: p for p in plots.plan_panels(supervised)}
  assert list(panels) == ["Accuracy", "Losses"]  # no teacher, reward, UDA or feedback
  assert panels["Losses"].tags == ("student/loss_labeled",)  # found by the */loss* rule
  assert panels["Accuracy"].tags == ("eval/student_accuracy", "eval/student_ema_accuracy")
  assert panels["Accuracy"].points == ()  # TwoMoon has no test split
  feedback = plots.plan_panels(["teacher/feedback_to_supervised"])
  assert [p.title for p in feedback] == ALL_PANELS[-1:] and feedback[0].log_y
  with_test = plots.plan_panels(["eval/student_accuracy", "test/student_accuracy"])
  assert with_test[0].points == ("test/student_accuracy",)


def test_plots_command_redraws_and_rejects_a_folder_without_events(runs, tmp_path, capsys):
  target = runs / "mpl" / "curves.png"
  target.unlink()
  plots.main([str(runs / "mpl")])
  assert capsys.readouterr().out.strip() == str(target)
  _png_size(target)
  no_events = f"{tmp_path}/tensorboard has no TensorBoard event files"
  with pytest.raises(ValueError, match=re.escape(no_events)):
    plots.write_curves(tmp_path)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "mpl_jax.plots", str(tmp_path)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 1 and done.stdout == ""
  assert done.stderr.strip().splitlines() == [
      f"error: {no_events}; pass the workdir of a run that has logged metrics"]


def test_a_failure_to_draw_does_not_fail_the_run(tmp_path, monkeypatch):
  def broken(workdir):
    raise RuntimeError("no fonts")
  monkeypatch.setattr(plots, "write_curves", broken)
  config = tiny_config("supervised")
  config.num_steps = 10
  result = train.train_and_evaluate(config, str(tmp_path))
  assert "eval/student_accuracy" in result.eval_metrics
  assert (tmp_path / "results.json").exists() and not (tmp_path / "curves.png").exists()


# The fake study: (method, estimator, seed) -> test accuracy. Seed 2 of `supervised` has
# no partner; its seed 1 differs from `mpl off` by 0.02 points: a tie.
ACCURACIES = {("mpl", "reinforce", 0): 0.80, ("mpl", "reinforce", 1): 0.84,
              ("mpl", "off", 0): 0.75, ("mpl", "off", 1): 0.77,
              ("supervised", "reinforce", 0): 0.70, ("supervised", "reinforce", 1): 0.7702,
              ("supervised", "reinforce", 2): 0.90}


def _fake_workdir(path, method, estimator, seed, accuracy, test_split=True) -> str:
  os.makedirs(path)
  config = {"method": method, "seed": seed, "print_progress": seed == 0,
            "mpl": {"estimator": estimator, "reward": "dot"},
            "reduced_mpl": {"large_teacher_workdir": f"/elsewhere/{seed}"},
            "model": {"hidden": [8, 8]}}
  split = "test" if test_split else "eval"
  results = {"method": method, "eval/student_accuracy": accuracy - 0.1,
             f"{split}/student_accuracy": accuracy,
             f"{split}/student_ema_accuracy": accuracy + 0.01, "phase_ends": {}}
  if method == "mpl":
    results[f"{split}/teacher_accuracy"] = accuracy - 0.2
    results["phase_ends"] = {"mpl": {"step": 40, "eval/student_accuracy": accuracy - 0.05}}
  for name, payload in (("config.json", config), ("results.json", results)):
    with open(os.path.join(path, name), "w") as f:
      json.dump(payload, f)
  return str(path)


@pytest.fixture
def study(tmp_path):
  return [_fake_workdir(tmp_path / f"{m}_{e}_{s}", m, e, s, a)
          for (m, e, s), a in ACCURACIES.items()]


def test_report_groups_seeds_and_computes_mean_and_std(study):
  groups = report.group_runs(report.load_runs(study))
  assert [g.label for g in groups] == ["mpl", "mpl [mpl.estimator=off]", "supervised"]
  assert [[r.seed for r in g.runs] for g in groups] == [[0, 1], [0, 1], [0, 1, 2]]
  rows = report.table(groups).splitlines()
  assert rows[0] == ("| group | seeds | student | EMA student | student before finetuning "
                     "| teacher |")
  # mean ± sample std: 80, 84 -> 82.0 ± 2.8; 75, 77 -> 76.0 ± 1.4;
  # 70, 77.02, 90 -> 79.0 ± 10.1
  assert rows[2] == ("| mpl | 2 | 82.0 ± 2.8 | 83.0 ± 2.8 | 77.0 ± 2.8 (validation) | "
                     "62.0 ± 2.8 |")
  assert rows[3] == ("| mpl [mpl.estimator=off] | 2 | 76.0 ± 1.4 | 77.0 ± 1.4 | "
                     "71.0 ± 1.4 (validation) | 56.0 ± 1.4 |")
  assert rows[4] == "| supervised | 3 | 79.0 ± 10.1 | 80.0 ± 10.1 | - | - |"
  single = report.group_runs(report.load_runs(study[:1]))
  assert "| mpl | 1 | 80.0 ± 0.0 |" in report.table(single)
  eval_rows = report.table(groups, "eval/student_accuracy").splitlines()
  assert eval_rows[0] == "| group | seeds | student | student before finetuning |"
  assert eval_rows[2] == "| mpl | 2 | 72.0 ± 2.8 | 77.0 ± 2.8 |"  # no "(validation)"


def test_report_paired_differences_per_seed(study):
  groups = report.group_runs(report.load_runs(study))
  comparisons = {c.label: c for c in report.paired(groups, "off")}
  assert list(comparisons) == ["mpl", "supervised"]
  mpl, supervised = comparisons["mpl"], comparisons["supervised"]
  assert mpl.seeds == (0, 1) and supervised.seeds == (0, 1)  # seed 2 has no partner
  np.testing.assert_allclose(mpl.differences, [5.0, 7.0])
  np.testing.assert_allclose(supervised.differences, [-5.0, 0.02], atol=1e-9)
  assert mpl.mean == pytest.approx(6.0) and mpl.std == pytest.approx(np.sqrt(2))
  assert supervised.mean == pytest.approx(-2.49)
  assert supervised.std == pytest.approx(5.02 / np.sqrt(2))
  assert (mpl.wins, mpl.ties, mpl.losses) == (2, 0, 0)
  assert (supervised.wins, supervised.ties, supervised.losses) == (0, 1, 1)
  lines = report.paired_table(report.paired(groups, "off")).splitlines()
  assert lines[2:] == ["| mpl | 2 | +6.00 ± 1.41 | 2/0/0 |",
                       "| supervised | 2 | -2.49 ± 3.55 | 0/1/1 |"]


def test_report_command(study, tmp_path, capsys):
  report.main([*study, "--against=mpl", "--show_seeds"])  # `mpl` is one label exactly
  out = capsys.readouterr().out
  assert out.startswith(
      "test/student_accuracy (%, mean ± std over seeds), 7 runs in 3 groups")
  assert "| mpl [mpl.estimator=off] | 2 | -6.00 ± 1.41 | 0/0/2 |" in out
  assert f"| supervised | 2 | 90.0 | {study[-1]} |" in out
  # A run without a test split: every column falls back to the validation split.
  extra = _fake_workdir(tmp_path / "eval_only", "mpl", "reinforce", 5, 0.5, test_split=False)
  report.main([*study, extra])
  assert capsys.readouterr().out.startswith("eval/student_accuracy (%")


@pytest.mark.parametrize("args,message", [
    (["--against=zzz"], "error: --against=zzz matches no group; groups: ['mpl', "
                        "'mpl [mpl.estimator=off]', 'supervised']"),
    (["--against=p"], "error: --against=p matches several groups ['mpl', "
                      "'mpl [mpl.estimator=off]', 'supervised']; pass more of one label"),
    (["--metric=eval/nothing"], "error: "),
])
def test_report_bad_arguments_say_so_in_one_line(study, capsys, args, message):
  with pytest.raises(SystemExit) as exit_info:
    report.main([*study, *args])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and err.startswith(message)


def test_report_rejects_unfinished_and_repeated_runs(study, tmp_path, capsys):
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  with pytest.raises(SystemExit):
    report.main([*study, str(unfinished)])
  assert capsys.readouterr().err == (f"error: {unfinished} has no results.json: finish that "
                                     "run (rerun its command) or leave it out\n")
  with pytest.raises(ValueError, match="are the same run .*seed 0"):
    report.group_runs(report.load_runs([study[0], study[0]]))


def test_digits_study_reads_its_records_and_trains_nothing(tmp_path, monkeypatch, capsys):
  """A (variant, seed) whose record holds the same config is read, not retrained; the
  table is the records' (mpl_jax.records)."""
  from mpl_jax import records  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "digits_study", os.path.join(ROOT, "experiments", "digits_study.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  monkeypatch.setattr(study, "RECORDS", str(tmp_path / "digits.jsonl"))
  monkeypatch.setattr(study, "train_workdir", lambda *a: pytest.fail("trained a recorded run"))
  for variant, accuracies in (("supervised", (0.6, 0.7)), ("mpl", (0.8, 0.9))):
    for seed, accuracy in enumerate(accuracies):
      records.append(study.RECORDS, records.make(
          "digits", variant, seed, study.recorded_config(variant, seed), {},
          {"test/student_accuracy": accuracy, "test/student_ema_accuracy": accuracy + 0.01},
          1.0))
  monkeypatch.setattr(sys, "argv", ["digits_study.py", "--seeds", "0-1", "--root",
                                    str(tmp_path), "--methods", "supervised,mpl"])
  study.main()
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[1:] == [
      "| variant | test/student_accuracy (%) | min | max | EMA student |",
      "|---|---|---|---|---|",
      "| supervised | 65.0 ± 7.1 | 60.0 | 70.0 | 66.0 ± 7.1 |",
      "| mpl | 85.0 ± 7.1 | 80.0 | 90.0 | 86.0 ± 7.1 |"]
