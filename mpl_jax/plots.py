"""Training curves of one run, `DIR/curves.png`, drawn from its own TensorBoard events.

`train_and_evaluate` calls `write_curves` when a run finishes; to redraw (or draw a run
that stopped early):

  python -m mpl_jax.plots DIR [DIR...]

Panels are chosen by the tags the run logged, so a supervised run gets no teacher, reward
or feedback panels. The events are read with TensorBoard's reader (it reaches gs:// through
TensorFlow's file system when TensorFlow is installed) and the PNG is written through
etils.epath, so a gs:// workdir works like a local one.
"""

import dataclasses
import fnmatch
import io
import os
import sys
from typing import Iterable, Sequence

import numpy as np
from etils import epath

from mpl_jax import files
from mpl_jax import methods

CURVES_FILE = "curves.png"
EVENTS_PATTERN = "events.out.tfevents*"

ACCURACY_TAGS = ("eval/student_accuracy", "eval/student_ema_accuracy",
                 "eval/teacher_accuracy")
TEST_TAGS = ("test/student_accuracy", "test/student_ema_accuracy", "test/teacher_accuracy")
LOSS_TAGS = ("teacher/loss_labeled", "teacher/loss_uda", "student/loss_unlabeled",
             "mpl/labeled_loss_after")
LOSS_PATTERN = "*/loss*"  # any other loss the run logged
REWARD_TAGS = ("mpl/reward", "mpl/baseline")
MASK_TAGS = ("uda/mask_rate",)
FEEDBACK_TAGS = ("teacher/feedback_to_supervised",)

Series = dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps, values)


@dataclasses.dataclass(frozen=True)
class Panel:
  """One plot of the figure: which tags it draws, and how."""
  title: str
  tags: tuple[str, ...]            # lines, in drawing order
  points: tuple[str, ...] = ()     # drawn as markers (test accuracies, logged once)
  log_y: bool = False
  ylabel: str = ""


def plan_panels(tags: Iterable[str]) -> list[Panel]:
  """The panels a run with these tags gets: each only when one of its tags was logged."""
  tags = set(tags)
  present = lambda names: tuple(t for t in names if t in tags)
  other_losses = tuple(sorted(t for t in tags if fnmatch.fnmatch(t, LOSS_PATTERN)
                              and t not in LOSS_TAGS))
  candidates = [
      Panel("Accuracy", present(ACCURACY_TAGS), present(TEST_TAGS), ylabel="accuracy"),
      Panel("Losses", present(LOSS_TAGS) + other_losses, ylabel="loss"),
      Panel("Reward h and baseline", present(REWARD_TAGS)),
      Panel("UDA mask rate", present(MASK_TAGS), ylabel="fraction kept"),
      Panel("Teacher feedback / supervised gradient", present(FEEDBACK_TAGS), log_y=True,
            ylabel="norm ratio"),
  ]
  return [p for p in candidates if p.tags or p.points]


def _event_files(workdir: epath.Path) -> list[epath.Path]:
  folder = workdir / "tensorboard"
  return sorted(folder.glob(EVENTS_PATTERN)) if folder.exists() else []


def read_scalars(workdir: files.PathLike) -> Series:
  """Every scalar the run logged, by tag: (steps, values), sorted by step.

  A step logged twice (a run resumed from an earlier checkpoint) keeps its newest value.
  """
  root = files.path(workdir)
  if not _event_files(root):
    raise ValueError(f"{root / 'tensorboard'} has no TensorBoard event files; pass the "
                     "workdir of a run that has logged metrics")
  # Imported here: the reader pulls in TensorFlow (for gs://), which a bad path need not.
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  # pylint: enable=g-import-not-at-top

  accumulator = event_accumulator.EventAccumulator(
      os.fspath(root / "tensorboard"),
      size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  by_tag: dict[str, dict[int, float]] = {}
  for tag in accumulator.Tags().get(event_accumulator.TENSORS, []):
    for event in accumulator.Tensors(tag):
      value = tensor_util.make_ndarray(event.tensor_proto)
      if value.size == 1:  # scalars only; other summaries are not curves
        by_tag.setdefault(tag, {})[event.step] = float(value.reshape(()))
  return {tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)]))
          for tag, points in by_tag.items()}


def _title(root: epath.Path) -> str:
  results = files.read_json(root / "results.json")
  config = files.read_json(root / "config.json")
  method = results.get("method") or config.get("method") or "unknown method"
  parts = [method]
  estimator = config.get("mpl", {}).get("estimator")
  entry = methods.METHODS.get(method)
  if entry is not None and entry.feedback and estimator:
    parts.append(f"estimator {estimator}")
  if "seed" in config:
    parts.append(f"seed {config['seed']}")
  if "step" in results:
    parts.append(f"{results['step']} steps")
  return f"{root.parent.name}/{root.name}: " + ", ".join(parts)


def _phase_boundaries(root: epath.Path) -> list[tuple[str, int]]:
  phase_ends = files.read_json(root / "phase_ends.json")
  return sorted(((name, int(end["step"])) for name, end in phase_ends.items()),
                key=lambda item: item[1])


def _draw(ax, panel: Panel, series: Series, boundaries: Sequence[tuple[str, int]]) -> None:
  colors = {}
  for tag in panel.tags:
    steps, values = series[tag]
    if panel.log_y:  # zeros (e.g. while the student waits) have no place on a log axis
      values = np.where(np.asarray(values) > 0, values, np.nan)
    marker = "o" if len(steps) <= 12 else None  # a few evaluations: show each one
    (line,) = ax.plot(steps, values, label=tag, marker=marker, markersize=3, linewidth=1.2)
    colors[tag.partition("/")[2]] = line.get_color()
  for tag in panel.points:  # in the colour of the same network's validation curve
    steps, values = series[tag]
    ax.plot(steps[-1:], values[-1:], linestyle="none", marker="*", markersize=11,
            color=colors.get(tag.partition("/")[2]), markeredgecolor="k",
            markeredgewidth=0.5, label=f"{tag} (end)")
  if panel.log_y:
    if any(np.any(np.asarray(series[t][1]) > 0) for t in panel.tags):
      ax.set_yscale("log")
  else:  # values, not "1e-6+6.931e-1" and offsets from it, on a nearly flat curve
    ax.ticklabel_format(axis="y", useOffset=False)
  for name, step in boundaries:
    ax.axvline(step, color="gray", linestyle=":", linewidth=1, label=f"end of {name}")
  ax.set_title(panel.title, fontsize=10)
  ax.set_xlabel("step")
  if panel.ylabel:
    ax.set_ylabel(panel.ylabel)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)


def write_curves(workdir: files.PathLike) -> epath.Path:
  """Draws `workdir/curves.png` from `workdir/tensorboard`; returns its path."""
  root = files.path(workdir)
  series = read_scalars(root)
  panels = plan_panels(series)
  if not panels:
    raise ValueError(f"{root / 'tensorboard'} has no accuracy, loss, reward or mask-rate "
                     "metrics to draw; it holds only " + ", ".join(sorted(series)))
  # A bare Figure renders PNGs with Agg and leaves pyplot's backend (a notebook's) alone.
  from matplotlib import figure  # pylint: disable=g-import-not-at-top

  columns = min(3, len(panels))
  rows = -(-len(panels) // columns)
  width, height = 5.2 * columns, 3.8 * rows + 0.5  # inches
  fig = figure.Figure(figsize=(width, height))
  # Fixed margins (in inches), not tight_layout: that would draw the figure twice.
  fig.subplots_adjust(left=0.85 / width, right=1 - 0.2 / width, bottom=0.5 / height,
                      top=1 - 0.65 / height, wspace=0.3, hspace=0.38)
  axes = fig.subplots(rows, columns, squeeze=False).ravel()
  boundaries = _phase_boundaries(root)
  for ax, panel in zip(axes, panels):
    _draw(ax, panel, series, boundaries)
  for ax in axes[len(panels):]:
    ax.set_visible(False)
  fig.suptitle(_title(root), fontsize=11)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=90)
  target = root / CURVES_FILE
  target.write_bytes(buffer.getvalue())
  return target


def main(argv: Sequence[str] | None = None) -> None:
  """Draws curves.png in each workdir given; prints the paths."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdirs", nargs="+", metavar="DIR")
  args = parser.parse_args(argv)
  failed = False
  for workdir in args.workdirs:
    try:
      print(write_curves(workdir), flush=True)
    except ValueError as err:
      print(f"error: {err}", file=sys.stderr, flush=True)
      failed = True
  if failed:
    raise SystemExit(1)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the reader imports TensorFlow
  main()
