"""The benchmarks' quiet-machine gate (benchmarks/timing.py): it sees another busy
process, refuses, waits or warns as told, watches during the run, and its readings go
into the record."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import timing

# Other busy processes are what these tests look for: never beside another test.
pytestmark = pytest.mark.serial


class _Other:
  """A process that is not this one's descendant (its parent exits at once), as another
  user's job would be."""

  def __init__(self, code: str):
    started = subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "{code}" >/dev/null 2>&1 & echo $!'],
        capture_output=True, text=True, check=True)
    self.pid = int(started.stdout.strip())

  def kill(self) -> None:
    try:
      os.kill(self.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


@pytest.fixture()
def spinner():
  """Another process that keeps one core busy while the test runs."""
  proc = _Other("while True: pass")
  yield proc
  proc.kill()


def test_the_benchmarks_own_runs_are_not_other_busy_processes(spinner):
  """A run the benchmark starts itself (a child, and its child) is its own work."""
  child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run("
                            "[sys.executable, '-c', 'while True: pass'])"])
  grandchildren = []
  try:
    time.sleep(0.5)
    grandchildren = _children(child.pid)
    busy = [p["pid"] for p in timing.busy_processes(1.0)]
    assert grandchildren and spinner.pid in busy
    assert child.pid not in busy and not set(grandchildren) & set(busy)
  finally:
    for pid in grandchildren:
      os.kill(pid, signal.SIGKILL)
    child.kill()
    child.wait()


def test_a_run_marked_as_the_benchmarks_stays_its_own_after_leaving_the_tree():
  """A run may leave a process behind in a session of its own whose parent exited (as a
  launch test's background job does): no descendant any more, it is still the
  benchmark's own work when its environment has the mark of `own_env`; the same
  process without the mark is another job."""
  def orphan(env):
    started = subprocess.run(["sh", "-c", f'{sys.executable} -c "while True: pass" '
                              '>/dev/null 2>&1 & echo $!'], capture_output=True, text=True,
                             check=True, env=env, start_new_session=True)
    return int(started.stdout.strip())

  marked, unmarked = orphan(timing.own_env()), orphan(dict(os.environ))
  try:
    time.sleep(0.3)
    assert marked not in _children(os.getpid())
    busy = [p["pid"] for p in timing.busy_processes(1.0)]
    assert unmarked in busy and marked not in busy
  finally:
    os.kill(marked, signal.SIGKILL)
    os.kill(unmarked, signal.SIGKILL)


def test_orphans_reaped_by_init_are_not_inits_work():
  """init reaps every orphan and gets its CPU time as a finished child's: a benchmark's
  own orphans ending must not make init look busy."""
  code = "import time\nstart = time.time()\nwhile time.time() - start < 1.5: pass"
  subprocess.run(["sh", "-c", f"{sys.executable} -c '{code}' >/dev/null 2>&1 &"],
                 check=True, start_new_session=True)
  assert 1 not in [p["pid"] for p in timing.busy_processes(3.0)]


def _children(pid: int) -> list[int]:
  found = []
  for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{entry}/stat") as f:
        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
          found.append(int(entry))
    except (OSError, ValueError, IndexError):
      continue
  return found


@pytest.fixture(autouse=True)
def stop_watching():
  yield
  if timing._WATCHER is not None:  # pylint: disable=protected-access
    timing._WATCHER.stop()  # pylint: disable=protected-access
    timing._WATCHER = None  # pylint: disable=protected-access


def _args(on_busy, max_load=1e9, max_wait_s=0.0):
  parser = argparse.ArgumentParser()
  timing.add_quiet_flags(parser)
  return parser.parse_args([f"--on_busy={on_busy}", f"--max_load={max_load}",
                            f"--max_wait_s={max_wait_s}"])


def _only(pid, monkeypatch):
  """busy_processes as measured, but blind to every process other than `pid` (the
  machine running the tests may have other busy processes of its own)."""
  real = timing.busy_processes
  monkeypatch.setattr(timing, "busy_processes",
                      lambda interval=1.0: [p for p in real(interval) if p["pid"] == pid])


def test_load_average_parses(tmp_path):
  path = tmp_path / "loadavg"
  path.write_text("1.25 0.50 0.10 2/300 4242\n")
  assert timing.load_average(str(path)) == [1.25, 0.5, 0.1]


def test_a_busy_process_is_seen(spinner):
  busy = timing.busy_processes(interval=1.0)
  (mine,) = [p for p in busy if p["pid"] == spinner.pid]
  assert mine["cores"] >= timing.BUSY_CPU_SHARE


def test_the_gate_refuses_a_busy_machine_in_one_line(spinner, monkeypatch):
  _only(spinner.pid, monkeypatch)
  with pytest.raises(SystemExit) as exit_info:
    timing.wait_until_quiet(_args("refuse"))
  message = str(exit_info.value)
  assert message.startswith("machine busy:") and "\n" not in message
  assert f"pid {spinner.pid}" in message and "--on_busy=run" in message


def test_waiting_gives_up_after_max_wait(spinner, monkeypatch):
  _only(spinner.pid, monkeypatch)
  with pytest.raises(SystemExit, match="machine busy"):
    timing.wait_until_quiet(_args("wait", max_wait_s=0.0))


def test_the_gate_refuses_a_high_load_alone(monkeypatch):
  monkeypatch.setattr(timing, "busy_processes", lambda interval=1.0: [])
  with pytest.raises(SystemExit, match=r"load average .* \(quiet: <= -1.00\), busy: no other"):
    timing.wait_until_quiet(_args("refuse", max_load=-1.0))


def test_waiting_ends_when_the_machine_turns_quiet(monkeypatch, capsys):
  readings = iter([[{"pid": 7, "name": "job", "cores": 1.0}], [], []])
  monkeypatch.setattr(timing, "busy_processes", lambda interval=1.0: next(readings, []))
  before = timing.wait_until_quiet(_args("wait", max_wait_s=60.0), poll_s=0.0)
  assert before["quiet"] is True and before["busy_processes"] == []
  assert "waiting for a quiet machine" in capsys.readouterr().err


def test_the_watcher_sees_a_job_that_comes_and_goes(spinner):
  watcher = timing.Watcher(every=0.1)
  watcher.start()
  time.sleep(2.5)
  watcher.stop()
  watcher.join(timeout=5)
  report = watcher.report()
  assert report["samples"] >= 1
  assert spinner.pid in [p["pid"] for p in report["busy_processes"]]


def test_running_anyway_warns_and_marks_the_record(spinner, monkeypatch, capsys):
  _only(spinner.pid, monkeypatch)
  before = timing.wait_until_quiet(_args("run"))
  assert before["quiet"] is False
  assert "busy machine" in capsys.readouterr().err
  timing.emit({"benchmark": "x"}, before)
  record = json.loads(capsys.readouterr().out)
  assert record["load"]["quiet"] is False
  assert spinner.pid in [p["pid"] for p in record["load"]["before"]["busy_processes"]]
  assert len(record["load"]["after"]["load_average"]) == 3
  assert "busy_processes" in record["load"]["during"]


def test_a_quiet_record_needs_quiet_before_during_and_after(monkeypatch, capsys):
  monkeypatch.setattr(timing, "busy_processes", lambda interval=1.0: [])
  before = timing.wait_until_quiet(_args("refuse"))
  timing.emit({"benchmark": "x"}, before)
  assert json.loads(capsys.readouterr().out)["load"]["quiet"] is True
  timing._WATCHER.seen[7] = {"pid": 7, "name": "job", "cores": 1.0}  # pylint: disable=protected-access
  timing.emit({"benchmark": "x"}, before)
  assert json.loads(capsys.readouterr().out)["load"]["quiet"] is False
