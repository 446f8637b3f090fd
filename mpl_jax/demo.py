"""The TwoMoon demo (paper Figure 2): supervised, pseudo labels and MPL on one seed.

Prints their accuracies on all 2,000 points beside the size of MPL's feedback, and writes
`twomoon.png` with the three decision boundaries into the workdir. Each method trains in
its own sub-workdir through `train_and_evaluate`; the demo clears those sub-workdirs first,
so every run trains from scratch and reports this run's feedback.
"""

import os
import shutil
from typing import Sequence

import numpy as np

from mpl_jax import train

DEMO_METHODS = ("supervised", "pseudo_labels", "mpl")
TITLES = {"supervised": "Supervised", "pseudo_labels": "Pseudo Labels",
          "mpl": "Meta Pseudo Labels"}


def plot_boundaries(results: dict, path: str) -> None:
  """One panel per method: the student's decision regions, all points, the labeled ones."""
  # A bare Figure renders with Agg and leaves pyplot's backend (a notebook's) alone.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(5 * len(results), 4.4))
  axes = fig.subplots(1, len(results))
  for ax, (method, result) in zip(np.atleast_1d(axes), results.items()):
    exp = result.experiment
    ds = exp.dataset
    lo, hi = ds.eval_x.min(axis=0) - 0.4, ds.eval_x.max(axis=0) + 0.4
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    student = result.state.student
    logits = train.predict_numpy(exp, student.params, student.model_state, grid)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob = (prob / prob.sum(1, keepdims=True))[:, 1].reshape(gx.shape)
    ax.contourf(gx, gy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
    ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(ds.eval_x[:, 0], ds.eval_x[:, 1], c=ds.eval_y, cmap="RdBu_r", s=3, alpha=0.6)
    labeled = ds.extras["labeled_indices"]
    ax.scatter(ds.eval_x[labeled, 0], ds.eval_x[labeled, 1], c=ds.eval_y[labeled],
               cmap="RdBu_r", s=160, marker="*", edgecolors="k", linewidths=1.2, vmin=0,
               vmax=1)
    acc = result.eval_metrics["eval/student_accuracy"]
    ax.set_title(f"{TITLES.get(method, method)}: {100 * acc:.1f}%")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("TwoMoon, 6 labeled points (stars); student decision boundary in black")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def run(workdir: str, seed: int = 0, num_steps: int | None = None,
        methods: Sequence[str] = DEMO_METHODS, log_every_steps: int | None = None) -> dict:
  """Trains each method on TwoMoon, prints the table, writes the PNG; returns results.

  `num_steps` overrides the config's steps (and the pseudo-labels teacher's);
  `log_every_steps` how often step metrics are logged (default: the config's, or a tenth
  of `num_steps`).
  """
  from configs import twomoon  # pylint: disable=g-import-not-at-top
  results = {}
  for method in methods:
    config = twomoon.get_config(method)
    config.seed = seed
    config.print_progress = False
    if num_steps is not None:
      config.num_steps = num_steps
      config.pseudo_labels.teacher_steps = num_steps
      config.log_every_steps = max(num_steps // 10, 1)
      config.eval.every_steps = num_steps
      config.checkpoint.every_steps = num_steps
    if log_every_steps is not None:
      config.log_every_steps = log_every_steps
    print(f"training {method} ...", flush=True)
    method_dir = os.path.join(workdir, method)
    shutil.rmtree(method_dir, ignore_errors=True)
    results[method] = train.train_and_evaluate(config, method_dir)

  print(f"\nTwoMoon, seed {seed}: accuracy of the student on all 2,000 points")
  print(f"{'method':<16}{'student':>9}{'teacher':>9}   feedback / supervised teacher gradient")
  for method, result in results.items():
    m = result.eval_metrics
    teacher = m.get("eval/teacher_accuracy")
    ratio = result.history.get("teacher/feedback_to_supervised")
    ratio_text = (f"median {np.median(ratio):.1e}, max {np.max(ratio):.1e}"
                  if ratio is not None and len(ratio) else "-")
    teacher_text = f"{100 * teacher:8.1f}%" if teacher is not None else f"{'-':>9}"
    print(f"{method:<16}{100 * m['eval/student_accuracy']:8.1f}%{teacher_text}   {ratio_text}")
  path = os.path.join(workdir, "twomoon.png")
  plot_boundaries(results, path)
  print(f"\ndecision boundaries: {path}")
  return results
