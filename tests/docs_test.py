"""The docs name only what exists: paths, modules, functions, flags, configs, targets."""

import os
import re

import pytest

from tests import doc_refs


@pytest.mark.parametrize("doc", doc_refs.DOCS + (doc_refs.NOTEBOOK,))
def test_every_reference_in_the_doc_exists(doc):
  assert doc_refs.problems(doc_refs.texts(doc)) == []


# Each line names something that exists; the test below renames one thing per line and
# expects exactly that line to be reported.
GOOD = """
`mpl_jax/train.py: train_and_evaluate` and `steps/baselines.py: finetune_step`
`mpl_jax.compiled.Compiled.step` and `estimators.settings` and `compiled.Compiled`
`tests/reliability_test.py::test_sigterm_checkpoints_the_current_step_and_exits_zero`
`configs/digits.py:fixmatch` and `benchmarks/results/aot_tpu.jsonl` and `mpl_jax/steps/`
`python -m mpl_jax.report --results=RESULTS.md --write`
`--config.num_steps=2000 --config.mpl.reward=taylor`
`launch/create.sh --dry-run`
`train.py` writes `results.json`; `run_times.jsonl` (`demo`)

```
make test
python main.py --config=configs/twomoon.py --workdir=/tmp/meta \\
    --config.mpl.estimator=meta
.venv/bin/python -m benchmarks.step_bench --labeled_batch=16 --cpu_convolutions=eigen
```
"""

PLANTED = [
    ("train_and_evaluate`", "train_and_evaluatee`", "defines no 'train_and_evaluatee'"),
    ("finetune_step`", "finetune_stepp`", "defines no 'finetune_stepp'"),
    ("Compiled.step`", "Compiled.stepp`", "defines no 'Compiled.stepp'"),
    ("estimators.settings`", "estimators.setting`", "defines no 'setting'"),
    ("exits_zero`", "exits_one`", "exits_one"),
    ("digits.py:fixmatch", "digits.py:fixmach", "fixmach"),
    ("aot_tpu.jsonl", "aot_gpu.jsonl", "no such file"),
    ("--write`", "--writ`", "--writ"),
    ("mpl.reward=taylor", "mpl.rewards=taylor", "mpl.rewards"),
    ("--dry-run", "--dryrun", "--dryrun"),
    ("make test", "make tests", "make tests"),
    ("mpl.estimator=meta", "mpl.estimatr=meta", "mpl.estimatr"),
    ("--labeled_batch=16", "--labelled_batch=16", "--labelled_batch"),
    ("mpl_jax/steps/", "mpl_jax/step/", "no such file"),
    ("`train.py`", "`trainer.py`", "`trainer.py`: no file of that name"),
    ("`results.json`", "`result.json`", "`result.json`: no file of that name"),
    ("`run_times.jsonl`", "`run_time.jsonl`", "`run_time.jsonl`: no file of that name"),
]


def test_the_good_references_resolve():
  assert doc_refs.problems(GOOD) == []


@pytest.mark.parametrize("old,new,reported", PLANTED, ids=[p[1] for p in PLANTED])
def test_a_planted_stale_reference_is_reported(old, new, reported):
  assert GOOD.count(old) == 1
  found = doc_refs.problems(GOOD.replace(old, new))
  assert len(found) == 1 and reported in found[0], found


# --- WORKSPACE.md's table of logged metrics against what short runs write -------------

WORKSPACE = "WORKSPACE.md"
CONDITIONS = ("test split", ">5 classes", "ReaL")


def metric_rows(text: str) -> list[tuple[str, set[str]]]:
  """(tag, written-by tokens) of each row of WORKSPACE.md's table of logged metrics."""
  section = text.split("## Logged metrics", 1)[1].split("\n## ", 1)[0]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    tag = re.fullmatch(r"`([\w/<>]+)`", cells[0]) if line.startswith("|") else None
    if tag:
      rows.append((tag.group(1), {t.strip() for t in cells[1].split(",")}))
  return rows


def documented_tags(rows, method: str, *, finetune: bool, grad_parts: bool,
                    conditions: set[str]) -> set[str]:
  """The tags the table says a run of `method` writes, with `<net>` expanded."""
  from mpl_jax import methods  # pylint: disable=g-import-not-at-top
  nets = ["student", "student_ema"]
  if methods.get(method).teacher is methods.IMAGES:
    nets.append("teacher")
  tags = set()
  for tag, by in rows:
    runs = by - set(CONDITIONS)
    if not by & set(CONDITIONS) <= conditions:
      continue
    if ("all" in runs or method in runs or (finetune and "finetune" in runs)
        or (grad_parts and "log_grad_parts" in runs)):
      tags |= {tag.replace("<net>", n) for n in nets} if "<net>" in tag else {tag}
  return tags


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """Two-step runs: each TwoMoon method (MPL with finetuning and its gradient parts) and
  a digits run (test split, 10 classes). (name, method, finetune, grad_parts,
  conditions) -> the tags its TensorBoard events hold."""
  from configs import digits  # pylint: disable=g-import-not-at-top
  from mpl_jax import plots  # pylint: disable=g-import-not-at-top
  from mpl_jax import train  # pylint: disable=g-import-not-at-top
  from tests.helpers import tiny_config  # pylint: disable=g-import-not-at-top
  out = {}

  def run(name, c, conditions=()):
    c.num_steps = 2
    c.pseudo_labels.teacher_steps = 2
    c.log_every_steps = c.eval.every_steps = 1
    c.checkpoint.every_steps = 100
    c.print_progress = False
    workdir = str(tmp_path_factory.mktemp(name))
    train.train_and_evaluate(c, workdir)
    key = (name, c.method, c.finetune.num_steps > 0, bool(c.mpl.log_grad_parts),
           frozenset(conditions))
    out[key] = set(plots.read_scalars(workdir))
    return workdir

  teacher_dir = None
  for method in ("supervised", "pseudo_labels", "uda", "fixmatch", "mpl", "reduced_mpl"):
    c = tiny_config(method)
    c.finetune.num_steps = 1 if method == "mpl" else 0
    c.mpl.log_grad_parts = method == "mpl"
    if method == "reduced_mpl":
      c.reduced_mpl.large_teacher_workdir = teacher_dir
    workdir = run(method, c)
    teacher_dir = teacher_dir or workdir
  c = digits.get_config("supervised,runlocal")
  run("digits", c, ("test split", ">5 classes"))
  return out


def test_workspace_lists_exactly_the_tags_short_runs_write(written):
  rows = metric_rows(open(os.path.join(doc_refs.ROOT, WORKSPACE)).read())
  assert len(rows) >= 30
  for (name, method, finetune, grad_parts, conditions), tags in written.items():
    expected = documented_tags(rows, method, finetune=finetune, grad_parts=grad_parts,
                               conditions=conditions)
    assert tags == expected, (f"{name}: written, not in {WORKSPACE}: {sorted(tags - expected)}"
                              f"; in {WORKSPACE}, not written: {sorted(expected - tags)}")
  every = set().union(*written.values())
  for tag, by in rows:  # every row but ReaL's is written by one of the runs
    if "ReaL" not in by:
      assert any(re.fullmatch(tag.replace("<net>", r"\w+"), t) for t in every), tag


def test_a_removed_or_unknown_tag_is_caught(written):
  text = open(os.path.join(doc_refs.ROOT, WORKSPACE)).read()
  (name, method, finetune, grad_parts, conditions), tags = next(
      (k, v) for k, v in written.items() if k[1] == "uda")
  rows = metric_rows(text.replace("| `uda/mask_rate` |", "| `uda/masked_rate` |"))
  expected = documented_tags(rows, method, finetune=finetune, grad_parts=grad_parts,
                             conditions=conditions)
  assert tags - expected == {"uda/mask_rate"} and expected - tags == {"uda/masked_rate"}
