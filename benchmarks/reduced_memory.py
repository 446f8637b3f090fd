"""Memory of reduced MPL against full MPL: the compiled step's memory analysis.

Full MPL holds two image networks (teacher and student, each with optimizer state; the
student also with its EMA) and runs both on images. Reduced MPL (`method=reduced_mpl`)
holds one: its teacher is a small MLP on a frozen large teacher's logits, computed once
before training. Both steps are compiled here for the same student, batch and
optimizers, nothing is run, and one JSON line per variant gives the parameters, the train
state's bytes and the compiled step's peak bytes (arguments + outputs - donated +
temporaries, `step_bench.peak_memory`). The large teacher's one inference pass over the
data happens before training, without the student, and is not part of the step.

  .venv/bin/python -m benchmarks.reduced_memory --depth=28 --width=2 --labeled_batch=128 --mu=7
  .venv/bin/python -m benchmarks.reduced_memory --model=resnet50 --labeled_batch=32 --mu=7
Imports no TensorFlow.
"""

import argparse
import json

import jax

from benchmarks import jax_case
from benchmarks import step_bench
from mpl_jax import compiled as compiled_lib
from mpl_jax import config_files
from mpl_jax import networks


def _bytes(tree) -> int:
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def measure(*, model: str = "wide_resnet", depth: int = 28, width: int = 2,
            labeled_batch: int = 128, mu: int = 7, image_size: int | None = None,
            hidden: tuple[int, ...] = (128,)) -> list[dict]:
  """One row per variant ('mpl', 'reduced_mpl'): sizes and compiled peak memory.

  Both are built from the case's config file (`jax_case.Case`): as it stands for `mpl`,
  and with `method=reduced_mpl` (teacher: `hidden` on the logits; no UDA) for the other.
  """
  case = jax_case.Case(model=model, depth=depth, width=width, labeled_batch=labeled_batch,
                       mu=mu, image_size=image_size)
  jax_case.check(case)
  reduced = {"method": "reduced_mpl", "reduced_mpl.hidden": tuple(hidden), "uda.weight": 0.0}
  b, u = case.labeled_batch, case.unlabeled_batch

  rows = []
  for variant, overrides in (("mpl", {}), ("reduced_mpl", reduced)):
    config = config_files.load(case.config_file, {**case.overrides(), **overrides})
    run = compiled_lib.Compiled(networks.build(config), mesh=None,
                                skip_nonfinite=config.skip_nonfinite)
    state, step_batch = run.abstract_state(), run.abstract_batch(b, u)
    compiled = run.lower(run.nets.phases[0], b, u).compile()
    m = compiled.memory_analysis()
    rows.append({
        "variant": variant, **case.describe(), "reduced_hidden": list(hidden),
        "teacher_params": _count(state.teacher.params),
        "student_params": _count(state.student.params),
        "state_bytes": _bytes(state), "batch_bytes": _bytes(step_batch),
        "argument_bytes": int(m.argument_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "peak_bytes": step_bench.peak_memory(compiled),
        "backend": jax.default_backend()})
  full_row, small_row = rows
  for key in ("state_bytes", "temp_bytes", "peak_bytes"):
    small_row[f"{key}_vs_mpl"] = small_row[key] / full_row[key]
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="wide_resnet", choices=jax_case.MODELS)
  parser.add_argument("--depth", type=int, default=28)
  parser.add_argument("--width", type=int, default=2)
  parser.add_argument("--labeled_batch", type=int, default=128)
  parser.add_argument("--mu", type=int, default=7)
  parser.add_argument("--image_size", type=int, default=None)
  parser.add_argument("--hidden", type=int, nargs="+", default=[128])
  args = parser.parse_args(argv)
  for row in measure(model=args.model, depth=args.depth, width=args.width,
                     labeled_batch=args.labeled_batch, mu=args.mu,
                     image_size=args.image_size, hidden=tuple(args.hidden)):
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
