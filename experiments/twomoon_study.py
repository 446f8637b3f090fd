"""TwoMoon accuracy study (paper Figure 2): every number in RESULTS.md, section TwoMoon.

Accuracy is the student's, on all 2,000 points, after training; mean +- std over seeds
(sample std). Seeds 0..19 are for tuning; seeds 100..109 are held out for reporting.

Every (variant, config, seed) writes one record to experiments/results/twomoon.jsonl
(`mpl_jax.records`) as its run finishes; a run whose record exists is read, not rerun.
RESULTS.md's TwoMoon tables are rendered from those records
(`python -m mpl_jax.report --results=RESULTS.md`).

  # Main table (paper setting) + the feedback's size over training:
  .venv/bin/python experiments/twomoon_study.py --part main --seeds 100-109
  # Any methods under any overrides (what every row of the search is):
  .venv/bin/python experiments/twomoon_study.py --part table --seeds 0-19 \
      --methods supervised,pseudo_labels,mpl,mpl_off --set data.labeled_selection=tips
  # The whole search grid on the tuning seeds (or one named condition of it):
  .venv/bin/python experiments/twomoon_study.py --part search --seeds 0-19 [--only NAME]
"""

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import twomoon  # noqa: E402
from mpl_jax import multiseed  # noqa: E402
from mpl_jax import records  # noqa: E402

RECORDS = os.path.join(records.ROOT, "experiments", "results", "twomoon.jsonl")
STUDY = "twomoon"

# name -> (config method, overrides). `mpl` is the default: REINFORCE, dot reward,
# sampled labels, no baseline.
VARIANTS = {
    "supervised": ("supervised", {}),
    "pseudo_labels": ("pseudo_labels", {}),
    "uda": ("uda", {}),
    "mpl": ("mpl", {}),
    "mpl_taylor": ("mpl", {"mpl.reward": "taylor"}),
    "mpl_baseline": ("mpl", {"mpl.baseline_decay": 0.99}),
    "mpl_argmax": ("mpl", {"mpl.labels": "argmax"}),
    "mpl_meta": ("mpl", {"mpl.estimator": "meta"}),
    "mpl_off": ("mpl", {"mpl.estimator": "off"}),
    "mpl_argmax_off": ("mpl", {"mpl.estimator": "off", "mpl.labels": "argmax"}),
    "mpl_meta_off": ("mpl", {"mpl.estimator": "off", "mpl.labels": "soft"}),
}
MAIN_METHODS = ["supervised", "pseudo_labels", "uda", "mpl", "mpl_taylor", "mpl_baseline",
                "mpl_argmax", "mpl_meta", "mpl_off"]
SEARCH_METHODS = ["supervised", "pseudo_labels", "mpl", "mpl_off"]

# The search grid: name -> overrides applied to every method of the row.
SEARCH = {
    "base": {},
    "fw1e3": {"mpl.feedback_weight": 1e3},
    "fw1e4": {"mpl.feedback_weight": 1e4},
    "sw0_fw1e3": {"mpl.supervised_weight": 0.0, "mpl.feedback_weight": 1e3},
    "tips": {"data.labeled_selection": "tips"},
    "tips_fw1e3": {"data.labeled_selection": "tips", "mpl.feedback_weight": 1e3},
    "inner": {"data.labeled_selection": "inner"},
    "fw1e2": {"mpl.feedback_weight": 1e2},
    "sw0": {"mpl.supervised_weight": 0.0},
    "ub64": {"data.unlabeled_batch_size": 64},
    "ub64_fw1e3": {"data.unlabeled_batch_size": 64, "mpl.feedback_weight": 1e3},
    "noise0.2": {"data.noise": 0.2},
    "lr1": {"teacher.learning_rate": 1.0, "student.learning_rate": 1.0},
    "steps20k": {"num_steps": 20000, "pseudo_labels.teacher_steps": 20000},
}

# Fields a method never reads: dropped from the cache key so that e.g. supervised is
# trained once for all feedback weights.
_IGNORED = {
    "supervised": ("mpl", "teacher", "pseudo_labels", "uda"),
    "uda": ("mpl", "teacher", "pseudo_labels"),
    "pseudo_labels": ("mpl", "uda"),
    "mpl_off": ("mpl.feedback_weight", "mpl.reward", "mpl.baseline_decay"),
}
_CACHE: dict = {}


def parse_value(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  if "," in text or text.startswith("(") or text.startswith("["):  # model.hidden=16,16
    return tuple(int(v) for v in text.strip("()[]").split(",") if v)
  return text


def make_config(variant: str, overrides: dict):
  method, own = VARIANTS[variant]
  c = twomoon.get_config(method)
  c.print_progress = False
  for key, value in {**own, **overrides}.items():
    node = c
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    if isinstance(node[leaf], tuple) and not isinstance(value, tuple):
      value = (value,)
    node[leaf] = value
  return c


def _cache_key(variant: str, config, seeds) -> str:
  d = config.to_dict()
  for field in _IGNORED.get(variant, ()):
    head, *rest = field.split(".")
    if rest:
      d[head].pop(rest[0], None)
    else:
      d.pop(head, None)
  return repr((VARIANTS[variant][0], sorted(d.items(), key=str), tuple(seeds)))


HISTORY_KEYS = ("mpl/reward", "mpl/baseline", "teacher/feedback_to_supervised",
                "mpl/cos_grad_labeled_unlabeled")


@dataclasses.dataclass
class Stored:
  """What the tables read of a variant's seeds, from their records."""

  eval_metrics: dict[str, np.ndarray]  # name -> [num_seeds]
  history: dict[str, np.ndarray]       # name -> [num_logs, num_seeds]
  history_steps: np.ndarray


def _from_records(found: list[dict]) -> Stored:
  metrics = {k: np.array([r["metrics"][k] for r in found]) for k in found[0]["metrics"]}
  history = {k: np.array([r["history"][k] for r in found]).T
             for k in found[0].get("history", {}) if k != "steps"}
  steps = np.array(found[0].get("history", {}).get("steps", []))
  return Stored(metrics, history, steps)


def run(variant: str, overrides: dict, seeds: list[int]) -> tuple[Stored, float]:
  """(the seeds' results, wall seconds), from their records or, for any seed without
  one, from a run of all the seeds at once (whose records are then written)."""
  config = make_config(variant, overrides)
  key = _cache_key(variant, config, seeds)
  if key not in _CACHE:
    stored = records.load(RECORDS)
    found = [records.find(stored, variant, seed, _seed_config(config, seed)) for seed in seeds]
    if all(found):
      _CACHE[key] = (_from_records(found), sum(r["wall_s"] for r in found) / len(found))
    else:
      t0 = time.time()
      result = multiseed.train_seeds(config, seeds)
      wall = time.time() - t0
      for i, seed in enumerate(seeds):
        if found[i]:  # this seed's record exists: the rerun does not add a second one
          continue
        history = {k: [float(v) for v in result.history[k][:, i]] for k in HISTORY_KEYS
                   if k in result.history}
        if history:
          history["steps"] = [int(s) for s in result.history_steps]
        records.append(RECORDS, records.make(
            STUDY, variant, seed, _seed_config(config, seed), {**VARIANTS[variant][1],
                                                               **overrides},
            {k: v[i] for k, v in result.eval_metrics.items()}, wall, history,
            vmapped_seeds=len(seeds), condition=condition_name(overrides)))
      _CACHE[key] = (_from_records([records.find(records.load(RECORDS), variant, s,
                                                 _seed_config(config, s)) for s in seeds]),
                     wall)
      print(f"  [{variant} {overrides or ''}: {wall:.0f} s]", file=sys.stderr, flush=True)
  return _CACHE[key]


def condition_name(overrides: dict) -> str:
  """The records' name of a condition: its overrides as FIELD=VALUE, comma-separated."""
  return ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def _seed_config(config, seed: int) -> dict:
  """The config seed `seed` trains with (multiseed sets the seed per run)."""
  out = config.to_dict()
  out["seed"] = int(seed)
  return out


def fmt(acc: np.ndarray) -> str:
  return f"{100 * acc.mean():.1f} ± {100 * acc.std(ddof=1):.1f}"


def set_args(overrides: dict) -> str:
  return "".join(f" --set {k}={v}" for k, v in overrides.items())


def seeds_arg(seeds: list[int]) -> str:
  if seeds == list(range(seeds[0], seeds[-1] + 1)):
    return f"{seeds[0]}-{seeds[-1]}"
  return ",".join(map(str, seeds))


def accuracy_table(methods: list[str], overrides: dict, seeds: list[int],
                   show_seeds: bool = False) -> dict:
  """Prints one markdown row per method; returns name -> per-seed accuracy."""
  print(f"\nOverrides: {overrides or 'none (paper setting)'}; seeds {seeds_arg(seeds)}\n")
  head = "| method | student acc. % | min | max | teacher acc. % | wall s |"
  print(head + (" per seed |" if show_seeds else ""))
  print("|---" * (head.count("|") - 1 + show_seeds) + "|")
  accs = {}
  for m in methods:
    result, wall = run(m, overrides, seeds)
    acc = result.eval_metrics["eval/student_accuracy"]
    accs[m] = acc
    teacher = result.eval_metrics.get("eval/teacher_accuracy")
    row = (f"| {m} | {fmt(acc)} | {100 * acc.min():.1f} | {100 * acc.max():.1f} | "
           f"{fmt(teacher) if teacher is not None else '-'} | {wall:.0f} |")
    if show_seeds:
      row += " " + " ".join(f"{100 * a:.1f}" for a in acc) + " |"
    print(row)
  _paired(accs)
  cmd = (f".venv/bin/python experiments/twomoon_study.py --part table --seeds "
         f"{seeds_arg(seeds)} --methods {','.join(methods)}{set_args(overrides)}")
  print(f"\nCommand: `{cmd}`")
  return accs


def _paired(accs: dict) -> None:
  # Each MPL variant against the `off` ablation with the same pseudo labels.
  own_off = {"mpl_argmax": "mpl_argmax_off", "mpl_meta": "mpl_meta_off"}
  pairs = [(a, b) for a in accs if a.startswith("mpl") and not a.endswith("off")
           for b in (own_off.get(a, "mpl_off"), "supervised", "pseudo_labels") if b in accs]
  for a, b in pairs:
    d = 100 * (accs[a] - accs[b])
    wins, ties, losses = records.wins_ties_losses(records.shown_differences(
        100 * accs[a], 100 * accs[b]))
    print(f"\n{a} − {b}: {d.mean():+.1f} ± {d.std(ddof=1):.1f} points "
          f"(wins {wins}, ties {ties}, losses {losses} of {len(d)}; W/T/L on the differences "
          "as printed, 0.1 points)", end="")
  print()


FEEDBACK_KEYS = [("|h|", "mpl/reward", True), ("baseline b", "mpl/baseline", False),
                 ("feedback / supervised grad norm", "teacher/feedback_to_supervised", False),
                 ("cos(grad L_l(θ_S'), g_u)", "mpl/cos_grad_labeled_unlabeled", False)]


def feedback_table(variant: str, overrides: dict, seeds: list[int]) -> None:
  """Median over seeds, at a few log steps and over the whole run, of the feedback's size."""
  result, _ = run(variant, overrides, seeds)
  steps = result.history_steps
  picks = sorted({0, len(steps) // 10, len(steps) // 4, len(steps) // 2, len(steps) - 1})
  print(f"\nFeedback of `{variant}` (overrides {overrides or 'none'}), median over seeds "
        f"{seeds_arg(seeds)}, logged every {steps[0]} steps\n")
  print("| quantity | median, all logs | " + " | ".join(f"step {steps[i]}" for i in picks)
        + " |")
  print("|---" * (len(picks) + 2) + "|")
  for name, key, absolute in FEEDBACK_KEYS:
    if key not in result.history:
      continue
    h = result.history[key]
    h = np.abs(h) if absolute else h
    cells = [f"{np.median(h[i]):.2e}" for i in picks]
    print(f"| {name} | {np.median(h):.2e} | " + " | ".join(cells) + " |")
  if "mpl/reward" in result.history:
    r = result.history["mpl/reward"]
    print(f"\nh > 0 in {100 * (r > 0).mean():.0f}% of logged steps; "
          f"cos > 0 in {100 * (result.history['mpl/cos_grad_labeled_unlabeled'] > 0).mean():.0f}%")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--part", choices=("main", "table", "feedback", "search"),
                      default="main")
  parser.add_argument("--seeds", default="100-109", help="e.g. 100-109, 0-19 or 1,2,5")
  parser.add_argument("--methods", default=",".join(MAIN_METHODS),
                      help=f"comma-separated, from {list(VARIANTS)} (part table/feedback)")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="config override, e.g. data.labeled_selection=tips (repeatable)")
  parser.add_argument("--only", default="", help="part search: comma-separated conditions")
  parser.add_argument("--search_methods", default=",".join(SEARCH_METHODS))
  parser.add_argument("--show_seeds", action="store_true", help="print per-seed accuracy")
  args = parser.parse_args()

  seeds = records.parse_seeds(args.seeds)
  overrides = {}
  for item in args.set:
    key, value = item.split("=", 1)
    overrides[key] = parse_value(value)
  t0 = time.time()
  if args.part == "main":
    accuracy_table(MAIN_METHODS, overrides, seeds, args.show_seeds)
    feedback_table("mpl", overrides, seeds)
  elif args.part == "table":
    accuracy_table(args.methods.split(","), overrides, seeds, args.show_seeds)
  elif args.part == "feedback":
    for m in args.methods.split(","):
      feedback_table(m, overrides, seeds)
  else:
    names = args.only.split(",") if args.only else list(SEARCH)
    methods = args.search_methods.split(",")
    rows = []
    for name in names:
      cond = {**SEARCH[name], **overrides}
      print(f"\n### Condition {name}", flush=True)
      accs = accuracy_table(methods, cond, seeds, args.show_seeds)
      rows.append((name, cond, accs))
    print(f"\n### Search summary, seeds {seeds_arg(seeds)}\n")
    print("| condition | " + " | ".join(methods) + " | mpl − mpl_off |")
    print("|---" * (len(methods) + 2) + "|")
    for name, cond, accs in rows:
      diff = (f"{100 * (accs['mpl'] - accs['mpl_off']).mean():+.1f}"
              if "mpl" in accs and "mpl_off" in accs else "-")
      print(f"| {name} | " + " | ".join(fmt(accs[m]) for m in methods) + f" | {diff} |")
  print(f"\nWall time: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
  main()
