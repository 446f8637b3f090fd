"""RESULTS.md's tables are what their stored records render (mpl_jax.records), and the
rendering's rules: sample std, W/T/L on the differences as printed, every seed present."""

import json
import os
import re

import pytest

from mpl_jax import records
from mpl_jax import report
from tests.helpers import ROOT

RESULTS = os.path.join(ROOT, "RESULTS.md")


def _results_text() -> str:
  with open(RESULTS) as f:
    return f.read()


def test_results_tables_are_what_their_records_render():
  text = _results_text()
  assert len(records.MARKER.findall(text)) >= 3, "RESULTS.md has no record-backed tables"
  assert records.check(text) == []


def test_a_number_edited_by_hand_is_caught():
  """Change one number inside a record-backed table: the check names that table."""
  text = _results_text()
  match = records.MARKER.search(text)
  table = match.group(3)
  number = re.search(r"\d+\.\d", table.splitlines()[2])  # the first row's first number
  start = match.start(3) + len("\n".join(table.splitlines()[:2])) + 1 + number.start()
  digit = text[start + len(number.group()) - 1]
  edited = (text[:start + len(number.group()) - 1] + str((int(digit) + 1) % 10)
            + text[start + len(number.group()):])
  problems = records.check(edited)
  assert len(problems) == 1 and "line 3" in problems[0], problems
  assert records.check(records.rewrite(edited)) == []  # --write puts the records' back


def _write(tmp_path, rows):
  path = tmp_path / "experiments" / "results" / "r.jsonl"
  path.parent.mkdir(parents=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return "experiments/results/r.jsonl"


def _row(variant, seed, acc):
  return {"variant": variant, "seed": seed, "metrics": {"test/student_accuracy": acc}}


def test_sample_std_and_wins_counted_on_the_printed_differences(tmp_path):
  # a - b per seed: +0.04 (printed 0.0: a tie), +1.0, -0.5 points.
  rows = [_row("a", 0, 0.9004), _row("b", 0, 0.9), _row("a", 1, 0.91), _row("b", 1, 0.90),
          _row("a", 2, 0.895), _row("b", 2, 0.90)]
  file = _write(tmp_path, rows)
  paired = records.render(records.Spec("paired", {
      "file": file, "pairs": "a:b", "metric": "test/student_accuracy", "seeds": "0-2"}),
                          root=str(tmp_path))
  assert paired.splitlines()[2] == "| a − b | +0.17 ± 0.76 | 0.0 +1.0 -0.5 | 1/1/1 |"
  accuracy = records.render(records.Spec("accuracy", {
      "file": file, "variants": "b", "metric": "test/student_accuracy", "seeds": "0-2",
      "columns": "per_seed"}), root=str(tmp_path))
  assert accuracy.splitlines()[2] == "| b | 90.0 ± 0.0 | 90.0 | 90.0 | 90.0 90.0 90.0 |"
  with pytest.raises(ValueError, match=r"no record of b for seeds \[3\]"):
    records.render(records.Spec("accuracy", {
        "file": file, "variants": "b", "metric": "test/student_accuracy", "seeds": "0-3"}),
                   root=str(tmp_path))


def test_records_are_found_only_with_the_same_config(tmp_path):
  path = str(tmp_path / "r.jsonl")
  config = {"seed": 3, "mpl": {"estimator": "off"}}
  records.append(path, records.make("s", "mpl_off", 3, config, {}, {"x": 1.0}, 2.5))
  stored = records.load(path)
  assert records.find(stored, "mpl_off", 3, config)["metrics"] == {"x": 1.0}
  assert records.find(stored, "mpl_off", 3, {**config, "mpl": {"estimator": "meta"}}) is None
  assert records.find(stored, "mpl_off", 4, config) is None
  assert set(stored[0]) >= {"commit", "versions", "machine", "wall_s", "config", "overrides"}


def test_report_command_checks_and_rewrites(tmp_path, capsys):
  copy = tmp_path / "RESULTS.md"
  copy.write_text(_results_text())
  assert report.results_tables(str(copy), write=False) == 0
  text = copy.read_text()
  match = records.MARKER.search(text)
  copy.write_text(text[:match.start(3)] + "| stale |\n" + text[match.end(3):])
  assert report.results_tables(str(copy), write=False) == 1
  assert "differs from what its records render" in capsys.readouterr().err
  assert report.results_tables(str(copy), write=True) == 0
  assert copy.read_text() == text
