"""Stored records of experiment runs, and the tables of RESULTS.md rendered from them.

A record is one JSON line per (study, variant, seed) in experiments/results/<study>.jsonl:
the full config (overrides included) and the overrides alone, the seed, the git commit,
the package versions, the run's final metrics, its wall time, the machine, and optionally
logged series (`history`) and the study's name for the overrides it ran under
(`condition`, e.g. "mpl.feedback_weight=10000.0"; "" for none), which a table selects
with `condition=`. The studies in experiments/ append a record as each run
finishes and skip a (variant, seed) whose record holds the same config.

RESULTS.md holds each table between a marker that says how to render it and an end
marker:

  <!-- records: accuracy file=experiments/results/digits.jsonl variants=supervised,uda
       metric=test/student_accuracy seeds=0-4 columns=ema,per_seed -->
  | ... the rendered table ... |
  <!-- /records -->

`render(spec)` makes the table from the records; `check(text)` lists the tables of a
RESULTS.md that differ from what their records render (a number edited by hand, a record
added or removed), and `python -m mpl_jax.report --results RESULTS.md [--write]` checks
or rewrites them. Means are over seeds with the sample std (ddof = 1). Paired tables count
W/T/L on the per-seed differences as printed (0.1 points): above, at or below zero.
"""

import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from typing import Any, Callable, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "tensorflow")
MARKER = re.compile(r"<!-- records: (\w+)((?:\s+\w+=\S+)*)\s*-->\n(.*?)<!-- /records -->",
                    re.S)


# ---- Writing and reading records. ----


def commit() -> str | None:
  """The checkout's commit, with "+" when tracked files have uncommitted changes."""
  try:
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None
  return head + ("+" if dirty else "")


def versions() -> dict[str, str]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def machine() -> dict[str, Any]:
  model = ""
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), "")
  return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
          "python": platform.python_version(), "system": platform.system()}


def make(study: str, variant: str, seed: int, config: dict, overrides: dict,
         metrics: dict, wall_s: float, history: dict | None = None,
         **extra: Any) -> dict[str, Any]:
  """One record; `config` is the run's whole config as a dict; `extra` fields as given
  (e.g. vmapped_seeds: how many seeds shared the run and its wall time)."""
  record = {"study": study, "variant": variant, "seed": int(seed), "config": config,
            "overrides": overrides, "commit": commit(), "versions": versions(),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "wall_s": float(wall_s), "machine": machine(), **extra}
  if history:
    record["history"] = history
  return json.loads(json.dumps(record, default=str))  # as it reads back from the file


def append(path: str, record: dict) -> None:
  """Adds one record as one line (flushed and synced: a kill loses no finished record)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())


def load(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def find(records: Sequence[dict], variant: str, seed: int, config: dict) -> dict | None:
  """The record of (variant, seed) with this very config, or None (to be run)."""
  config = json.loads(json.dumps(config, default=str))
  for record in records:
    if (record["variant"], record["seed"]) == (variant, seed) and record["config"] == config:
      return record
  return None


# ---- Rendering tables. ----


def parse_seeds(text: str) -> list[int]:
  """'0-4' or '1,3,5' (or both, comma-separated) -> the seeds."""
  seeds = []
  for part in text.split(","):
    lo, _, hi = part.partition("-")
    seeds.extend(range(int(lo), int(hi or lo) + 1))
  return seeds


def _std(values: np.ndarray) -> float:
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_std(values: np.ndarray, decimals: int = 1, sign: str = "") -> str:
  """mean ± sample std; the mean alone for one value (its std is undefined)."""
  mean = f"{np.mean(values):{sign}.{decimals}f}"
  return mean if len(values) < 2 else f"{mean} ± {_std(values):.{decimals}f}"


def _signed(value: float) -> str:
  text = f"{value:+.1f}"
  return "0.0" if text in ("+0.0", "-0.0") else text


@dataclasses.dataclass(frozen=True)
class Spec:
  """What one marker asks for: a table kind and its key=value options."""

  kind: str
  options: dict[str, str]

  def values(self, records: Sequence[dict], variant: str, metric: str) -> np.ndarray:
    """Per seed (in `seeds` order) the metric of `variant`, in points for accuracies."""
    seeds = parse_seeds(self.options["seeds"])
    condition = self.options.get("condition", "")
    by_seed = {}
    for r in records:
      if r["variant"] == variant and r.get("condition", "") == condition:
        if r["seed"] in by_seed:
          raise ValueError(f"{self.options['file']} holds two records of {variant} seed "
                           f"{r['seed']}{f' under {condition}' if condition else ''}; keep "
                           "one (the study appends a record only for a run it made)")
        by_seed[r["seed"]] = r
    missing = [s for s in seeds if s not in by_seed]
    if missing:
      shown = f" under {condition}" if condition else ""
      raise ValueError(f"{self.options['file']} has no record of {variant}{shown} for seeds "
                       f"{missing}; run its study")
    scale = 100.0 if "accuracy" in metric else 1.0
    return np.array([scale * by_seed[s]["metrics"][metric] for s in seeds])


def _accuracy(spec: Spec, records: Sequence[dict]) -> str:
  """variant | mean ± std | min | max | [EMA] | [teacher] | [per seed]."""
  metric = spec.options["metric"]
  columns = spec.options.get("columns", "").split(",")
  split = metric.split("/")[0]
  headers = ["variant", f"{metric} (%)", "min", "max"]
  headers += ["EMA student"] * ("ema" in columns) + ["teacher"] * ("teacher" in columns)
  headers += ["per seed"] * ("per_seed" in columns)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  for variant in spec.options["variants"].split(","):
    values = spec.values(records, variant, metric)
    cells = [variant, _mean_std(values), f"{values.min():.1f}", f"{values.max():.1f}"]
    if "ema" in columns:
      cells.append(_mean_std(spec.values(records, variant, f"{split}/student_ema_accuracy")))
    if "teacher" in columns:
      teacher = f"{split}/teacher_accuracy"
      has = all(teacher in r["metrics"] for r in records if r["variant"] == variant)
      cells.append(_mean_std(spec.values(records, variant, teacher)) if has else "-")
    if "per_seed" in columns:
      cells.append(" ".join(f"{v:.1f}" for v in values))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def shown_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """a − b (in points) rounded to 0.1 points, as the tables print it: W/T/L and the tests
  are taken on these."""
  return np.round(np.asarray(a) - np.asarray(b), 1)


def wins_ties_losses(shown: np.ndarray) -> tuple[int, int, int]:
  """How many of the (shown) differences are above, at and below zero."""
  wins, ties = int(np.sum(shown > 0)), int(np.sum(shown == 0))
  return wins, ties, len(shown) - wins - ties


def _paired(spec: Spec, records: Sequence[dict]) -> str:
  """a − b | mean ± std | per seed | W/T/L, the differences rounded to 0.1 points first."""
  metric = spec.options["metric"]
  lines = ["| paired difference (points) | mean ± std | per seed | W/T/L |",
           "|---|---|---|---|"]
  for pair in spec.options["pairs"].split(","):
    a, b = pair.split(":")
    shown = shown_differences(spec.values(records, a, metric), spec.values(records, b, metric))
    lines.append(f"| {a} − {b} | {_mean_std(shown, decimals=2, sign='+')} | "
                 f"{' '.join(_signed(d) for d in shown)} | "
                 f"{'/'.join(map(str, wins_ties_losses(shown)))} |")
  return "\n".join(lines)


def one_sided_tests(differences: np.ndarray) -> tuple[float, float, float]:
  """(t, p) of the one-sided paired t-test of mean > 0, and p of the one-sided sign test
  of P(d > 0) > 1/2 with ties dropped."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  t, p_t = stats.ttest_1samp(differences, 0.0, alternative="greater")
  nonzero = differences[differences != 0]
  p_sign = stats.binomtest(int(np.sum(nonzero > 0)), len(nonzero), 0.5,
                           alternative="greater").pvalue if len(nonzero) else 1.0
  return float(t), float(p_t), float(p_sign)


def _tests(spec: Spec, records: Sequence[dict]) -> str:
  """a − b per pair: n, mean ± std, W/T/L, and both one-sided tests (on the differences
  as printed, 0.1 points)."""
  metric = spec.options["metric"]
  lines = ["| hypothesis | seeds | mean ± std (points) | W/T/L | t | p, paired t-test "
           "(one-sided) | p, sign test (one-sided) |", "|---|---|---|---|---|---|---|"]
  for pair in spec.options["pairs"].split(","):
    a, b = pair.split(":")
    shown = shown_differences(spec.values(records, a, metric), spec.values(records, b, metric))
    t, p_t, p_sign = one_sided_tests(shown)
    lines.append(f"| {a} > {b} | {len(shown)} | {_mean_std(shown, decimals=2, sign='+')} | "
                 f"{'/'.join(map(str, wins_ties_losses(shown)))} | {t:.2f} | {p_t:.3f} | "
                 f"{p_sign:.3f} |")
  return "\n".join(lines)


def _history(spec: Spec, records: Sequence[dict]) -> str:
  """Median over seeds of logged series (`keys`), over all logs and at a few log steps."""
  variant, seeds = spec.options["variant"], parse_seeds(spec.options["seeds"])
  condition = spec.options.get("condition", "")
  runs = [r for r in records if r["variant"] == variant and r["seed"] in seeds
          and r.get("condition", "") == condition]
  if sorted(r["seed"] for r in runs) != sorted(seeds):
    raise ValueError(f"{spec.options['file']} lacks records of {variant} for some of seeds "
                     f"{spec.options['seeds']}; run its study")
  steps = runs[0]["history"]["steps"]
  picks = sorted({0, len(steps) // 10, len(steps) // 4, len(steps) // 2, len(steps) - 1})
  lines = ["| logged | median, all logs | " + " | ".join(f"step {steps[i]}" for i in picks)
           + " |", "|" + "---|" * (len(picks) + 2)]
  for key in spec.options["keys"].split(","):
    absolute = key.startswith("abs:")
    name = key[4:] if absolute else key
    h = np.array([r["history"][name] for r in runs])  # [seeds, logs]
    h = np.abs(h) if absolute else h
    shown = f"\\|{name}\\|" if absolute else name
    lines.append(f"| {shown} | {np.median(h):.2e} | "
                 + " | ".join(f"{np.median(h[:, i]):.2e}" for i in picks) + " |")
  return "\n".join(lines)


def _reward_size(spec: Spec, records: Sequence[dict]) -> str:
  """Per variant, the mean |h| over each run's logged steps (x 1e-3), seed by seed."""
  seeds, condition = parse_seeds(spec.options["seeds"]), spec.options.get("condition", "")
  lines = ["| variant | mean \\|h\\| over the run's logged steps, per seed (x 1e-3) | "
           "mean over seeds |", "|---|---|---|"]
  for variant in spec.options["variants"].split(","):
    runs = {r["seed"]: r for r in records if r["variant"] == variant
            and r.get("condition", "") == condition and r["seed"] in seeds}
    sizes = [1e3 * float(np.mean(np.abs(runs[s]["history"]["mpl/reward"]))) for s in seeds]
    lines.append(f"| {variant} | {' '.join(f'{v:.2f}' for v in sizes)} | "
                 f"{np.mean(sizes):.2f} |")
  return "\n".join(lines)


KINDS: dict[str, Callable[[Spec, Sequence[dict]], str]] = {
    "accuracy": _accuracy, "paired": _paired, "history": _history, "tests": _tests,
    "reward_size": _reward_size}


def render(spec: Spec, root: str = ROOT) -> str:
  """The table a marker asks for, from its records file."""
  if spec.kind not in KINDS:
    raise ValueError(f"table kind {spec.kind!r} is unknown; valid: {sorted(KINDS)}")
  return KINDS[spec.kind](spec, load(os.path.join(root, spec.options["file"])))


def _spec(kind: str, options: str) -> Spec:
  return Spec(kind, dict(item.split("=", 1) for item in options.split()))


def check(text: str, root: str = ROOT) -> list[str]:
  """One line per table of a RESULTS.md `text` that differs from what its records render."""
  problems = []
  for match in MARKER.finditer(text):
    spec = _spec(match.group(1), match.group(2))
    try:
      rendered = render(spec, root)
    except (ValueError, KeyError, OSError) as err:
      problems.append(f"{spec.kind} table of {spec.options.get('file')}: {err}")
      continue
    if match.group(3).strip() != rendered:
      shown, want = match.group(3).strip().splitlines(), rendered.splitlines()
      first = next((i for i, (a, b) in enumerate(zip(shown, want)) if a != b),
                   min(len(shown), len(want)))
      rows = [spec.options.get(k) for k in ("variants", "pairs", "variant")]
      problems.append(f"{spec.kind} table of {spec.options['file']} "
                      f"({next(r for r in rows + ['?'] if r)}), line {first + 1}: "
                      "RESULTS.md differs from what its records render")
  return problems


def rewrite(text: str, root: str = ROOT) -> str:
  """`text` with every table replaced by what its records render."""
  def table(match):
    rendered = render(_spec(match.group(1), match.group(2)), root)
    return (text[match.start():match.start(3)] + rendered + "\n"
            + text[match.end(3):match.end()])
  return MARKER.sub(table, text)
