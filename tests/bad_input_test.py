"""RELIABILITY.md's bad-input table, row by row: each row is run through main.py.

Every row of the table is one parametrized case. A row whose input is command-line
arguments (`--config...`) is run through `main.main` in this process with those arguments,
`--workdir=DIR` and `--config=configs/twomoon.py` unless they name a config; a row
described in words runs the scenario of the same words in `SCENARIOS`. Either way the case asserts exit code 2, that
the last line on stderr is the table's message (`DIR` stands for the workdir, `[...]` for
a list) and that no checkpoint was written. A row that is neither arguments nor a known
scenario fails: the table cannot hold a row that no test runs.
"""

import contextlib
import io
import os
import re
import sys

import pytest
from absl import flags

from tests.helpers import ROOT, tiny_config

TABLE_FILE = os.path.join(ROOT, "RELIABILITY.md")
TABLE_HEADING = "## Bad input"


def table_rows(text: str) -> list[tuple[str, str]]:
  """(input cell, message) of each row of the table under TABLE_HEADING."""
  section = text.split(TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if not line.startswith("|") or len(cells) != 2 or set(cells[0]) <= set("-: "):
      continue
    if cells == ["input", "message"]:
      continue
    message = re.fullmatch(r"`(error: .*)`(.*)", cells[1])
    if not message:
      raise ValueError(f"RELIABILITY.md row {cells[0]!r}: the message must be one `error: "
                       f"...` code span, got {cells[1]!r}")
    rows.append((cells[0], message.group(1)))
  return rows


def arguments(cell: str) -> list[str] | None:
  """The arguments of an input cell that is one code span of `--flag` arguments."""
  found = re.fullmatch(r"`(--[^`]+)`", cell)
  return found.group(1).split() if found else None


def message_pattern(message: str, workdir: str) -> re.Pattern:
  """The table's message as a regex: DIR is the workdir, [...] any list."""
  parts = re.split(r"(DIR|\[\.\.\.\])", message)
  regex = "".join(re.escape(workdir) if p == "DIR" else r"\[.*\]" if p == "[...]"
                  else re.escape(p) for p in parts)
  return re.compile(regex)


def run_main_here(args: list[str], workdir: str) -> tuple[int, list[str]]:
  """main.py's parse and main in this process: (exit code, stderr lines)."""
  import main  # pylint: disable=g-import-not-at-top
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # the previous case's override flags
  flags.FLAGS.unparse_flags()
  config = [] if any(a.startswith("--config=") for a in args) else [
      "--config=configs/twomoon.py"]
  argv = ["main.py", *config, f"--workdir={workdir}", *args]
  err = io.StringIO()
  old_argv, code = sys.argv, 0
  sys.argv = argv  # ml_collections reads the overrides from sys.argv
  try:
    with contextlib.redirect_stderr(err), contextlib.chdir(ROOT):
      main._parse_flags(argv)  # pylint: disable=protected-access
      main.main([])
  except SystemExit as e:
    code = e.code
  finally:
    sys.argv = old_argv
    flags.FLAGS.unparse_flags()
  return code, err.getvalue().strip().splitlines()


def _batch_of_six(workdir: str):
  return run_main_here(["--config.mesh.num_devices=8", "--config.data.labeled_batch_size=6"],
                       workdir)


def _workdir_of_another_experiment(workdir: str):
  from mpl_jax import train  # pylint: disable=g-import-not-at-top
  c = tiny_config("mpl")
  c.num_steps = 2
  c.checkpoint.every_steps = 2
  train.train_and_evaluate(c, workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  code, lines = run_main_here(["--config=configs/twomoon.py:supervised"], workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  return code, lines


# Rows described in words: the scenario each one names. The workdir may hold checkpoints
# of its own making; the scenario checks they are untouched.
SCENARIOS = {
    "a batch of 6 on 8 devices": _batch_of_six,
    "a workdir of another experiment": _workdir_of_another_experiment,
}


def run_row(cell: str, message: str, workdir: str) -> str | None:
  """Runs one row; None if it behaves as the table says, else what went wrong."""
  args = arguments(cell)
  if args is None and cell not in SCENARIOS:
    return (f"row {cell!r} is neither `--config...` arguments nor a scenario of "
            f"tests/bad_input_test.py: SCENARIOS")
  if args is not None:
    code, lines = run_main_here(args, workdir)
    if os.path.exists(os.path.join(workdir, "checkpoints")):
      return f"row {cell!r} wrote checkpoints"
  else:
    code, lines = SCENARIOS[cell](workdir)
  last = lines[-1] if lines else ""
  if code != 2:
    return f"row {cell!r}: exit code {code}, not 2 ({last!r})"
  if not message_pattern(message, workdir).fullmatch(last):
    return f"row {cell!r}: stderr ends with {last!r}, the table says {message!r}"
  return None


ROWS = table_rows(open(TABLE_FILE).read())


def test_the_table_has_its_rows():
  assert len(ROWS) >= 25 and len({cell for cell, _ in ROWS}) == len(ROWS)


@pytest.mark.parametrize("cell,message", ROWS, ids=[cell.strip("`") for cell, _ in ROWS])
def test_row(tmp_path, cell, message):
  problem = run_row(cell, message, str(tmp_path / "workdir"))
  assert problem is None, problem


def test_a_row_without_a_test_or_with_a_stale_message_fails(tmp_path):
  text = ("## Bad input\n\n| input | message |\n|---|---|\n"
          "| a config with the wrong moon | `error: no moon` |\n"
          "| `--config.method=mixmatch` | `error: method='mixmatch' is unknown; valid: "
          "['supervised', 'uda']` |\n"
          "| `--config.seed=-1` | `error: seed=-1 must be >= 0` |\n")
  (untested, _), (stale, stale_message), (good, good_message) = table_rows(text)
  assert "neither" in run_row(untested, "error: no moon", str(tmp_path / "a"))
  assert "the table says" in run_row(stale, stale_message, str(tmp_path / "b"))
  assert run_row(good, good_message, str(tmp_path / "c")) is None
