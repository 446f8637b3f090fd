"""Wall time of whole runs as a user starts them: the README's CPU run times.

Each case is a command (`main.py` or `demo.py` with a config) run `--runs` times in a
fresh process and a fresh workdir, one after the other, after `benchmarks.timing` finds
the machine quiet; one JSON line per case: every run's wall seconds, their median, the
machine and the load before, during and after.

The `make_test` and `make_test_all` cases time the test targets as a contributor meets
them: in a fresh clone of the repository's HEAD (its commit is in the record) whose .venv
is built first, not timed; the record adds the tests pytest counted and each pytest
part's own seconds. Every run carries the benchmark's mark in its environment, so that
the suite's processes (also those a test leaves running in the background, in a session
of their own) are not taken for other jobs.

  .venv/bin/python -m benchmarks.run_times --runs=3 >> benchmarks/results/run_times.jsonl
  .venv/bin/python -m benchmarks.run_times --cases=digits_mpl --runs=1 --on_busy=run
  .venv/bin/python -m benchmarks.run_times --cases=make_test,make_test_all --runs=1
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (what a user runs, its arguments after the interpreter; WORKDIR is replaced).
CASES = {
    "demo": ("make demo", ["demo.py", "--workdir=WORKDIR"]),
    "twomoon_mpl": ("main.py, TwoMoon MPL, 5,000 steps",
                    ["main.py", "--config=configs/twomoon.py:mpl", "--workdir=WORKDIR"]),
    "digits_mpl": ("main.py, digits MPL, 1,500 + 200 finetuning steps",
                   ["main.py", "--config=configs/digits.py:mpl", "--workdir=WORKDIR"]),
    "digits_supervised": ("main.py, digits supervised, 1,500 steps",
                          ["main.py", "--config=configs/digits.py:supervised",
                           "--workdir=WORKDIR"]),
    "make_test": ("make test, in a fresh clone with its .venv built", ["make", "test"]),
    "make_test_all": ("make test-all (what CI runs), in a fresh clone with its .venv built",
                      ["make", "test-all"]),
}
SUMMARY = re.compile(r"^=*\s*(\d+ \w+.*) in ([\d.]+)s\b", re.M)


def pytest_summary(output: str) -> dict:
  """The counts of pytest's summary lines in `output`, summed over the pytest runs
  (passed, skipped, failed, ...; 'deselected' left out: another run selects those), and
  each run's own seconds."""
  counts: dict[str, int] = {}
  seconds = []
  for found in SUMMARY.finditer(output):
    for number, what in re.findall(r"(\d+) (\w+)", found.group(1)):
      if what != "deselected":
        what = {"warning": "warnings", "error": "errors"}.get(what, what)
        counts[what] = counts.get(what, 0) + int(number)
    seconds.append(float(found.group(2)))
  return {"tests": counts, "pytest_s": seconds}


def run_once(args: list[str], cwd: str = ROOT) -> tuple[float, str]:
  """(seconds from start to exit, stdout) of one run in a fresh workdir; raises if it
  fails. The run's environment carries the benchmark's mark (`timing.own_env`), so that
  its processes are its own work also when a test leaves one running in the background."""
  workdir = tempfile.mkdtemp(prefix="mpl_run_time_")
  try:
    command = ([sys.executable] if args[0] != "make" else []) + [
        a.replace("WORKDIR", workdir) for a in args]
    env = timing.own_env({**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    start = time.perf_counter()
    run = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    out, err = run.communicate()
    seconds = time.perf_counter() - start
    if run.returncode:
      raise SystemExit(f"{' '.join(args)} failed ({run.returncode}): "
                       f"{(out + err)[-1500:]}")
    return seconds, out
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def fresh_clone() -> tuple[str, str]:
  """(folder, commit) of a clone of ROOT's HEAD with its .venv built (`make`'s stamp)."""
  folder = tempfile.mkdtemp(prefix="mpl_clone_")
  subprocess.run(["git", "clone", "-q", ROOT, folder], check=True)
  subprocess.run(["make", ".venv/.installed"], cwd=folder, check=True,
                 stdout=subprocess.DEVNULL)
  commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip()
  return folder, commit


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="demo,digits_mpl",
                      help=f"comma-separated, from {sorted(CASES)}")
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--main_args", default="",
                      help="more arguments for the main.py cases, e.g. "
                           "'--config.num_steps=10' (the smoke test's)")
  timing.add_quiet_flags(parser)
  args = parser.parse_args()
  names = args.cases.split(",")
  unknown = sorted(set(names) - set(CASES))
  if unknown:
    parser.error(f"unknown cases {unknown}; valid: {sorted(CASES)}")
  if args.runs < 1:
    parser.error(f"--runs={args.runs} must be >= 1")
  for name in names:
    what, case_args = CASES[name]
    if case_args[0] == "main.py":
      case_args = case_args + args.main_args.split()
    folder, extra = ROOT, {}
    if case_args[0] == "make":
      folder, commit = fresh_clone()
      extra["commit"] = commit
    try:
      before = timing.wait_until_quiet(args)
      runs = [run_once(case_args, folder) for _ in range(args.runs)]
    finally:
      if folder != ROOT:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = [s for s, _ in runs]
    if case_args[0] == "make":
      extra["pytest"] = [pytest_summary(out) for _, out in runs]
    timing.emit({"benchmark": "run_time", "case": name, "what": what,
                 "command": " ".join(case_args), "runs": args.runs,
                 "wall_s": seconds, "median_s": timing.median(seconds),
                 **extra, **timing.machine_facts()}, before)


if __name__ == "__main__":
  main()
