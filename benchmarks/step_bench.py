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
  step_flops_hlo         the step's HLO lowered for the CPU, counted the same way on any
                         device (a GPU's compiled count misses cuDNN's convolutions); with
                         parts_flops_hlo and flops_ratio_hlo
  parts_time_s           sum of the parts' medians; time_ratio = step / parts
  peak_memory_bytes      the compiled step's memory analysis (arguments, outputs, temps)
  device_peak_bytes      on a GPU, the allocator's peak so far in this process
  mfu                    step_flops_hlo / step time / peak, where the device's peak is known

No TensorFlow, clu or ml_collections: this runs on a box that has only JAX, Flax, optax.

  python -m benchmarks.step_bench --model=wide_resnet --labeled_batch=16 --mu=7 --runs=5
  python -m benchmarks.step_bench --model=resnet50 --labeled_batch=32 --mu=1 \
      --dtype=bfloat16 --runs=10
"""

import argparse
import itertools
import sys
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import jax_case
from benchmarks import timing
from mpl_jax import xla_options


def add_cpu_convolutions_flag(parser) -> None:
  """--cpu_convolutions, shared by the JAX benchmarks."""
  parser.add_argument(
      "--cpu_convolutions", default="default", choices=xla_options.CHOICES,
      help="XLA:CPU convolution library: default (XLA's own, YNNPACK) or eigen (what "
           "main.py sets; mpl_jax/xla_options.py), unless XLA_FLAGS chooses already")


def set_up(args, *, wait: bool = True) -> dict[str, Any] | None:
  """What every JAX benchmark does first, before JAX starts: the CPU convolution library
  of --cpu_convolutions, then (with `wait`) the quiet-machine check; returns its reading."""
  xla_options.set_cpu_convolutions(args.cpu_convolutions)
  return timing.wait_until_quiet(args) if wait else None


def flops(computation) -> float:
  """Total FLOPs from XLA's cost analysis of a compiled (or lowered) computation."""
  return float(xla_options.cost_analysis(computation).get("flops", 0.0))


def hlo_flops(traced) -> float | None:
  """FLOPs of a traced computation's HLO as lowered for the CPU, the same on any device.

  A compiled GPU program hands its convolutions to cuDNN as custom calls, which XLA's
  cost analysis counts as zero FLOPs; the CPU-lowered HLO still has them as convolutions.
  This is the count MFU uses. Off the CPU, `Lowered.cost_analysis` asks the default
  backend, whose analysis of this module may count nothing (a GPU's gave 0): the CPU
  backend is then asked for the same module. None where neither counts.
  """
  lowered = traced.lower(lowering_platforms=("cpu",))
  count = flops(lowered)
  return count or cpu_flops(lowered) or None


def cpu_flops(lowered) -> float:
  """The CPU backend's cost analysis of a lowered module. It uses JAX internals: where
  they have moved, it says so on stderr and returns 0."""
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel
    module = lowered._lowering.hlo().as_hlo_module()  # pylint: disable=protected-access
    analysis = _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), module)
    return float((analysis or {}).get("flops", 0.0))
  except Exception as e:  # pylint: disable=broad-except
    print(f"warning: no CPU FLOP count ({type(e).__name__}: {e}); MFU left out",
          file=sys.stderr)
    return 0.0


def peak_memory(compiled) -> int | None:
  """Peak bytes of a compiled computation, from its memory analysis.

  The larger of XLA's own peak and arguments + outputs - aliased (donated) + temporaries:
  XLA:CPU's `peak_memory_in_bytes` leaves the temporaries out (3 MB against 159 MB of
  temporaries for a small WRN step), XLA:GPU's includes them.
  """
  m = compiled.memory_analysis()
  if m is None:
    return None
  total = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
           + m.temp_size_in_bytes)
  return int(max(getattr(m, "peak_memory_in_bytes", 0), total))


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
    self.run = jax_case.build_run(case)
    self.state = jax_case.init_state(self.run, seed)
    self.batch = jax_case.make_batch(case, self.run, seed + 1)
    self.rng = jax.random.key(seed + 2)
    traced = jax_case.step(self.run).trace(self.state, self.batch, self.rng)
    self.hlo_flops = hlo_flops(traced)
    self.compiled = traced.lower().compile()

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
    for part in jax_case.parts(runner.run, part_state, runner.batch):
      traced = part.fn.trace(*part.args)
      part_list.append((part.name, traced.lower().compile(), part.args, hlo_flops(traced)))

  step_times: list[float] = []
  part_times: dict[str, list[float]] = {name: [] for name, *_ in part_list}
  for round_index in range(warmup + runs):
    seconds = runner.step()
    if round_index >= warmup:
      step_times.append(seconds)
    for name, compiled, args, _ in part_list:
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
      "step_flops": step_flops, "step_flops_hlo": runner.hlo_flops,
      "peak_memory_bytes": peak_memory(runner.compiled),
      "device_peak_bytes": device_peak_bytes(),
  }
  if part_list:
    parts_record = {}
    for name, compiled, _, part_hlo_flops in part_list:
      parts_record[name] = {"time_s": timing.median(part_times[name]), "flops": flops(compiled),
                            "flops_hlo": part_hlo_flops}
    parts_flops = sum(p["flops"] for p in parts_record.values())
    part_counts = [p["flops_hlo"] for p in parts_record.values()]
    parts_hlo = sum(part_counts) if all(part_counts) else None
    parts_time = sum(p["time_s"] for p in parts_record.values())
    record.update(parts=parts_record, parts_flops=parts_flops, parts_flops_hlo=parts_hlo,
                  parts_time_s=parts_time,
                  flops_ratio=step_flops / parts_flops if parts_flops else None,
                  flops_ratio_hlo=(runner.hlo_flops / parts_hlo
                                   if parts_hlo and runner.hlo_flops else None),
                  time_ratio=step_time / parts_time if parts_time else None)
  peak = timing.peak_flops(device.device_kind, case.dtype)
  record.update(peak_flops=peak, peak_flops_source=timing.PEAK_SOURCE if peak else None,
                achieved_flops_per_s=runner.hlo_flops / step_time if runner.hlo_flops else None,
                mfu=runner.hlo_flops / step_time / peak if peak and runner.hlo_flops else None)
  return record


def count_flops(case: jax_case.Case) -> dict[str, Any]:
  """FLOPs of the case's step and parts from their CPU-lowered HLO, without compiling.

  Quick on any machine, and what MFU on another device divides by: e.g. a GPU's step
  time from a run there with the count made here.
  """
  run = jax_case.build_run(case)
  state = jax_case.init_state(run)
  batch = jax_case.make_batch(case, run)
  parts = {p.name: hlo_flops(p.fn.trace(*p.args))
           for p in jax_case.parts(run, state, batch)}
  step = hlo_flops(jax_case.step(run).trace(state, batch, jax.random.key(0)))
  return {"benchmark": "step_flops", **case.describe(), "jax_version": jax.__version__,
          "step_flops_hlo": step, "parts_flops_hlo": parts,
          "flops_ratio_hlo": (step / sum(parts.values())
                              if step and all(parts.values()) else None)}


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
  p.add_argument("--student_update", type=_list(str), default=["real"],
                 help="real | plain: what dot and meta model (mpl.student_update); a list too")
  p.add_argument("--dtype", type=_list(str), default=["float32"],
                 help="float32 | bfloat16; a list too")
  p.add_argument("--image_size", type=int, default=None, help="default: the paper's")
  p.add_argument("--runs", type=int, default=5, help="timed rounds (medians are reported)")
  p.add_argument("--warmup", type=int, default=1, help="untimed rounds after compiling")
  p.add_argument("--no_parts", action="store_true", help="time the step only")
  p.add_argument("--flops_only", action="store_true",
                 help="count the step's and parts' HLO FLOPs; compile and time nothing")
  add_cpu_convolutions_flag(p)
  timing.add_quiet_flags(p)
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  before = set_up(args, wait=not args.flops_only)
  for b, mu, estimator, dtype, update in itertools.product(
      args.labeled_batch, args.mu, args.estimator, args.dtype, args.student_update):
    case = jax_case.Case(model=args.model, depth=args.depth, width=args.width,
                         labeled_batch=b, mu=mu, estimator=estimator, reward=args.reward,
                         student_update=update,
                         dtype=dtype, image_size=args.image_size)
    jax_case.check(case)
    if args.flops_only:
      timing.emit(count_flops(case))
    else:
      timing.emit(run_case(case, args.runs, args.warmup, with_parts=not args.no_parts),
                  before)


if __name__ == "__main__":
  main(sys.argv[1:])
