"""Wall time of whole runs as a user starts them: the README's CPU run times.

Each case is a command (`main.py` or `demo.py` with a config) run `--runs` times in a
fresh process and a fresh workdir, one after the other, after `benchmarks.timing` finds
the machine quiet; one JSON line per case: every run's wall seconds, their median, the
machine and the load before, during and after.

  .venv/bin/python -m benchmarks.run_times --runs=3 >> benchmarks/results/run_times.jsonl
  .venv/bin/python -m benchmarks.run_times --cases=digits_mpl --runs=1 --on_busy=run
"""

import argparse
import os
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
}


def run_once(args: list[str]) -> float:
  """Seconds from start to exit of one run in a fresh workdir; raises if it fails."""
  workdir = tempfile.mkdtemp(prefix="mpl_run_time_")
  try:
    command = [sys.executable] + [a.replace("WORKDIR", workdir) for a in args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
      raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-500:]}")
    return seconds
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


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
    before = timing.wait_until_quiet(args)
    seconds = [run_once(case_args) for _ in range(args.runs)]
    timing.emit({"benchmark": "run_time", "case": name, "what": what,
                 "command": " ".join(case_args), "runs": args.runs,
                 "wall_s": seconds, "median_s": timing.median(seconds),
                 **timing.machine_facts()}, before)


if __name__ == "__main__":
  main()
