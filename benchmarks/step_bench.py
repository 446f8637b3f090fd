r"""MPL step benchmark: the compiled step against the passes it is made of.

For each case (model, B, mu, estimator, dtype) it compiles the MPL step as the training
loop does (guarded, state donated) and, separately, each pass the step needs (see
`benchmarks.jax_case.parts`). It then times them interleaved, round by round (one step,
then each part once), so that a noisy machine slows both sides alike, and prints one
JSON line per case:

  step_time_s            median over the timed rounds, after warm-up
  images_per_s           B (1 + 2 mu) / step time: labeled + weak + strong views consumed
  step_flops             XLA's cost analysis of the compiled step
  parts_flops            the same for the parts, summed; flops_ratio = step / parts
  parts_time_s           sum of the parts' medians; time_ratio = step / parts
  peak_memory_bytes      the compiled step's memory analysis (arguments, outputs, temps)
  device_peak_bytes      on a GPU, the allocator's peak so far in this process
  mfu                    step_flops / step time / peak, where the device's peak is known

No TensorFlow, clu or ml_collections: this runs on a box that has only JAX, Flax, optax.

  python -m benchmarks.step_bench --model=wide_resnet --labeled_batch=16 --mu=7 --runs=5
  python -m benchmarks.step_bench --model=resnet50 --labeled_batch=32 --mu=1 \
      --dtype=bfloat16 --runs=10
"""

import argparse
import itertools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import jax_case
from benchmarks import timing

# XLA:CPU sends convolutions to YNNPACK by default; this flag sends them to Eigen.
EIGEN_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def set_cpu_convolutions(kind: str) -> None:
  """Picks XLA:CPU's convolution library; must run before JAX creates its backend."""
  if kind == "eigen" and EIGEN_CONV_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + EIGEN_CONV_FLAG).strip()


def flops(compiled) -> float:
  """Total FLOPs from XLA's cost analysis of a compiled (or lowered) computation."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device program
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def peak_memory(compiled) -> int | None:
  """Peak bytes of a compiled computation, from its memory analysis."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  peak = getattr(m, "peak_memory_in_bytes", 0)
  if peak:
    return int(peak)
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)


def device_peak_bytes() -> int | None:
  """The allocator's peak (GPU); None where the device keeps no statistics (CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def block(tree: Any) -> None:
  jax.block_until_ready(tree)


class StepRunner:
  """A compiled MPL step with its own state, batch and key, stepping in place."""

  def __init__(self, case: jax_case.Case, seed: int = 0):
    self.case = case
    self.deps = jax_case.build_deps(case)
    self.state = jax_case.init_state(case, self.deps, seed)
    self.batch = jax_case.make_batch(case, seed + 1)
    self.rng = jax.random.key(seed + 2)
    self.lowered = jax_case.jit_step(self.deps).lower(self.state, self.batch, self.rng)
    self.compiled = self.lowered.compile()

  def step(self) -> float:
    """One step; returns its wall-clock seconds (until the new state is ready)."""
    seconds, (self.state, _) = timing.time_call(
        lambda: self.compiled(self.state, self.batch, self.rng), block)
    return seconds


def run_case(case: jax_case.Case, runs: int, warmup: int, with_parts: bool = True
             ) -> dict[str, Any]:
  """Compiles and times one case; returns its JSON record."""
  runner = StepRunner(case)
  part_list = []
  if with_parts:
    # The parts get their own copy of the state: the step donates (deletes) its input.
    part_state = jax.tree.map(jnp.copy, runner.state)
    for part in jax_case.parts(case, runner.deps, part_state, runner.batch):
      compiled = part.fn.lower(*part.args).compile()
      part_list.append((part.name, compiled, part.args))

  step_times: list[float] = []
  part_times: dict[str, list[float]] = {name: [] for name, _, _ in part_list}
  for round_index in range(warmup + runs):
    seconds = runner.step()
    if round_index >= warmup:
      step_times.append(seconds)
    for name, compiled, args in part_list:
      seconds, _ = timing.time_call(lambda c=compiled, a=args: c(*a), block)
      if round_index >= warmup:
        part_times[name].append(seconds)

  device = jax.devices()[0]
  step_time = timing.median(step_times)
  step_flops = flops(runner.compiled)
  record: dict[str, Any] = {
      "benchmark": "step_bench", "framework": "jax", **case.describe(),
      "jax_version": jax.__version__, "backend": jax.default_backend(),
      "device": device.device_kind, **timing.machine_facts(),
      "runs": runs, "warmup": warmup, "step_time_s": step_time,
      "step_time_min_s": min(step_times), "step_times_s": step_times,
      "images_per_step": case.images_per_step,
      "images_per_s": case.images_per_step / step_time,
      "step_flops": step_flops, "step_flops_unoptimized": flops(runner.lowered),
      "peak_memory_bytes": peak_memory(runner.compiled),
      "device_peak_bytes": device_peak_bytes(),
  }
  if part_list:
    parts_record = {}
    for name, compiled, _ in part_list:
      parts_record[name] = {"time_s": timing.median(part_times[name]), "flops": flops(compiled)}
    parts_flops = sum(p["flops"] for p in parts_record.values())
    parts_time = sum(p["time_s"] for p in parts_record.values())
    record.update(parts=parts_record, parts_flops=parts_flops, parts_time_s=parts_time,
                  flops_ratio=step_flops / parts_flops if parts_flops else None,
                  time_ratio=step_time / parts_time if parts_time else None)
  peak = timing.peak_flops(device.device_kind, case.dtype)
  record.update(peak_flops=peak, peak_flops_source=timing.PEAK_SOURCE if peak else None,
                achieved_flops_per_s=step_flops / step_time,
                mfu=step_flops / step_time / peak if peak else None)
  return record


def _list(kind):
  return lambda text: [kind(v) for v in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="wide_resnet", choices=jax_case.MODELS)
  p.add_argument("--depth", type=int, default=28, help="WRN depth (6n + 4)")
  p.add_argument("--width", type=int, default=2, help="WRN widening factor")
  p.add_argument("--labeled_batch", type=_list(int), default=[16],
                 help="B; a comma-separated list runs one case each")
  p.add_argument("--mu", type=_list(int), default=[7], help="unlabeled ratio; a list too")
  p.add_argument("--estimator", type=_list(str), default=["reinforce"],
                 help="reinforce | meta | off; a list too")
  p.add_argument("--reward", default="dot", choices=("dot", "taylor"))
  p.add_argument("--dtype", type=_list(str), default=["float32"],
                 help="float32 | bfloat16; a list too")
  p.add_argument("--image_size", type=int, default=None, help="default: the paper's")
  p.add_argument("--runs", type=int, default=5, help="timed rounds (medians are reported)")
  p.add_argument("--warmup", type=int, default=1, help="untimed rounds after compiling")
  p.add_argument("--no_parts", action="store_true", help="time the step only")
  p.add_argument("--cpu_convolutions", default="default", choices=("default", "eigen"),
                 help="XLA:CPU convolution library: default (YNNPACK) or eigen")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  set_cpu_convolutions(args.cpu_convolutions)
  for b, mu, estimator, dtype in itertools.product(args.labeled_batch, args.mu,
                                                   args.estimator, args.dtype):
    case = jax_case.Case(model=args.model, depth=args.depth, width=args.width,
                         labeled_batch=b, mu=mu, estimator=estimator, reward=args.reward,
                         dtype=dtype, image_size=args.image_size)
    jax_case.check(case)
    timing.emit(run_case(case, args.runs, args.warmup, with_parts=not args.no_parts))


if __name__ == "__main__":
  main(sys.argv[1:])
