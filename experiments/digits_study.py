"""Digits study: every number in RESULTS.md, section Digits.

Each (method, seed) trains `configs/digits.py` in its own workdir under --root, exactly as
`main.py` would; a finished workdir (results.json present) is read, not retrained, and an
interrupted one resumes from its checkpoint. Accuracy is on the fixed 500-image test
split, evaluated once at the end; mean +- std (sample std) over seeds.

  .venv/bin/python experiments/digits_study.py --seeds 0-4 --root /tmp/digits_study
  .venv/bin/python experiments/digits_study.py --seeds 0-4 --methods mpl,mpl_off --show_seeds
  .venv/bin/python experiments/digits_study.py --seeds 0-4 --methods uda,reduced_mpl
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import digits  # noqa: E402
from mpl_jax import methods  # noqa: E402
from mpl_jax import report  # noqa: E402
from mpl_jax import xla_options  # noqa: E402

# name -> (config method, overrides); `mpl` is the default estimator (REINFORCE, dot
# reward, sampled labels) and `mpl_off` the same run with the teacher's feedback removed.
VARIANTS = {
    "supervised": ("supervised", {}),
    "uda": ("uda", {}),
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


def parse_seeds(text: str) -> list[int]:
  seeds = []
  for part in text.split(","):
    if "-" in part:
      lo, hi = part.split("-")
      seeds.extend(range(int(lo), int(hi) + 1))
    else:
      seeds.append(int(part))
  return seeds


def make_config(variant: str, seed: int, root: str = "/tmp/digits_study"):
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


def run_one(variant: str, seed: int, root: str) -> str:
  """The workdir of one finished run, training it (or finishing it) when needed."""
  workdir = os.path.join(root, variant, f"seed{seed}")
  if not os.path.exists(os.path.join(workdir, "results.json")):
    from mpl_jax import train  # pylint: disable=g-import-not-at-top
    start = time.time()
    if VARIANTS[variant][0] == "reduced_mpl":  # its large teacher first
      run_one(LARGE_TEACHER, seed, root)
    train.train_and_evaluate(make_config(variant, seed, root), workdir)
    print(f"  {variant} seed {seed}: {time.time() - start:.0f} s", flush=True)
  return workdir


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default="0-4")
  parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                      help=f"comma-separated, from {sorted(VARIANTS)}")
  parser.add_argument("--root", default="/tmp/digits_study")
  parser.add_argument("--show_seeds", action="store_true")
  parser.add_argument("--reward_size", action="store_true",
                      help="also print the mean |h| of the logged steps, per method and seed")
  args = parser.parse_args()
  seeds = parse_seeds(args.seeds)
  methods = args.methods.split(",")
  unknown = sorted(set(methods) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown methods {unknown}; valid: {sorted(VARIANTS)}")

  groups = [report.Group(variant, report.load_runs([run_one(variant, seed, args.root)
                                                    for seed in seeds]))
            for variant in methods]

  print(f"\nDigits, 5 labels per class, test split (500 images), seeds {args.seeds}")
  print(report.table(groups, "test/student_accuracy", label_header="method",
                     count_column=False, all_columns=True))
  if args.show_seeds:
    print("\n" + report.per_seed(groups, "test/student_accuracy"))
  if args.reward_size:
    print("\nmean |h| over the logged MPL steps (the feedback term's scale, baseline off):")
    for variant in methods:
      sizes = [reward_size(os.path.join(args.root, variant, f"seed{seed}")) for seed in seeds]
      if all(size is not None for size in sizes):
        print(f"  {variant:<14} " + " ".join(f"{size:.3g}" for size in sizes))


def reward_size(workdir: str) -> float | None:
  """The mean |mpl/reward| a run logged (None for a run without a reward)."""
  from mpl_jax import plots  # pylint: disable=g-import-not-at-top
  series = plots.read_scalars(workdir).get("mpl/reward")
  return None if series is None else float(abs(series[1]).mean())


if __name__ == "__main__":
  xla_options.prefer_eigen_cpu_convolutions()  # as main.py: before JAX computes anything
  main()
