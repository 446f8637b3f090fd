"""The Colab notebook runs top to bottom, in its `smoke` setting, in a fresh kernel, twice.

The notebook is executed as committed (no copy), with MPL_NOTEBOOK_SETTING=smoke choosing
its shortest run lengths; a failing cell fails the test with the cell's error. The kernel
is a new process with the test's Python, so it sees one CPU device, as a user's would.
"""

import os

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "mpl_colab.ipynb")


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, cell.source[:60]


def _execute(folder: str) -> list[str]:
  """Runs the committed notebook in its smoke setting; the PNGs it shows, in order."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": folder}})
  try:
    client.execute()
  except CellExecutionError as e:
    pytest.fail(f"a notebook cell failed:\n{str(e)[-3000:]}")
  return [out["data"]["image/png"] for cell in nb.cells if cell.cell_type == "code"
          for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_twice_in_one_folder(tmp_path, monkeypatch):
  """A second run in the same folder, resuming (MPL_NOTEBOOK_RESUME=1), reads the finished
  digits runs back instead of training them and shows the same plots. (Without it, each
  training cell clears its runs' folders first: a rerun is a first run.)"""
  monkeypatch.setenv("MPL_NOTEBOOK_SETTING", "smoke")
  monkeypatch.setenv("MPL_NOTEBOOK_WORKDIR", str(tmp_path / "runs"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
  first = _execute(str(tmp_path))
  # TwoMoon boundaries, feedback plot, augmentation previews, training curves, curves.png
  assert len(first) >= 5
  runs = tmp_path / "runs" / "smoke"
  assert (runs / "twomoon" / "twomoon.png").exists()
  for estimator in ("reinforce", "off"):
    assert (runs / f"digits_{estimator}" / "results.json").exists()
    assert (runs / f"digits_{estimator}" / "curves.png").exists()
  saved = "digits_*/checkpoints/*/commit_success.txt"
  mtimes = {p: p.stat().st_mtime_ns for p in runs.glob(saved)}
  monkeypatch.setenv("MPL_NOTEBOOK_RESUME", "1")
  second = _execute(str(tmp_path))
  assert second == first
  assert mtimes and mtimes == {p: p.stat().st_mtime_ns for p in runs.glob(saved)}
