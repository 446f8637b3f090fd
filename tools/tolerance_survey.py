"""Measures, under several XLA:CPU code paths, the errors that the tests' tolerances allow.

Every comparison of two float32 (or float64) programs whose operations run in another order
(remat, scan, sharding, micro-batches, processes, vmap) goes through
`tests.helpers.assert_close_on_scale`, which checks max|a - b| / max|b| per tensor. This
script runs the tests that reach that helper once per variant below, with
MPL_TOLERANCE_LOG set, and reports the worst figure of each (test, comparison) beside its
tolerance. A different CPU reorders the same sums differently (vector width, instruction
set, thread count, convolution library); the variants reach such paths on this machine:

  house      the suite's own set-up (tests/conftest.py: Eigen convolutions)
  ynnpack    XLA's default CPU convolutions (MPL_CPU_CONVOLUTIONS=default)
  avx2       --xla_cpu_max_isa=AVX2: code for a CPU without AVX-512
  sse4       --xla_cpu_max_isa=SSE4_2 --xla_cpu_prefer_vector_width=128: 128-bit vectors
  one_core   --xla_cpu_multi_thread_eigen=false, pinned to one core with taskset

Usage:
  .venv/bin/python tools/tolerance_survey.py --out=tests/records/tolerance_survey.json
  .venv/bin/python tools/tolerance_survey.py --variants=house,sse4 --table_only \
      --out=tests/records/tolerance_survey.json   # print the table of a stored survey
The table is markdown, for RELIABILITY.md ("Numerical tolerances"). A variant whose
pytest run fails is reported as failed with its pytest summary line; the survey goes on.
Every test that reaches the helper runs, those marked slow included (the stored survey
was taken when the EfficientNet remat and two-process tests were not yet marked slow, and
the FSDP per-layer test was left out); --marker="not slow" leaves the slow ones out
(pytest's summary line counts them as deselected). The settings reach processes that the tests start and that
inherit the environment; tests/multihost_test.py's main.py processes drop MPL_* variables,
so under ynnpack they keep the Eigen convolutions (their MLP has none).
"""

import argparse
import ast
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
HELPER = "assert_close_on_scale"

VARIANTS = {
    "house": {},
    "ynnpack": {"MPL_CPU_CONVOLUTIONS": "default"},
    "avx2": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
    "sse4": {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2 --xla_cpu_prefer_vector_width=128"},
    "one_core": {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "PIN": "0"},
}


def _references(function: ast.AST) -> set[str]:
  """The names a function uses: f, and the attribute of module.f (a call, or the function
  passed as a value, e.g. to jax.tree.map)."""
  names = set()
  for node in ast.walk(function):
    if isinstance(node, ast.Name):
      names.add(node.id)
    elif isinstance(node, ast.Attribute):
      names.add(node.attr)
  return names


def _functions(tree: ast.Module) -> dict[str, ast.AST]:
  """Module-level functions by name, and the methods of module-level classes as
  Class::method (pytest's node id)."""
  out = {}
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      out[node.name] = node
    elif isinstance(node, ast.ClassDef):
      out.update({f"{node.name}::{item.name}": item for item in node.body
                  if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))})
  return out


def tests_that_compare(test_dir: pathlib.Path) -> list[str]:
  """pytest node ids of the test functions that reach the helper, directly or through a
  function of their own module (e.g. a _compare that several tests share). The helper's
  own tests (tolerances_test.py), whose inputs are made up, are left out."""
  selected = []
  for path in sorted(test_dir.glob("*_test.py")):
    if path.name == "tolerances_test.py":
      continue
    functions = {name: _references(node)
                 for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"))).items()}
    reaching = {HELPER}
    while True:  # a fixed point: functions using functions that reach the helper
      more = {name for name, used in functions.items()
              if used & {r.split("::")[-1] for r in reaching}} - reaching
      if not more:
        break
      reaching |= more
    selected += [f"{path.relative_to(ROOT).as_posix()}::{name}" for name in functions
                 if name.split("::")[-1].startswith("test_") and name in reaching]
  return selected


def run_variant(name: str, node_ids: list[str], marker: str) -> dict:
  """Runs the selected tests under one variant; its records and pytest's summary."""
  settings = dict(VARIANTS[name])
  pin = settings.pop("PIN", None)
  with tempfile.TemporaryDirectory() as tmp:
    log = os.path.join(tmp, "errors.jsonl")
    env = dict(os.environ, MPL_TOLERANCE_LOG=log, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    env.pop("MPL_CPU_CONVOLUTIONS", None)
    env.update(settings)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               *(["-m", marker] if marker else []), *node_ids]
    if pin is not None:
      if not shutil.which("taskset"):
        raise SystemExit("the one_core variant needs taskset (util-linux); leave it out with "
                         "--variants")
      command = ["taskset", "-c", pin, *command]
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    lines = done.stdout.strip().splitlines()
    records = []
    if os.path.exists(log):
      with open(log, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
  return {"variant": name, "settings": VARIANTS[name], "returncode": done.returncode,
          "summary": lines[-1] if lines else done.stderr.strip()[-300:],
          "seconds": round(time.time() - start, 1), "records": records}


def table(runs: list[dict]) -> str:
  """Markdown: a row per (test, tolerance), the worst error of each variant over the row's
  comparisons, and the margin (the tolerance over the worst of all variants)."""
  worst: dict[tuple[str, float], dict[str, float]] = {}
  for run in runs:
    for record in run["records"]:
      cell = worst.setdefault((record["test"], record["tol"]), {})
      cell[run["variant"]] = max(cell.get(run["variant"], 0.0), record["error"])
  names = [run["variant"] for run in runs]
  out = ["| test | " + " | ".join(names) + " | tolerance | margin |",
         "|---" * (len(names) + 3) + "|"]
  for (test, tol), cell in sorted(worst.items()):
    values = [cell.get(n) for n in names]
    top = max(v for v in values if v is not None)
    margin = "exact" if top == 0 else f"{tol / top:.0f}x" if top <= tol else "**FAILS**"
    cells = ["-" if v is None else f"{v:.1e}" for v in values]
    out.append(f"| {test.removeprefix('tests/')} | " + " | ".join(cells) +
               f" | {tol:.0e} | {margin} |")
  failed = [f"- {run['variant']}: {run['summary']}" for run in runs if run["returncode"]]
  return "\n".join(out + (["", "Failed runs:"] + failed if failed else []))


def _cpu_model() -> str:
  """The CPU's model name and its vector extensions, which set XLA:CPU's code paths."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError:
    return "unknown"
  name = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), "?")
  flags = next((l.split(":", 1)[1].split() for l in lines if l.startswith("flags")), [])
  vectors = sorted(f for f in flags if f.startswith(("avx", "sse4")))
  return f"{name} ({' '.join(vectors)})"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help=f"comma-separated, of {', '.join(VARIANTS)}")
  parser.add_argument("--out", default="", help="a JSON file for every run's records")
  parser.add_argument("--marker", default="",
                      help="pytest -m expression; empty: every test found, slow ones too")
  parser.add_argument("--table_only", action="store_true",
                      help="print the table of --out's stored runs, run nothing")
  args = parser.parse_args(argv)
  variants = [v for v in args.variants.split(",") if v]
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
  if args.table_only:
    if not args.out or not os.path.exists(args.out):
      raise SystemExit("--table_only reads the runs stored in --out; name an existing file")
    with open(args.out, encoding="utf-8") as f:
      stored = json.load(f)["runs"]
    print(table([run for run in stored if run["variant"] in variants]))
    return
  machine = {"cpu": _cpu_model(), "cores": os.cpu_count(), "load_before": os.getloadavg()}
  node_ids = tests_that_compare(ROOT / "tests")
  print(f"{len(node_ids)} tests reach {HELPER}", flush=True)
  runs = []
  for name in variants:
    run = run_variant(name, node_ids, args.marker)
    print(f"{name}: {run['summary']} ({run['seconds']} s, {len(run['records'])} comparisons)",
          flush=True)
    runs.append(run)
    if args.out:  # after each variant: a long survey keeps what it measured
      with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"tests": node_ids, "machine": machine, "runs": runs}, f, indent=1)
  print(table(runs))


if __name__ == "__main__":
  main()
