r"""JAX vs the PyTorch reference: the same MPL step, alternately, in one process.

Both frameworks build the same case (WRN-depth-width, B labeled, mu B unlabeled seen as
two views, reinforce with the dot reward, SGD-Nesterov, EMA) and warm up. Then each
round times `steps_per_round` JAX steps and as many PyTorch steps, the order flipping
from round to round, so that a machine whose load drifts slows both alike. A round's
ratio is PyTorch's time over JAX's (JAX's throughput over PyTorch's: above 1 means JAX
is faster); the record gives each round's ratio and their median, one JSON line per B.

  python -m benchmarks.compare --labeled_batch=16,64 --mu=7 --rounds=5
  python -m benchmarks.compare --labeled_batch=128 --dtype=bfloat16   # on a GPU: AMP
"""

import argparse
import sys
from typing import Any

import jax

from benchmarks import jax_case
from benchmarks import step_bench
from benchmarks import timing
from benchmarks import torch_reference


def compare_case(case: jax_case.Case, *, rounds: int, steps_per_round: int, warmup: int,
                 channels_last: bool | None) -> dict[str, Any]:
  """Alternating rounds of JAX and PyTorch steps; returns the case's JSON record."""
  jax_runner = step_bench.StepRunner(case)
  torch_runner = torch_reference.TorchMpl(case.labeled_batch, case.mu, depth=case.depth,
                                          width=case.width, dtype=case.dtype,
                                          channels_last=channels_last)
  for _ in range(warmup):
    jax_runner.step()
    torch_runner.timed_step()

  ratios, jax_times, torch_times = [], [], []
  for round_index in range(rounds):
    runners = [("jax", jax_runner.step), ("torch", torch_runner.timed_step)]
    if round_index % 2:
      runners.reverse()
    totals = {}
    for name, step in runners:
      times = [step() for _ in range(steps_per_round)]
      (jax_times if name == "jax" else torch_times).extend(times)
      totals[name] = sum(times)
    ratios.append(totals["torch"] / totals["jax"])

  images = case.images_per_step
  jax_step, torch_step = timing.median(jax_times), timing.median(torch_times)
  return {
      "benchmark": "compare", **case.describe(), "rounds": rounds,
      "steps_per_round": steps_per_round, "warmup": warmup,
      "jax_over_torch_throughput": timing.median(ratios), "round_ratios": ratios,
      "jax_step_time_s": jax_step, "torch_step_time_s": torch_step,
      "jax_images_per_s": images / jax_step, "torch_images_per_s": images / torch_step,
      "jax_device": jax.devices()[0].device_kind,
      "jax_version": jax.__version__,
      **{f"torch_{k}" if not k.startswith("torch") else k: v
         for k, v in torch_runner.describe().items() if k != "framework"},
      **timing.machine_facts(),
  }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depth", type=int, default=28)
  p.add_argument("--width", type=int, default=2)
  p.add_argument("--labeled_batch", default="16",
                 help="B; a comma-separated list runs one case each")
  p.add_argument("--mu", type=int, default=7)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="bfloat16: JAX computes in bf16, PyTorch under bf16 autocast")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps_per_round", type=int, default=1)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--channels_last", default=None, choices=("on", "off"),
                 help="PyTorch memory format (default: on for GPUs, off for CPUs)")
  step_bench.add_cpu_convolutions_flag(p)
  timing.add_quiet_flags(p)
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  before = step_bench.set_up(args)
  channels_last = None if args.channels_last is None else args.channels_last == "on"
  for b in (int(v) for v in args.labeled_batch.split(",")):
    case = jax_case.Case(depth=args.depth, width=args.width, labeled_batch=b, mu=args.mu,
                         dtype=args.dtype)
    jax_case.check(case)
    timing.emit(compare_case(case, rounds=args.rounds, steps_per_round=args.steps_per_round,
                             warmup=args.warmup, channels_last=channels_last), before)


if __name__ == "__main__":
  main(sys.argv[1:])
