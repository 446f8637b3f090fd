r"""Where the MPL step's time goes on a CPU, kind of work by kind of work, JAX and PyTorch.

Both frameworks run the step of `benchmarks/compare.py` (WRN-depth-width, B labeled and
mu B unlabeled images, reinforce/dot) under their own profiler, a few steps after warm-up:

  JAX      `jax.profiler.trace`; XLA:CPU records one event per executed HLO instruction
           (thunk), matched to the compiled module's text to say what it is (the
           classifier of `benchmarks/profile_gpu.py`, its kinds merged as below). Its
           convolutions run asynchronously on the intra-op thread pool and their events
           time only the launch, so the JAX side gives the thread-seconds of the other
           kinds (`kinds_thread_s`) and the traced step's wall time; the convolutions'
           split comes from `benchmarks/profile_ops.py`
  PyTorch  `torch.profiler`, self CPU time per aten operator

and sums the time per kind of work, per step:

  conv_forward, conv_input_grad, conv_filter_grad   the convolutions (PyTorch's backward
                                 computes both gradients in one call: conv_backward)
  batch_norm_and_elementwise     BatchNorm, activations, residual adds, losses (what XLA
                                 fuses; PyTorch's batch_norm*, leaky_relu*, add, ...)
  optimizer_and_ema              the two SGD updates and the EMA (PyTorch only: XLA fuses
                                 them into elementwise kernels)
  copies                         layout changes (transposes, copies, concatenations;
                                 XLA's slices, which copy)
  other                          the rest (matrix products of the head, PyTorch's slicing
                                 and indexing, ...)

Profilers add overhead and the two count differently (XLA's events can overlap on its two
threads; PyTorch's self time is per operator), so the shares, not the sums, are what to
compare, with the untraced step times of the same record beside them.

  python -m benchmarks.profile_step --labeled_batch=16 --mu=7 --steps=3 --cpu_convolutions=eigen
"""

import argparse
import collections
import glob
import sys
import tempfile
import time
from typing import Any

import jax

from benchmarks import jax_case
from benchmarks import profile_gpu
from benchmarks import step_bench
from benchmarks import timing

_OPTIMIZER_OPS = ("_foreach", "lerp", "sgd", "optimizer")
# profile_gpu's kinds as this profile names them (the PyTorch side's kinds).
_KINDS = {"matmul": "other", "reductions": "batch_norm_and_elementwise",
          "elementwise": "batch_norm_and_elementwise"}


def classify_hlo(hlo_text: str) -> dict[str, str]:
  """Each instruction name of an optimized HLO module -> its kind of work."""
  return {name: _KINDS.get(entry["kind"], entry["kind"])
          for name, entry in profile_gpu.classify(hlo_text).items()}


def _xplane_events(trace_dir: str):
  """(name, duration in seconds) of every event in the trace written under trace_dir."""
  (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
  data = jax.profiler.ProfileData.from_file(path)
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        yield event.name, event.duration_ns * 1e-9


def profile_jax(case: jax_case.Case, steps: int, warmup: int) -> dict[str, Any]:
  """Per-kind seconds per step of the compiled JAX step, from XLA:CPU's thunk events."""
  runner = step_bench.StepRunner(case)
  for _ in range(warmup):
    runner.step()
  kinds = classify_hlo(runner.compiled.as_text())
  untraced = [runner.step() for _ in range(steps)]
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        runner.step()
    traced_seconds = (time.perf_counter() - start) / steps
    totals: dict[str, float] = collections.defaultdict(float)
    matched = 0
    for name, seconds in _xplane_events(trace_dir):
      kind = kinds.get(name)
      if kind is not None and not kind.startswith("conv_"):
        totals[kind] += seconds / steps
        matched += 1
  if not matched:
    raise RuntimeError("the JAX trace has no event named after an HLO instruction; this "
                       "jaxlib's XLA:CPU does not trace its thunks, so no per-kind profile")
  return {"kinds_thread_s": dict(totals), "step_time_s": timing.median(untraced),
          "traced_step_time_s": traced_seconds, "events_matched": matched,
          "convolutions": dict(collections.Counter(
              k for k in kinds.values() if k.startswith("conv_")))}


def _torch_kind(op: str) -> str | None:
  op = op.lower()
  if not op.startswith("aten::") and not any(k in op for k in _OPTIMIZER_OPS):
    return None  # wrappers (autograd nodes, profiler ranges) hold no work of their own
  if "convolution_backward" in op:
    return "conv_backward"
  if "convolution" in op or "conv2d" in op:
    return "conv_forward"
  if any(k in op for k in _OPTIMIZER_OPS):
    return "optimizer_and_ema"
  if any(k in op for k in ("copy", "contiguous", "cat", "permute", "clone", "transpose")):
    return "copies"
  if any(k in op for k in ("mm", "addmm", "matmul", "linear", "slice", "index", "select",
                           "multinomial", "empty", "zero", "view", "as_strided", "fill")):
    return "other"
  return "batch_norm_and_elementwise"


def profile_torch(case: jax_case.Case, steps: int, warmup: int,
                  channels_last: bool) -> dict[str, Any]:
  """Per-kind seconds per step of the PyTorch reference step, self CPU time per operator."""
  import torch  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel
  runner = torch_reference.TorchMpl(case.labeled_batch, case.mu, depth=case.depth,
                                    width=case.width, dtype=case.dtype,
                                    channels_last=channels_last)
  for _ in range(warmup):
    runner.timed_step()
  untraced = [runner.timed_step() for _ in range(steps)]
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      runner.step()
  totals: dict[str, float] = collections.defaultdict(float)
  for item in prof.key_averages():
    kind = _torch_kind(item.key)
    if kind is not None:
      totals[kind] += item.self_cpu_time_total * 1e-6 / steps
  return {"kinds_s": dict(totals), "step_time_s": timing.median(untraced),
          "channels_last": channels_last, "torch_version": torch.__version__}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depth", type=int, default=28)
  p.add_argument("--width", type=int, default=2)
  p.add_argument("--labeled_batch", type=int, default=16)
  p.add_argument("--mu", type=int, default=7)
  p.add_argument("--steps", type=int, default=3, help="profiled steps (and untraced ones)")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--channels_last", default="off", choices=("on", "off"))
  p.add_argument("--framework", default="jax,torch")
  step_bench.add_cpu_convolutions_flag(p)
  timing.add_quiet_flags(p)
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  before = step_bench.set_up(args)
  case = jax_case.Case(depth=args.depth, width=args.width, labeled_batch=args.labeled_batch,
                       mu=args.mu)
  jax_case.check(case)
  record: dict[str, Any] = {"benchmark": "profile_step", **case.describe(),
                            "steps": args.steps, "warmup": args.warmup,
                            "jax_version": jax.__version__, **timing.machine_facts()}
  frameworks = args.framework.split(",")
  if "jax" in frameworks:
    record["jax"] = profile_jax(case, args.steps, args.warmup)
  if "torch" in frameworks:
    record["torch"] = profile_torch(case, args.steps, args.warmup, args.channels_last == "on")
  timing.emit(record, before)


if __name__ == "__main__":
  main(sys.argv[1:])
