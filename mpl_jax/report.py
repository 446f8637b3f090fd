"""Results over finished workdirs: mean ± std per configuration, paired differences per seed.

  python -m mpl_jax.report /tmp/runs/*/seed*
  python -m mpl_jax.report /tmp/runs/*/seed* --against=supervised --show_seeds
  python -m mpl_jax.report DIR... --metric=eval/student_ema_accuracy
  python -m mpl_jax.report --results=RESULTS.md [--write]   (mpl_jax.records)

Workdirs whose config.json are equal apart from the per-seed fields (IGNORED_FIELDS) form a
group. A group is labelled by its method, plus in brackets the fields where its config
differs from the first group of the same method: `mpl` and `mpl [mpl.estimator=off]`.
Accuracies are shown in percent; std is the sample std (ddof=1), 0 for a single seed.
"""

import argparse
import dataclasses
import sys
from typing import Any, Iterable, Sequence

import numpy as np

from mpl_jax import files
from mpl_jax import records

# Fields that may differ between the seeds of one configuration.
IGNORED_FIELDS = frozenset({"seed", "reduced_mpl.large_teacher_workdir", "print_progress"})
TIE_POINTS = 0.05  # |difference| below this many points is a tie
DEFAULT_METRICS = ("test/student_accuracy", "eval/student_accuracy")  # first every run has
BEFORE_FINETUNING = "eval/student_accuracy"  # what phase_ends records of each phase


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: str
  config: dict[str, Any]   # config.json flattened to dotted names
  results: dict[str, Any]  # results.json

  @property
  def seed(self) -> Any:
    return self.config.get("seed")


@dataclasses.dataclass
class Group:
  label: str
  runs: list[Run]  # sorted by seed


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Paired differences (group − reference, in points) over the seeds both have."""
  label: str
  seeds: tuple[Any, ...]
  differences: np.ndarray
  wins: int
  ties: int
  losses: int

  @property
  def mean(self) -> float:
    return float(np.mean(self.differences)) if self.seeds else float("nan")

  @property
  def std(self) -> float:
    return _std(self.differences)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dicts as one dict with dotted names: {"mpl": {"estimator": x}} -> mpl.estimator."""
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def load_runs(workdirs: Iterable[files.PathLike]) -> list[Run]:
  """config.json and results.json of each finished workdir (local or gs://)."""
  runs = []
  for workdir in workdirs:
    root = files.path(workdir)
    if not (root / "results.json").exists():
      raise ValueError(f"{workdir} has no results.json: finish that run (rerun its command) "
                       "or leave it out")
    if not (root / "config.json").exists():
      raise ValueError(f"{workdir} has no config.json; pass workdirs written by main.py")
    runs.append(Run(str(workdir), flatten(files.read_json(root / "config.json")),
                    files.read_json(root / "results.json")))
  return runs


def _key(run: Run) -> tuple[tuple[str, str], ...]:
  return tuple(sorted((name, repr(value)) for name, value in run.config.items()
                      if name not in IGNORED_FIELDS))


def _show(value: Any) -> str:
  return value if isinstance(value, str) else repr(value)


def group_runs(runs: Sequence[Run]) -> list[Group]:
  """Runs grouped by config (apart from IGNORED_FIELDS), in order of first appearance."""
  by_key: dict[tuple, list[Run]] = {}
  for run in runs:
    by_key.setdefault(_key(run), []).append(run)
  groups = []
  first_of_method: dict[Any, dict[str, Any]] = {}
  missing = object()
  for members in by_key.values():
    config = members[0].config
    method = config.get("method", "?")
    reference = first_of_method.setdefault(method, config)
    names = sorted((set(config) | set(reference)) - IGNORED_FIELDS - {"method"})
    differences = [f"{name}={_show(config.get(name, 'absent'))}" for name in names
                   if config.get(name, missing) != reference.get(name, missing)]
    label = str(method) + (f" [{', '.join(differences)}]" if differences else "")
    seen: dict[Any, str] = {}
    for run in members:
      if run.seed in seen:
        raise ValueError(f"{seen[run.seed]} and {run.workdir} are the same run (equal "
                         f"configs, seed {run.seed}); pass each run once")
      seen[run.seed] = run.workdir
    groups.append(Group(label, sorted(members, key=_seed_order)))
  return groups


def _seed_order(run: Run) -> tuple[bool, float, str]:
  numeric = isinstance(run.seed, (int, float))
  return (not numeric, run.seed if numeric else 0.0, str(run.seed))


def default_metric(runs: Sequence[Run]) -> str:
  """test/student_accuracy when every run has it, else eval/student_accuracy."""
  for metric in DEFAULT_METRICS:
    if all(metric in run.results for run in runs):
      return metric
  return DEFAULT_METRICS[-1]


def _check_metric(runs: Sequence[Run], metric: str) -> None:
  for run in runs:
    if metric not in run.results:
      known = sorted(k for k, v in run.results.items() if isinstance(v, (int, float)))
      raise ValueError(f"{run.workdir}/results.json has no {metric}; pass --metric= one of "
                       f"{known}")


def _runs_and_metric(groups: Sequence[Group], metric: str | None
                     ) -> tuple[list[Run], str]:
  """Every run of `groups`, and `metric` (or the default one), checked to be in each."""
  runs = [run for group in groups for run in group.runs]
  metric = metric or default_metric(runs)
  _check_metric(runs, metric)
  return runs, metric


def _scale(metric: str) -> float:
  return 100.0 if "accuracy" in metric else 1.0


def _std(values: np.ndarray) -> float:
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_std(values: Sequence[float], decimals: int = 1, sign: str = "") -> str:
  if not len(values):
    return "-"
  values = np.asarray(values, dtype=float)
  return f"{np.mean(values):{sign}.{decimals}f} ± {_std(values):.{decimals}f}"


def before_finetuning(results: dict[str, Any]) -> float | None:
  """The student's validation accuracy at the end of the last phase other than the
  teacher's, or None when no such phase ended before the run did (no finetuning)."""
  ends = [(end.get("step", 0), end) for phase, end in results.get("phase_ends", {}).items()
          if phase != "teacher" and BEFORE_FINETUNING in end]
  return max(ends, key=lambda item: item[0])[1][BEFORE_FINETUNING] if ends else None


def _companions(metric: str) -> dict[str, str]:
  """The EMA student's and the teacher's version of a student metric: test/student_x ->
  test/student_ema_x, test/teacher_x."""
  split, _, name = metric.rpartition("/")
  if not name.startswith("student") or name.startswith("student_ema"):
    return {}
  rest = name[len("student"):]
  prefix = f"{split}/" if split else ""
  return {"EMA student": f"{prefix}student_ema{rest}", "teacher": f"{prefix}teacher{rest}"}


def table(groups: Sequence[Group], metric: str | None = None, *, label_header: str = "group",
          count_column: bool = True, all_columns: bool = False) -> str:
  """A Markdown table: per group, mean ± std of `metric` and, when any run has them, of
  the EMA student, the student before finetuning and the teacher. `all_columns` keeps
  those columns (as "-") even when no run has them."""
  runs, metric = _runs_and_metric(groups, metric)
  scale = _scale(metric)
  companions = {header: (lambda run, key=key: run.results.get(key))
                for header, key in _companions(metric).items()}
  candidates = [("student" if companions else metric, lambda run: run.results[metric]),
                ("EMA student", companions.get("EMA student")),
                ("student before finetuning", lambda run: before_finetuning(run.results)),
                ("teacher", companions.get("teacher"))]
  columns = {header: getter for header, getter in candidates if getter is not None and (
      all_columns or any(getter(run) is not None for run in runs))}
  validation = "" if metric.startswith("eval/") else " (validation)"
  headers = [label_header] + (["seeds"] if count_column else []) + list(columns)
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  for group in groups:
    cells = [group.label] + ([str(len(group.runs))] if count_column else [])
    for header, getter in columns.items():
      factor = 100.0 if header == "student before finetuning" else scale  # an accuracy
      values = [factor * v for v in (getter(r) for r in group.runs) if v is not None]
      cell = _mean_std(values)
      if header == "student before finetuning" and values:
        cell += validation
      cells.append(cell)
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def per_seed(groups: Sequence[Group], metric: str | None = None) -> str:
  """A Markdown table of each run's `metric`: group, seed, value, workdir."""
  _, metric = _runs_and_metric(groups, metric)
  lines = [f"| group | seed | {metric} | workdir |", "|---|---|---|---|"]
  for group in groups:
    for run in group.runs:
      value = _scale(metric) * run.results[metric]
      lines.append(f"| {group.label} | {run.seed} | {value:.1f} | {run.workdir} |")
  return "\n".join(lines)


def find_group(groups: Sequence[Group], against: str) -> Group:
  """The group labelled `against`, or the only one whose label contains it."""
  exact = [g for g in groups if g.label == against]
  if exact:
    return exact[0]
  matches = [g for g in groups if against in g.label]
  labels = [g.label for g in groups]
  if not matches:
    raise ValueError(f"--against={against} matches no group; groups: {labels}")
  if len(matches) > 1:
    raise ValueError(f"--against={against} matches several groups "
                     f"{[g.label for g in matches]}; pass more of one label")
  return matches[0]


def paired(groups: Sequence[Group], against: str, metric: str | None = None
           ) -> list[Comparison]:
  """Per other group: differences group − `against` (in points) over the seeds both
  have, with wins, ties (|d| < TIE_POINTS) and losses."""
  _, metric = _runs_and_metric(groups, metric)
  scale = _scale(metric)
  reference = find_group(groups, against)
  base = {run.seed: run.results[metric] for run in reference.runs}
  comparisons = []
  for group in groups:
    if group is reference:
      continue
    pairs = [(run.seed, scale * (run.results[metric] - base[run.seed]))
             for run in group.runs if run.seed in base]
    differences = np.array([d for _, d in pairs], dtype=float)
    comparisons.append(Comparison(
        label=group.label, seeds=tuple(s for s, _ in pairs), differences=differences,
        wins=int(np.sum(differences >= TIE_POINTS)),
        ties=int(np.sum(np.abs(differences) < TIE_POINTS)),
        losses=int(np.sum(differences <= -TIE_POINTS))))
  return comparisons


def paired_table(comparisons: Sequence[Comparison]) -> str:
  """The comparisons as a Markdown table."""
  lines = ["| group | paired seeds | difference (points) | W/T/L |", "|---|---|---|---|"]
  for c in comparisons:
    lines.append(f"| {c.label} | {len(c.seeds)} | "
                 f"{_mean_std(c.differences, decimals=2, sign='+')} | "
                 f"{c.wins}/{c.ties}/{c.losses} |")
  return "\n".join(lines)


def summary(workdirs: Sequence[files.PathLike], metric: str | None = None,
           against: str | None = None, show_seeds: bool = False) -> str:
  """Everything the command line prints, as one string."""
  runs = load_runs(workdirs)
  groups = group_runs(runs)
  metric = metric or default_metric(runs)
  unit = "%, " if _scale(metric) != 1 else ""
  parts = [f"{metric} ({unit}mean ± std over seeds), {len(runs)} runs in "
           f"{len(groups)} groups\n", table(groups, metric)]
  if show_seeds:
    parts += ["", per_seed(groups, metric)]
  if against is not None:
    reference = find_group(groups, against)
    parts += ["", f"Paired against `{reference.label}` (difference = group − "
              f"{reference.label}; a tie is |d| < {TIE_POINTS} points)\n",
              paired_table(paired(groups, reference.label, metric))]
  return "\n".join(parts)


def results_tables(path: str, write: bool) -> int:
  """Checks (or, with `write`, rewrites) the record-backed tables of `path`; the exit
  status: 0 when they are what their records render, 1 otherwise."""
  with open(path) as f:
    text = f.read()
  if write:
    try:
      rewritten = records.rewrite(text)
    except (ValueError, KeyError, OSError) as err:
      print(f"error: {path}: {err}", file=sys.stderr)
      return 1
    with open(path, "w") as f:
      f.write(rewritten)
    print(f"rewrote {len(records.MARKER.findall(text))} tables of {path} from their records")
    return 0
  problems = records.check(text)
  for problem in problems:
    print(f"error: {problem}", file=sys.stderr)
  if not problems:
    print(f"{len(records.MARKER.findall(text))} tables of {path} are what their records "
          "render")
  return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdirs", nargs="*", metavar="DIR", help="finished workdirs")
  parser.add_argument("--results", default=None, metavar="RESULTS.md",
                      help="check that each table of this file is what its stored records "
                           "render (mpl_jax.records); with --write, rewrite them")
  parser.add_argument("--write", action="store_true", help="with --results: rewrite")
  parser.add_argument("--metric", default=None,
                      help="a results.json key (default: test/student_accuracy when every "
                           "run has it, else eval/student_accuracy)")
  parser.add_argument("--against", default=None, metavar="LABEL",
                      help="a group label, or a part of exactly one, to pair the others with")
  parser.add_argument("--show_seeds", action="store_true", help="list each run's value")
  args = parser.parse_args(argv)
  if args.results:
    raise SystemExit(results_tables(args.results, args.write))
  if not args.workdirs:
    parser.error("pass finished workdirs, or --results=RESULTS.md")
  try:
    print(summary(args.workdirs, args.metric, args.against, args.show_seeds))
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  main()
