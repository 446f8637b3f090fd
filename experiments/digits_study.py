"""Digits study: every number in RESULTS.md, section Digits.

Each (method, seed) trains `configs/digits.py` in its own workdir under --root, exactly as
`main.py` would, and appends one record to experiments/results/digits.jsonl
(`mpl_jax.records`) when it finishes; a (method, seed) whose record holds the same config
is read, not retrained, and an interrupted run resumes from its checkpoint. Accuracy is on
the fixed 500-image test split, evaluated once at the end; mean +- std (sample std) over
seeds. RESULTS.md's digits tables are rendered from the records
(`python -m mpl_jax.report --results=RESULTS.md`).

  .venv/bin/python experiments/digits_study.py --seeds 0-4 --root /tmp/digits_study
  .venv/bin/python experiments/digits_study.py --seeds 0-4 --methods mpl,mpl_off --show_seeds
  .venv/bin/python experiments/digits_study.py --seeds 0-4 --methods uda,reduced_mpl
  # RESULTS.md's pre-registered study, in its order, each record committed as it lands:
  .venv/bin/python experiments/digits_study.py --part preregistered --commit_records
"""

import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import digits  # noqa: E402
from mpl_jax import files  # noqa: E402
from mpl_jax import methods  # noqa: E402
from mpl_jax import records  # noqa: E402
from mpl_jax import xla_options  # noqa: E402

RECORDS = os.path.join(records.ROOT, "experiments", "results", "digits.jsonl")
STUDY = "digits"

# name -> (config method, overrides); `mpl` is the default estimator (REINFORCE, dot
# reward, sampled labels) and `mpl_off` the same run with the teacher's feedback removed.
VARIANTS = {
    "supervised": ("supervised", {}),
    "uda": ("uda", {}),
    "fixmatch": ("fixmatch", {}),
    "pseudo_labels": ("pseudo_labels", {}),
    "mpl": ("mpl", {}),
    "mpl_off": ("mpl", {"mpl.estimator": "off"}),
    # The dot reward of the plain step theta_S - eta * g_u (the paper's form), not of the
    # optimizer's real update (`mpl.student_update=real`, the default).
    "mpl_plain": ("mpl", {"mpl.student_update": "plain"}),
    # Reduced MPL on top of the same seed's finished UDA run (its student, frozen).
    "reduced_mpl": ("reduced_mpl", {}),
    "reduced_mpl_off": ("reduced_mpl", {"mpl.estimator": "off"}),
}
LARGE_TEACHER = "uda"  # the variant whose workdir reduced MPL reads its large teacher from
DEFAULT_METHODS = ("supervised", "uda", "mpl", "mpl_off")
# RESULTS.md, "Digits: does the teacher's feedback help?": the tested pair on seeds 20-34,
# then the other methods on seeds 20-29, seed by seed.
PREREGISTERED = ((("mpl", "mpl_off"), "20-34"),
                 (("supervised", "uda", "fixmatch", "pseudo_labels"), "20-29"))


def make_config(variant: str, seed: int, root: str = "/tmp/digits_study"):
  """The config of one run (the large teacher's workdir under `root`)."""
  method, overrides = VARIANTS[variant]
  config = digits.get_config(method)
  config.seed = seed
  if methods.get(method).needs_large_teacher:
    config.reduced_mpl.large_teacher_workdir = os.path.join(root, LARGE_TEACHER, f"seed{seed}")
  config.print_progress = False
  for field, value in overrides.items():
    section, key = field.split(".")
    config[section][key] = value
  return config


def recorded_config(variant: str, seed: int) -> dict:
  """The config a record holds: the run's, with the large teacher's workdir relative to
  the study's root (records do not depend on where the study ran)."""
  config = make_config(variant, seed).to_dict()
  if config["reduced_mpl"]["large_teacher_workdir"]:
    config["reduced_mpl"]["large_teacher_workdir"] = os.path.join(LARGE_TEACHER,
                                                                  f"seed{seed}")
  return config


def train_workdir(variant: str, seed: int, root: str) -> str:
  """The workdir of one run finished by this code, training (or finishing) it when
  needed; a finished workdir without a record is trained again (no record, no result)."""
  from mpl_jax import train  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(root, variant, f"seed{seed}")
  if VARIANTS[variant][0] == "reduced_mpl":  # its large teacher first
    run_one(LARGE_TEACHER, seed, root)
    train_workdir(LARGE_TEACHER, seed, root)
  if os.path.exists(os.path.join(workdir, "results.json")) and not _record(variant, seed):
    shutil.rmtree(workdir)
  if not os.path.exists(os.path.join(workdir, "results.json")):
    result = train.train_and_evaluate(make_config(variant, seed, root), workdir)
    if result.preempted:  # SIGTERM: checkpoint saved, no result and so no record
      print(f"  {variant} seed {seed}: stopped; rerun the study to resume it", flush=True)
      raise SystemExit(train.PREEMPTED_EXIT_CODE)
  return workdir


def _record(variant: str, seed: int) -> dict | None:
  return records.find(records.load(RECORDS), variant, seed, recorded_config(variant, seed))


def run_one(variant: str, seed: int, root: str) -> dict:
  """The record of one run: the stored one, or one written now after training."""
  found = _record(variant, seed)
  if found:
    return found
  start = time.time()
  workdir = train_workdir(variant, seed, root)
  wall = time.time() - start
  results = files.read_json(files.path(workdir) / "results.json")
  metrics = {k: v for k, v in results.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
  history = {}
  reward = reward_series(workdir)
  if reward is not None:
    history = {"steps": [int(s) for s in reward[0]], "mpl/reward": [float(v) for v in reward[1]]}
  record = records.make(STUDY, variant, seed, recorded_config(variant, seed),
                        VARIANTS[variant][1], metrics, wall, history)
  records.append(RECORDS, record)
  print(f"  {variant} seed {seed}: {wall:.0f} s, test/student_accuracy "
        f"{metrics['test/student_accuracy']:.3f}", flush=True)
  if COMMIT_RECORDS:
    commit_record(f"digits record: {variant}, seed {seed}")
  return record


COMMIT_RECORDS = False  # --commit_records: commit the records file after each record


def commit_record(message: str, tries: int = 10) -> None:
  """Commits the records file alone (retrying while another git command holds the index)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  folder, name = os.path.split(os.path.abspath(RECORDS))  # the repository holding it
  for attempt in range(tries):
    done = subprocess.run(["git", "-C", folder, "commit", "-q", "-m", message, "--", name],
                          capture_output=True, text=True)
    if done.returncode == 0:
      return
    if "index.lock" not in done.stderr and attempt:
      break
    subprocess.run(["git", "-C", folder, "add", name], capture_output=True)
    time.sleep(3)
  print(f"  could not commit the record: {done.stderr.strip()[:200]}", flush=True)


def main() -> None:
  global COMMIT_RECORDS, RECORDS
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--part", choices=("table", "preregistered"), default="table",
                      help="table: --methods on --seeds; preregistered: RESULTS.md's "
                           "pre-registered study, in its order")
  parser.add_argument("--commit_records", action="store_true",
                      help="git-commit experiments/results/digits.jsonl after each record")
  parser.add_argument("--records", default=RECORDS,
                      help="the records file (default: this checkout's); a study run from "
                           "a clean checkout of one commit can write to another's")
  parser.add_argument("--seeds", default="0-4")
  parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                      help=f"comma-separated, from {sorted(VARIANTS)}")
  parser.add_argument("--root", default="/tmp/digits_study")
  parser.add_argument("--show_seeds", action="store_true")
  parser.add_argument("--reward_size", action="store_true",
                      help="also print the mean |h| of the logged steps, per method and seed")
  args = parser.parse_args()
  COMMIT_RECORDS, RECORDS = args.commit_records, os.path.abspath(args.records)
  if args.part == "preregistered":
    for variants, seed_text in PREREGISTERED:
      for seed in records.parse_seeds(seed_text):
        for variant in variants:
          run_one(variant, seed, args.root)
    print("every record of the pre-registered study is in place; render RESULTS.md with "
          "python -m mpl_jax.report --results=RESULTS.md --write")
    return
  seeds = records.parse_seeds(args.seeds)
  methods = args.methods.split(",")
  unknown = sorted(set(methods) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown methods {unknown}; valid: {sorted(VARIANTS)}")

  for seed in seeds:  # seed by seed: a study cut short has whole seeds
    for variant in methods:
      run_one(variant, seed, args.root)
  spec = records.Spec("accuracy", {
      "file": os.path.relpath(RECORDS, records.ROOT), "variants": ",".join(methods),
      "metric": "test/student_accuracy", "seeds": args.seeds,
      "columns": "ema,per_seed" if args.show_seeds else "ema"})
  print(f"\nDigits, 5 labels per class, test split (500 images), seeds {args.seeds}")
  print(records.render(spec))
  if args.reward_size:
    print("\nmean |h| over the logged MPL steps (the feedback term's scale, baseline off):")
    for variant in methods:
      found = [_record(variant, seed) for seed in seeds]
      sizes = [np.abs(r["history"]["mpl/reward"]).mean() for r in found
               if "mpl/reward" in r.get("history", {})]
      if len(sizes) == len(seeds):
        print(f"  {variant:<14} " + " ".join(f"{size:.3g}" for size in sizes))


def reward_series(workdir: str):
  """The (steps, values) of mpl/reward a run logged (None for a run without a reward)."""
  from mpl_jax import plots  # pylint: disable=g-import-not-at-top
  return plots.read_scalars(workdir).get("mpl/reward")


if __name__ == "__main__":
  xla_options.prefer_eigen_cpu_convolutions()  # as main.py: before JAX computes anything
  main()
