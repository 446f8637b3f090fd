"""Seconds per code cell of notebooks/mpl_colab.ipynb in one setting, run twice in one
folder: the times its text quotes, and whether a rerun shows the same plots.

Each run executes the committed notebook in a fresh kernel (nbclient), with
MPL_NOTEBOOK_SETTING and MPL_NOTEBOOK_WORKDIR set; the second run uses the first run's
folder, as a user who runs the notebook again would. One JSON line: per run the seconds of
each code cell (nbclient's execute_input to execute_reply timestamps) and their sum,
whether the two runs' PNG outputs are identical, the machine and the load.

  .venv/bin/python -m benchmarks.notebook_times --setting=cpu >> benchmarks/results/notebook_cpu.jsonl
"""

import argparse
import datetime
import os
import tempfile

from benchmarks import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "mpl_colab.ipynb")


def _seconds(cell) -> float:
  stamps = cell.metadata.get("execution", {})
  start = datetime.datetime.fromisoformat(stamps["iopub.execute_input"].replace("Z", "+00:00"))
  end = datetime.datetime.fromisoformat(stamps["shell.execute_reply"].replace("Z", "+00:00"))
  return (end - start).total_seconds()


def run_notebook(folder: str) -> tuple[list[float], list[str]]:
  """(seconds of each code cell, the PNGs shown) of one run in `folder`."""
  # pylint: disable=g-import-not-at-top
  import nbformat
  from nbclient import NotebookClient
  # pylint: enable=g-import-not-at-top
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=3600, kernel_name="python3", record_timing=True,
                 resources={"metadata": {"path": folder}}).execute()
  cells = [c for c in nb.cells if c.cell_type == "code"]
  images = [out["data"]["image/png"] for c in cells for out in c.get("outputs", [])
            if "image/png" in out.get("data", {})]
  return [_seconds(c) for c in cells], images


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--setting", default="cpu", choices=("smoke", "cpu", "long"))
  parser.add_argument("--runs", type=int, default=2)
  timing.add_quiet_flags(parser)
  args = parser.parse_args()
  before = timing.wait_until_quiet(args)
  folder = tempfile.mkdtemp(prefix="mpl_notebook_")
  os.environ.update({"MPL_NOTEBOOK_SETTING": args.setting, "JAX_PLATFORMS": "cpu",
                     "MPL_NOTEBOOK_WORKDIR": os.path.join(folder, "runs"),
                     "TF_CPP_MIN_LOG_LEVEL": "3"})
  runs = [run_notebook(folder) for _ in range(args.runs)]
  timing.emit({"benchmark": "notebook_times", "setting": args.setting, "runs": args.runs,
               "cell_s": [[round(s, 2) for s in seconds] for seconds, _ in runs],
               "total_s": [round(sum(seconds), 1) for seconds, _ in runs],
               "same_plots": all(images == runs[0][1] for _, images in runs),
               "plots": len(runs[0][1]), **timing.machine_facts()}, before)


if __name__ == "__main__":
  main()
