r"""Where the MPL step's time goes on a GPU, kernel by kernel, summed per kind of work.

The compiled step (`benchmarks/jax_case.py`, as `step_bench.py` builds it) runs a few
steps under `jax.profiler.trace`. Every GPU kernel the trace records carries the HLO
instruction that launched it (its `hlo_op` stat); the optimized HLO module (the
compiled step's text, what `--xla_dump_to` writes after optimizations) says what that
instruction is. Kinds of work, per step:

  conv_forward, conv_input_grad,   cuDNN's convolutions (custom calls __cudnn$conv*):
  conv_filter_grad                 their FLOPs from the HLO shapes, and TFLOP/s; a
                                   forward call under autodiff's transpose is an input
                                   gradient. XLA:CPU's `convolution` instructions are told
                                   apart by `conv_kind` (no FLOPs)
  matmul                           cuBLAS / Triton matrix products (the heads)
  reductions                       fusions that reduce: BatchNorm's statistics and their
                                   gradients, the losses, the reward's dot product
  elementwise                      loop fusions: normalize, activations, residual adds,
                                   the optimizer updates and the EMA
  copies                           transposes, copies, concatenations, memcpy/memset
  other                            the rest (and kernels no instruction name matches:
                                   cuDNN's, where XLA puts them in CUDA graphs)
  idle                             gaps between the traced steps' first and last kernels
                                   in which the GPU ran none

Reductions and elementwise work are also split by source (`by_source`): the networks'
passes (what autodiff traced: `jvp(` in the instruction's op_name) or the rest (updates,
EMA, norms, the non-finite guard). Each instruction counts once a step (right for
networks without loops; a scanned stage's body runs once per block).

For every kind but the convolutions it also sums the bytes its instructions read and
write (the HLO operand and output shapes, each once): bytes over time against the
card's copy bandwidth says how close the memory-bound work runs to its ceiling. From
those it prints a floor: the convolutions at the measured matrix rate plus the rest at
the copy bandwidth, and the MFU the step would reach there.

  python -m benchmarks.profile_gpu --model=resnet50 --labeled_batch=128 --mu=1 \
      --dtype=bfloat16 --steps=3 --save_dir=$OUT

With --save_dir it also writes the raw material: the per-instruction kernel times
(`<name>.ops.json`) and the optimized HLO (`<name>.hlo.txt.gz`), so the table can be
made again elsewhere (`--from_saved=<dir>/<name>`). On a CPU the same code runs (for its
tests): XLA:CPU's events are named after the HLO instructions themselves.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

import jax

from benchmarks import jax_case
from benchmarks import step_bench
from benchmarks import timing
from mpl_jax import xla_options

KINDS = ("conv_forward", "conv_input_grad", "conv_filter_grad", "matmul", "reductions",
         "elementwise", "copies", "other")
# cuDNN's convolution custom calls in XLA:GPU's optimized HLO.
_CONV_TARGETS = {"__cudnn$convForward": "conv_forward",
                 "__cudnn$convBiasActivationForward": "conv_forward",
                 "__cudnn$convBackwardInput": "conv_input_grad",
                 "__cudnn$convBackwardFilter": "conv_filter_grad"}
_MATMUL_TARGETS = ("__cublas$gemm", "__cublas$lt$matmul", "__triton_gemm", "__cudnn$fusion",
                   "__cublas$lt")
_COPY_OPS = {"copy", "transpose", "concatenate", "pad", "reverse", "copy-start",
             "copy-done", "slice", "dynamic-slice", "dynamic-update-slice"}
# No work of their own: a bitcast reinterprets its operand's buffer and moves nothing.
_PLUMBING = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
_CONV_KINDS = ("conv_filter_grad", "conv_input_grad", "conv_forward")  # a fusion's, first
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
          "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}

_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([\w\-]+)\((.*)$")
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_CALLS = re.compile(r"(?:calls|to_apply)=%?([\w.\-]+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_COMMENT = re.compile(r"/\*.*?\*/")
_DIM_LABELS = re.compile(r"dim_labels=(\w+)_(\w+)->(\w+)")
_OUTPUT_SHAPE = re.compile(r"=\s*\w+\[([\d,]+)\]")
_WINDOW = re.compile(r"window=\{size=([\dx]+)")
# Where an instruction's operand list ends and its attributes begin.
_ATTRIBUTES = re.compile(r"\),\s*(?:kind|calls|custom_call_target|window|dim_labels|"
                         r"metadata|backend_config|dimensions|slice|to_apply|"
                         r"channel_id|replica_groups|frontend_attributes|"
                         r"operand_layout_constraints|output_to_operand_aliasing|"
                         r"api_version|schedule|padding_type)=")


def _shapes(text: str) -> list[tuple[str, list[int]]]:
  return [(t, [int(d) for d in dims.split(",") if d]) for t, dims in _SHAPE.findall(text)]


def _size(dims: list[int]) -> int:
  out = 1
  for d in dims:
    out *= d
  return out


def _bytes(shapes: list[tuple[str, list[int]]]) -> int:
  return sum(_BYTES.get(t, 4) * _size(dims) for t, dims in shapes)


class Instruction:
  """One HLO instruction: its name, opcode, line, output shapes and operands' names."""

  def __init__(self, name: str, opcode: str, line: str, shape_text: str, rest: str):
    self.name, self.opcode, self.line = name, opcode, line
    self.shapes = _shapes(shape_text)
    self.operands = re.findall(r"%([\w.\-]+)", _ATTRIBUTES.split(rest, maxsplit=1)[0])


def parse_hlo(hlo_text: str) -> dict[str, list[Instruction]]:
  """computation name -> its instructions, of an optimized HLO module's text.

  The text names operands without their shapes; each operand's shape is its defining
  instruction's output shape (instruction names are unique in a module).
  """
  computations: dict[str, list[Instruction]] = collections.defaultdict(list)
  current = None
  for line in hlo_text.splitlines():
    line = _COMMENT.sub("", line)  # e.g. /*index=5*/ in the tuples of long signatures
    m = _COMPUTATION.match(line)
    if m and "=" not in line.split("{")[0]:
      current = m.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if m and current is not None:
      computations[current].append(Instruction(m.group(1), m.group(3), line, m.group(2),
                                               m.group(4)))
  return computations


def conv_flops(target: str, inst: Instruction,
               shapes: dict[str, list[tuple[str, list[int]]]]) -> float:
  """FLOPs of one cuDNN convolution custom call: 2 |y| |w| / C_out, every tap once.

  The call keeps its convolution's dimension labels (input_kernel->output). For the two
  gradient calls y is dy (an operand) and w the kernel (an operand, or the filter
  gradient's output). A forward call may be an input gradient written as a forward
  convolution over a dilated dy: its taps are those of the smaller side, so it counts
  2 |side| |w| / C(side) over its input and its output and takes the smaller.
  """
  labels = _DIM_LABELS.search(inst.line)
  operands = [shapes.get(name, [("", [])])[0][1] for name in inst.operands]
  if not labels or not inst.shapes or len(operands) < 2:
    return 0.0
  kernel_labels = labels.group(2)
  out = inst.shapes[0][1]
  w = out if target == "__cudnn$convBackwardFilter" else operands[1]
  if len(w) != len(kernel_labels) or "o" not in kernel_labels or "i" not in kernel_labels:
    return 0.0
  c_out, c_in = w[kernel_labels.index("o")], w[kernel_labels.index("i")]
  if target == "__cudnn$convBackwardFilter":
    return 2.0 * _size(operands[1]) * _size(w) / max(c_out, 1)
  if target == "__cudnn$convBackwardInput":
    return 2.0 * _size(operands[0]) * _size(w) / max(c_out, 1)
  return 2.0 * _size(w) * min(_size(out) / max(c_out, 1), _size(operands[0]) / max(c_in, 1))


def instruction_bytes(inst: Instruction,
                      shapes: dict[str, list[tuple[str, list[int]]]]) -> int:
  """Bytes an instruction reads and writes at least: its output and operands, once each."""
  out = _bytes(inst.shapes)
  for name in set(inst.operands):
    out += _bytes(shapes.get(name, []))
  return out


def conv_kind(line: str) -> str:
  """conv_forward, conv_input_grad or conv_filter_grad: what an XLA `convolution` computes.

  XLA:CPU rewrites all three into one form (b01f_01io->b01f) with transposes around, so
  the dimension labels do not tell them apart. The filter gradient is the convolution
  whose window is larger than its output (it slides the output gradient over the input,
  and its output is a kernel); the input gradient is the one JAX's autodiff wrote
  (`transpose(` in its op_name); the rest are forward passes.
  """
  shape = _OUTPUT_SHAPE.search(line)
  window = _WINDOW.search(line)
  if shape and window:
    dims = [int(d) for d in shape.group(1).split(",")]
    size = [int(d) for d in window.group(1).split("x")]
    if len(dims) == 4 and len(size) == 2 and size[0] > dims[1]:
      return "conv_filter_grad"
  return "conv_input_grad" if "transpose(" in line else "conv_forward"


def _op_name(line: str) -> str:
  m = re.search(r'op_name="([^"]*)"', line)
  return m.group(1) if m else ""


def classify(hlo_text: str) -> dict[str, dict[str, Any]]:
  """Each top-level instruction of the module -> {kind, flops, bytes}."""
  computations = parse_hlo(hlo_text)
  shapes = {i.name: i.shapes for insts in computations.values() for i in insts}

  def fused_kind(called: list[str], depth: int = 0) -> str:
    ops = [(i.opcode, i.line) for c in called for i in computations.get(c, ())
           if i.opcode not in _PLUMBING]
    opcodes = {op for op, _ in ops}
    if "convolution" in opcodes:
      return min((conv_kind(text) for op, text in ops if op == "convolution"),
                 key=_CONV_KINDS.index)
    if opcodes & {"dot"}:
      return "matmul"
    if opcodes & {"reduce", "reduce-window"}:
      return "reductions"
    for op, text in ops:
      if op in ("fusion", "call") and depth < 3:
        inner = fused_kind(_CALLS.findall(text), depth + 1)
        if inner != "elementwise":
          return inner
    if ops and opcodes <= _COPY_OPS | {"broadcast", "reshape", "convert"} and (
        opcodes & _COPY_OPS):
      return "copies"
    return "elementwise"

  out: dict[str, dict[str, Any]] = {}
  for instructions in computations.values():
    for inst in instructions:
      name, opcode, line = inst.name, inst.opcode, inst.line
      flops = 0.0
      if opcode == "custom-call":
        target = _TARGET.search(line)
        target = target.group(1) if target else ""
        if target in _CONV_TARGETS:
          kind = _CONV_TARGETS[target]
          if kind == "conv_forward" and "transpose(" in _op_name(line):
            # Autodiff's transpose: an input gradient XLA wrote as a forward convolution
            # (1x1 ones; the residual's gradient fused in as a side input).
            kind = "conv_input_grad"
          flops = conv_flops(target, inst, shapes)
        elif target.startswith(_MATMUL_TARGETS):
          kind = "matmul"
        else:
          kind = "other"
      elif opcode == "convolution":
        kind = conv_kind(line)
      elif opcode == "dot":
        kind = "matmul"
      elif opcode == "fusion":
        kind = fused_kind(_CALLS.findall(line))
        if '"__triton_gemm"' in line or "__cudnn$fusion" in line or "kind=kCustom" in line \
            and "gemm" in line:
          kind = "matmul"
      elif opcode in ("reduce", "reduce-window"):
        kind = "reductions"
      elif opcode in _COPY_OPS:
        kind = "copies"
      elif opcode in _PLUMBING or opcode in ("while", "conditional", "call"):
        kind = "other"
      else:
        kind = "elementwise"
      out[name] = {"kind": kind, "flops": flops, "bytes": instruction_bytes(inst, shapes),
                   "network": "jvp(" in _op_name(line)}
  return out


def collect_ops(trace_dir: str) -> dict[str, Any]:
  """Kernel seconds per HLO instruction (and per kernel name) from a trace, all steps.

  On a GPU: the device planes' stream lines, each kernel's `hlo_op` stat naming its
  instruction; kernels without one (memcpy, memset) go under '<kernel name>'. On a CPU:
  the host's events, named after the instructions. Also the busy time (the union of
  the kernels' intervals) and the span from the first kernel's start to the last's end.
  """
  (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
  data = jax.profiler.ProfileData.from_file(path)
  ops: dict[str, float] = collections.defaultdict(float)
  kernels: dict[str, list] = {}
  intervals = []
  gpu = [p for p in data.planes if p.name.startswith("/device:GPU")]
  lines = [(plane.name, line) for plane in gpu or data.planes for line in plane.lines]
  for _, line in lines:
    if gpu and not line.name.startswith("Stream"):  # derived lines repeat the kernels
      continue
    for event in line.events:
      stats = dict(event.stats)
      op = str(stats.get("hlo_op") or "") or (f"<{event.name}>" if gpu else event.name)
      seconds = event.duration_ns * 1e-9
      ops[op] += seconds
      if gpu:
        entry = kernels.setdefault(f"{op}|{event.name[:160]}", [op, event.name[:160], 0, 0.0])
        entry[2] += 1
        entry[3] += seconds
        intervals.append((event.start_ns, event.end_ns))
  busy = span = 0.0
  if intervals:
    intervals.sort()
    start, end = intervals[0]
    first = start
    last = max(e for _, e in intervals)
    for s, e in intervals[1:]:
      if s > end:
        busy += end - start
        start, end = s, e
      else:
        end = max(end, e)
    busy += end - start
    busy, span = busy * 1e-9, (last - first) * 1e-9
  return {"ops_s": dict(ops), "kernels": kernels,
          "busy_s": busy, "span_s": span,
          "planes": [p.name for p in data.planes], "gpu": bool(gpu),
          "lines": sorted({f"{plane}: {line.name}" for plane, line in lines})}


def kernel_rows(kernels: dict[str, list]) -> list[list]:
  """The [hlo_op, kernel name, launches, seconds] rows of a collected trace's `kernels`.

  Traces saved before kernels were keyed by (hlo_op, name), such as the one under
  benchmarks/results/profile_h200/, hold [hlo_op, launches, seconds] under the kernel's
  name: one row per kernel name, under the first hlo_op it ran in.
  """
  return [row if len(row) == 4 else [row[0], key, row[1], row[2]]
          for key, row in kernels.items()]


def _instruction(info: dict[str, dict[str, Any]], op: str) -> dict[str, Any] | None:
  """The instruction an hlo_op names; a kernel of several (`a, b`) counts as its first."""
  return info.get(op) or info.get(op.split(",")[0].strip())


def summarize(ops_s: dict[str, float], hlo_text: str, steps: int, step_flops: float,
              kernels: dict[str, list] | None = None) -> dict[str, Any]:
  """Per-kind seconds, FLOPs, bytes per step, from the trace's times and the HLO.

  `ops_s` is the kernel time per `hlo_op`: one instruction, whose FLOPs and bytes count
  once a step. On a GPU an `hlo_op` may instead name a CUDA graph of many instructions
  (XLA's command buffers); its kernels (`kernels`: [hlo_op, kernel name, launches,
  seconds] rows) are then matched by their own names, an instruction's with '_' for '.'.
  XLA compiles identical fusions once and launches that kernel under the first one's
  name, so such a kernel's FLOPs and bytes count once per launch.
  """
  info = classify(hlo_text)
  kinds = {k: {"time_s": 0.0, "flops": 0.0, "bytes": 0.0, "instructions": 0.0}
           for k in KINDS}
  by_op: dict[str, list] = collections.defaultdict(list)
  for op, name, launches, seconds in kernel_rows(kernels or {}):
    by_op[op].append((name, launches, seconds))
  unmatched = 0.0

  # Reductions and elementwise work, split by where they come from: the networks' passes
  # (BatchNorm, activations, residual adds, the losses on the logits: what autodiff traced,
  # `jvp(` in the instruction's op_name) or the rest (the updates, EMA, norms, the guard).
  split = {f"{kind}_{part}": {"time_s": 0.0, "bytes": 0.0, "instructions": 0.0}
           for kind in ("reductions", "elementwise") for part in ("network", "rest")}

  def add(entry, seconds, times):
    k = kinds[entry["kind"]]
    k["time_s"] += seconds / steps
    k["instructions"] += times
    k["flops"] += entry["flops"] * times
    k["bytes"] += entry["bytes"] * times
    if entry["kind"] in ("reductions", "elementwise"):
      part = split[f"{entry['kind']}_{'network' if entry.get('network') else 'rest'}"]
      part["time_s"] += seconds / steps
      part["instructions"] += times
      part["bytes"] += entry["bytes"] * times

  unresolved: dict[str, float] = {}  # hlo_ops that are no instruction: command buffers
  for op, seconds in ops_s.items():
    entry = _instruction(info, op)
    if entry is not None:
      add(entry, seconds, 1)
    else:
      unresolved[op] = seconds
  # Their kernels, matched by name.
  matched = 0.0
  for op, rows in by_op.items():
    if _instruction(info, op) is not None:
      continue
    for name, launches, t in rows:
      entry = info.get(re.sub(r"_(\d+)$", r".\1", name)) or info.get(name)
      if entry is None:
        kind = "copies" if re.search(r"mem(cpy|set)", name, re.I) else "other"
        unmatched += t / steps
        entry = {"kind": kind, "flops": 0.0, "bytes": 0}
      add(entry, t, launches / steps)
      matched += t
  rest = sum(unresolved.values()) - matched
  if not matched:  # no kernel rows: each such hlo_op as it is (memcpy, memset, ...)
    for op, seconds in unresolved.items():
      kind = "copies" if re.search(r"mem(cpy|set)", op, re.I) else "other"
      unmatched += seconds / steps
      add({"kind": kind, "flops": 0.0, "bytes": 0}, seconds, 0)
  elif rest > 1e-6 * matched:
    unmatched += rest / steps
    add({"kind": "other", "flops": 0.0, "bytes": 0}, rest, 0)
  for k in kinds.values():
    k["tflop_per_s"] = k["flops"] / k["time_s"] / 1e12 if k["time_s"] and k["flops"] else None
    k["tb_per_s"] = k["bytes"] / k["time_s"] / 1e12 if k["time_s"] and k["bytes"] else None
  for part in split.values():
    part["tb_per_s"] = part["bytes"] / part["time_s"] / 1e12 if part["time_s"] else None
  conv_flops_total = sum(kinds[k]["flops"] for k in KINDS if k.startswith("conv_"))
  return {"kinds": kinds, "by_source": split,
          "kernel_time_s": sum(k["time_s"] for k in kinds.values()),
          "unmatched_time_s": unmatched, "conv_flops": conv_flops_total,
          "conv_share_of_step_flops": conv_flops_total / step_flops if step_flops else None}


def floor(summary: dict[str, Any], step_flops: float, matmul_tflops: float,
          copy_tb_per_s: float, peak: float | None) -> dict[str, Any]:
  """The step time if the convolutions ran at the measured matrix rate and every other
  kernel moved its bytes at the measured copy bandwidth; and the MFU there."""
  kinds = summary["kinds"]
  conv = sum(kinds[k]["flops"] for k in KINDS if k.startswith("conv_")) / (matmul_tflops * 1e12)
  rest = sum(kinds[k]["bytes"] for k in KINDS if not k.startswith("conv_")) / (
      copy_tb_per_s * 1e12)
  seconds = conv + rest
  return {"conv_s": conv, "memory_bound_s": rest, "step_s": seconds,
          "mfu": step_flops / seconds / peak if peak and seconds and step_flops else None}


def ceilings(size: int = 8192, copy_bytes: int = 1 << 31, reps: int = 10) -> dict[str, float]:
  """This device's bf16 matrix rate and copy bandwidth, measured (random data)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  key = jax.random.key(0)
  a = jax.random.normal(key, (size, size), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.bfloat16)
  mm = jax.jit(lambda x, y: x @ y)
  mm(a, b).block_until_ready()
  start = time.perf_counter()
  for _ in range(reps):
    out = mm(a, b)
  out.block_until_ready()
  matmul = 2 * size ** 3 * reps / (time.perf_counter() - start)
  x = jax.random.normal(key, (copy_bytes // 4,), jnp.float32)
  cp = jax.jit(lambda v: v * 1.0001)
  cp(x).block_until_ready()
  start = time.perf_counter()
  for _ in range(reps):
    y = cp(x)
  y.block_until_ready()
  copy = 2 * copy_bytes * reps / (time.perf_counter() - start)
  return {"matmul_tflop_per_s": matmul / 1e12, "copy_tb_per_s": copy / 1e12}


def profile(case: jax_case.Case, steps: int, warmup: int) -> tuple[dict[str, Any], dict, str]:
  """Traces `steps` compiled steps; returns (record, collected trace, optimized HLO)."""
  runner = step_bench.StepRunner(case)
  for _ in range(warmup):
    runner.step()
  untraced = [runner.step() for _ in range(max(steps, 5))]
  hlo_text = runner.compiled.as_text()
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      traced = sum(runner.step() for _ in range(steps)) / steps  # the profiler's own
      # start and stop (writing the trace) left out
    collected = collect_ops(trace_dir)
  record = {"step_time_s": timing.median(untraced), "step_times_s": untraced,
            "traced_step_time_s": traced, "step_flops_hlo": runner.hlo_flops,
            "xla_bytes_accessed": float(
                xla_options.cost_analysis(runner.compiled).get("bytes accessed", 0.0)),
            "busy_s_per_step": collected["busy_s"] / steps,
            "span_s_per_step": collected["span_s"] / steps,
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "peak_memory_bytes": step_bench.peak_memory(runner.compiled)}
  return record, collected, hlo_text


def report(record: dict[str, Any], collected: dict[str, Any], hlo_text: str,
           steps: int, limits: dict[str, float] | None, dtype: str) -> dict[str, Any]:
  """The per-kind summary (and the floor, given the device's ceilings) of one profile."""
  summary = summarize(collected["ops_s"], hlo_text, steps, record["step_flops_hlo"],
                      collected["kernels"])
  # The GPU's gaps between its first and last kernel: launches, host work, waits.
  summary["idle_s"] = max(0.0, record["span_s_per_step"] - record["busy_s_per_step"])
  top = sorted(kernel_rows(collected["kernels"]), key=lambda r: -r[3])[:25]
  summary["top_kernels"] = [{"kernel": name, "hlo_op": op, "count": n,
                             "time_s_per_step": t / steps} for op, name, n, t in top]
  peak = timing.peak_flops(record["device"], dtype)
  if limits:
    summary["floor"] = floor(summary, record["step_flops_hlo"], limits["matmul_tflop_per_s"],
                             limits["copy_tb_per_s"], peak)
  if peak and record["step_flops_hlo"]:
    summary["mfu"] = record["step_flops_hlo"] / record["step_time_s"] / peak
  return summary


def print_table(summary: dict[str, Any], record: dict[str, Any]) -> None:
  step = record["step_time_s"]
  print(f"step {step * 1e3:.2f} ms untraced, {record['traced_step_time_s'] * 1e3:.2f} ms "
        f"traced; kernels busy {record['busy_s_per_step'] * 1e3:.2f} ms", file=sys.stderr)
  for name, k in summary["kinds"].items():
    rate = (f"{k['tflop_per_s']:.0f} TFLOP/s" if k["tflop_per_s"] else
            f"{k['tb_per_s']:.2f} TB/s" if k["tb_per_s"] else "")
    print(f"  {name:18s} {k['time_s'] * 1e3:8.2f} ms  {rate}", file=sys.stderr)
  print(f"  {'idle':18s} {summary['idle_s'] * 1e3:8.2f} ms", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default="resnet50", choices=jax_case.MODELS)
  p.add_argument("--depth", type=int, default=28)
  p.add_argument("--width", type=int, default=2)
  p.add_argument("--labeled_batch", type=int, default=128)
  p.add_argument("--mu", type=int, default=1)
  p.add_argument("--dtype", default="bfloat16", choices=jax_case.DTYPES)
  p.add_argument("--image_size", type=int, default=None)
  p.add_argument("--steps", type=int, default=3, help="profiled steps")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--ceilings", default="on", choices=("on", "off"),
                 help="measure the device's bf16 matrix rate and copy bandwidth for the floor")
  p.add_argument("--save_dir", default=None, help="write <name>.ops.json and <name>.hlo.txt.gz")
  p.add_argument("--name", default=None, help="file name stem (default: from the case)")
  p.add_argument("--from_saved", default=None,
                 help="a saved stem (DIR/NAME): summarize it again; runs nothing")
  p.add_argument("--step_flops", type=float, default=None,
                 help="the step's FLOPs for MFU and the floor, where the HLO count of this "
                      "machine gives none (count them with step_bench --flops_only)")
  step_bench.add_cpu_convolutions_flag(p)
  timing.add_quiet_flags(p)
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0:
    p.error(f"--steps={args.steps} must be at least 1 and --warmup={args.warmup} at least 0")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  if args.from_saved:
    with open(args.from_saved + ".ops.json") as f:
      saved = json.load(f)
    with gzip.open(args.from_saved + ".hlo.txt.gz", "rt") as f:
      hlo_text = f.read()
    if args.step_flops:
      saved["record"]["step_flops_hlo"] = args.step_flops
    summary = report(saved["record"], saved["collected"], hlo_text, saved["steps"],
                     saved["ceilings"], saved["dtype"])
    print_table(summary, saved["record"])
    timing.emit({"benchmark": "profile_gpu", **saved["case"], **saved["record"],
                 "ceilings": saved["ceilings"], "summary": summary,
                 "from_saved": os.path.basename(args.from_saved)})
    return
  before = step_bench.set_up(args)
  case = jax_case.Case(model=args.model, depth=args.depth, width=args.width,
                       labeled_batch=args.labeled_batch, mu=args.mu, dtype=args.dtype,
                       image_size=args.image_size)
  jax_case.check(case)
  limits = ceilings() if args.ceilings == "on" else None
  record, collected, hlo_text = profile(case, args.steps, args.warmup)
  if args.step_flops:
    record["step_flops_hlo"] = args.step_flops
  summary = report(record, collected, hlo_text, args.steps, limits, args.dtype)
  print_table(summary, record)
  if args.save_dir:
    os.makedirs(args.save_dir, exist_ok=True)
    name = args.name or f"{case.model}_b{case.labeled_batch}_mu{case.mu}_{case.dtype}"
    stem = os.path.join(args.save_dir, name)
    with open(stem + ".ops.json", "w") as f:
      json.dump({"case": case.describe(), "record": record, "collected": collected,
                 "steps": args.steps, "dtype": args.dtype, "ceilings": limits}, f)
    with gzip.open(stem + ".hlo.txt.gz", "wt") as f:
      f.write(hlo_text)
  timing.emit({"benchmark": "profile_gpu", **case.describe(), **record,
               "jax_version": jax.__version__, **timing.machine_facts(),
               "steps": args.steps, "ceilings": limits, "summary": summary}, before)


if __name__ == "__main__":
  main(sys.argv[1:])
