"""Timing, device facts and JSON output shared by the benchmarks. No TensorFlow, no JAX.

Both frameworks' benchmarks use these helpers, so a number means the same thing on each
side: wall-clock seconds of one call that ends when its results are ready on the device.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

# Dense peak rates of the accelerators whose specification we know, in FLOP/s, by
# (substring of the device name, compute dtype). Vendor datasheet figures, without
# sparsity: the H100 SXM and the H200 have the same tensor cores (bf16 989.4 TFLOP/s,
# tf32 494.7 TFLOP/s). float32 convolutions and matmuls on these GPUs run on the tensor
# cores as tf32 under JAX's and PyTorch's default precision, hence the tf32 figure.
PEAK_FLOPS = {
    ("H100", "bfloat16"): 989.4e12,
    ("H100", "float32"): 494.7e12,
    ("H200", "bfloat16"): 989.4e12,
    ("H200", "float32"): 494.7e12,
}
PEAK_SOURCE = "vendor datasheet, dense (no sparsity): bf16 989.4 TFLOP/s, tf32 494.7 TFLOP/s"


def peak_flops(device_name: str, dtype: str) -> float | None:
  """The device's peak rate for `dtype` if we know it, else None (e.g. any CPU)."""
  for (name, kind), value in PEAK_FLOPS.items():
    if name.lower() in device_name.lower() and kind == dtype:
      return value
  return None


def median(values: list[float]) -> float:
  return float(statistics.median(values))


def time_call(fn: Callable[[], Any], sync: Callable[[Any], Any]) -> tuple[float, Any]:
  """Seconds for fn() until `sync` says its result is ready; returns (seconds, result)."""
  start = time.perf_counter()
  out = fn()
  sync(out)
  return time.perf_counter() - start, out


def cpu_name() -> str:
  """The CPU model name from /proc/cpuinfo (falls back to platform.processor())."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def machine_facts() -> dict[str, Any]:
  """What the reader of a result needs to know about the host."""
  return {"host_cpu": cpu_name(), "host_cores": os.cpu_count(),
          "python": platform.python_version(), "xla_flags": os.environ.get("XLA_FLAGS", "")}


def gpu_name() -> str | None:
  """nvidia-smi's name of the first GPU, or None where there is none."""
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def emit(record: dict[str, Any]) -> None:
  """Prints one JSON line (the benchmarks' only stdout output) and flushes it."""
  print(json.dumps(record, sort_keys=True, default=_jsonable), flush=True)
  sys.stdout.flush()


def _jsonable(value: Any) -> Any:
  if hasattr(value, "item"):
    return value.item()
  return str(value)
