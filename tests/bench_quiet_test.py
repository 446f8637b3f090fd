"""The benchmarks' quiet-machine gate (benchmarks/timing.py): it sees another busy
process, refuses or warns as told, and its readings go into the record."""

import argparse
import json
import subprocess
import sys

import pytest

from benchmarks import timing


@pytest.fixture()
def spinner():
  """Another process that keeps one core busy while the test runs."""
  proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
  yield proc
  proc.kill()
  proc.wait()


def _args(on_busy, max_load=1e9, max_wait_s=0.0):
  parser = argparse.ArgumentParser()
  timing.add_quiet_flags(parser)
  return parser.parse_args([f"--on_busy={on_busy}", f"--max_load={max_load}",
                            f"--max_wait_s={max_wait_s}"])


def test_load_average_parses(tmp_path):
  path = tmp_path / "loadavg"
  path.write_text("1.25 0.50 0.10 2/300 4242\n")
  assert timing.load_average(str(path)) == [1.25, 0.5, 0.1]


def test_a_busy_process_is_seen(spinner):
  busy = timing.busy_processes(interval=0.5)
  assert spinner.pid in [p["pid"] for p in busy]
  (mine,) = [p for p in busy if p["pid"] == spinner.pid]
  assert mine["cores"] >= timing.BUSY_CPU_SHARE


def test_the_gate_refuses_a_busy_machine_in_one_line(spinner):
  with pytest.raises(SystemExit) as exit_info:
    timing.wait_until_quiet(_args("refuse"))
  message = str(exit_info.value)
  assert message.startswith("machine busy:") and "\n" not in message
  assert f"pid {spinner.pid}" in message and "--on_busy=run" in message


def test_waiting_gives_up_after_max_wait(spinner):
  with pytest.raises(SystemExit, match="machine busy"):
    timing.wait_until_quiet(_args("wait", max_wait_s=0.0))


def test_the_gate_refuses_a_high_load_without_busy_processes():
  with pytest.raises(SystemExit, match="load average"):
    timing.wait_until_quiet(_args("refuse", max_load=-1.0))


def test_running_anyway_warns_and_marks_the_record(spinner, capsys):
  before = timing.wait_until_quiet(_args("run"))
  assert before["quiet"] is False
  assert "busy machine" in capsys.readouterr().err
  timing.emit({"benchmark": "x"}, before)
  record = json.loads(capsys.readouterr().out)
  assert record["load"]["quiet"] is False
  assert spinner.pid in [p["pid"] for p in record["load"]["before"]["busy_processes"]]
  assert len(record["load"]["after"]["load_average"]) == 3
