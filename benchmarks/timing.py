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
import threading
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


# A machine is quiet when no other process uses a core and the 1-minute load average is
# at most this fraction of the cores. Timings taken beside other jobs on a small machine
# are wrong by 2x and more, in either direction, so every benchmark checks first.
QUIET_LOAD_PER_CORE = 0.5
BUSY_CPU_SHARE = 0.2  # a process using at least this share of one core counts as busy
ON_BUSY = ("wait", "refuse", "run")


def load_average(path: str = "/proc/loadavg") -> list[float]:
  """The 1-, 5- and 15-minute load averages (os.getloadavg() where there is no /proc)."""
  try:
    with open(path) as f:
      return [float(v) for v in f.read().split()[:3]]
  except OSError:
    return [float(v) for v in os.getloadavg()]


# Put in the environment of the runs a benchmark starts (`own_env`): every process that
# inherits it is the benchmark's own work, also one that left the tree of descendants (a
# test suite's background job in a session of its own, whose parent exited).
OWN_MARK = "MPL_BENCHMARK_RUN"


def own_env(env: dict[str, str] | None = None) -> dict[str, str]:
  """`env` (default: this process's environment) marked as this benchmark's runs."""
  return {**(os.environ if env is None else env), OWN_MARK: str(os.getpid())}


def _marked_own(pid: int) -> bool:
  """Whether the process carries this benchmark's mark (unreadable: it does not)."""
  try:
    with open(f"/proc/{pid}/environ", "rb") as f:
      return f"{OWN_MARK}={os.getpid()}".encode() in f.read().split(b"\0")
  except OSError:
    return False


def _cpu_ticks() -> dict[int, tuple[str, int, int]]:
  """pid -> (name, CPU ticks of the process and of its finished children, parent pid)."""
  ticks = {}
  try:
    entries = os.listdir("/proc")
  except OSError:
    return ticks
  for entry in entries:
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat", "rb") as f:
        stat = f.read().decode("utf-8", errors="replace")
      name = stat[stat.index("(") + 1:stat.rindex(")")]
      fields = stat[stat.rindex(")") + 2:].split()
      # utime + stime + cutime + cstime: a parent's short-lived children count too, but
      # not init's: it reaps every orphan, whose time was its own (and seen while it ran).
      times = fields[11:15] if entry != "1" else fields[11:13]
      ticks[int(entry)] = (name, sum(int(v) for v in times), int(fields[1]))
    except (OSError, ValueError, IndexError):
      continue  # gone, or not a process's stat line
  return ticks


def busy_processes(interval: float = 1.0) -> list[dict[str, Any]]:
  """Other processes that used >= BUSY_CPU_SHARE of a core over `interval` seconds,
  busiest first. A process born during the interval counts with all its time. This
  process, its descendants (the runs a benchmark starts itself) and the processes marked
  by `own_env` are not "other"."""
  hz = os.sysconf("SC_CLK_TCK")
  first = _cpu_ticks()
  time.sleep(interval)
  second = _cpu_ticks()
  own = {os.getpid()}
  for _ in range(len(second)):  # descendants, however deep
    grown = own | {pid for pid, (_, _, parent) in second.items() if parent in own}
    if grown == own:
      break
    own = grown
  busy = []
  for pid, (name, ticks, _) in second.items():
    if pid in own:
      continue
    share = (ticks - first.get(pid, (name, 0, 0))[1]) / hz / interval
    if share >= BUSY_CPU_SHARE and not _marked_own(pid):
      busy.append({"pid": pid, "name": name, "cores": round(share, 2)})
  return sorted(busy, key=lambda p: -p["cores"])


def machine_load(interval: float = 1.0) -> dict[str, Any]:
  """The load averages and the other busy processes, now."""
  return {"load_average": load_average(), "busy_processes": busy_processes(interval),
          "cores": os.cpu_count()}


def is_quiet(load: dict[str, Any], max_load: float) -> bool:
  """No other busy process and the 1-minute load at most `max_load`."""
  return not load["busy_processes"] and load["load_average"][0] <= max_load


class Watcher(threading.Thread):
  """Samples the other busy processes every `every` seconds while a benchmark runs, so a
  job that starts and ends between the readings before and after is still seen."""

  def __init__(self, every: float = 5.0):
    super().__init__(daemon=True)
    self.every = every
    self.samples = 0
    self.seen: dict[int, dict[str, Any]] = {}
    self._stop_event = threading.Event()

  def run(self) -> None:
    while not self._stop_event.wait(self.every):
      for process in busy_processes(1.0):
        known = self.seen.get(process["pid"])
        if known is None or process["cores"] > known["cores"]:
          self.seen[process["pid"]] = process
      self.samples += 1

  def stop(self) -> None:
    self._stop_event.set()

  def report(self) -> dict[str, Any]:
    return {"samples": self.samples, "every_s": self.every,
            "busy_processes": sorted(self.seen.values(), key=lambda p: -p["cores"])}


_WATCHER: Watcher | None = None


def add_quiet_flags(parser) -> None:
  """The flags of `wait_until_quiet`, shared by every benchmark."""
  parser.add_argument(
      "--on_busy", default="wait", choices=ON_BUSY,
      help="when other processes use the CPU or the load is high: wait for quiet "
           "(up to --max_wait_s, then refuse), refuse at once, or run anyway (the "
           "record then says it was not quiet)")
  parser.add_argument("--max_wait_s", type=float, default=900.0)
  parser.add_argument("--max_load", type=float, default=None,
                      help=f"1-minute load average that still counts as quiet "
                           f"(default {QUIET_LOAD_PER_CORE} per core)")


def wait_until_quiet(args, poll_s: float = 15.0) -> dict[str, Any]:
  """Checks that nothing else runs before a benchmark; returns the 'before' reading.

  Waits, refuses (SystemExit with one line saying what runs and what to do) or, with
  --on_busy=run, warns on stderr and goes on. Then starts a `Watcher` for the run. The
  reading goes into every record `emit` prints afterwards.
  """
  global _WATCHER
  max_load = args.max_load if args.max_load is not None else (
      QUIET_LOAD_PER_CORE * (os.cpu_count() or 1))
  start = time.monotonic()
  while True:
    load = machine_load()
    load["max_load"] = max_load
    load["waited_s"] = round(time.monotonic() - start, 1)
    quiet = is_quiet(load, max_load)
    if quiet or args.on_busy == "run":
      break
    what = _describe(load, max_load)
    if args.on_busy == "refuse" or load["waited_s"] >= args.max_wait_s:
      raise SystemExit(f"machine busy: {what}; stop the other jobs, or pass "
                       "--on_busy=wait (with a larger --max_wait_s) or --on_busy=run")
    print(f"waiting for a quiet machine: {what}", file=sys.stderr, flush=True)
    time.sleep(max(0.0, min(poll_s, args.max_wait_s - load["waited_s"])))
  if not quiet:
    print(f"WARNING: benchmarking on a busy machine ({_describe(load, max_load)}); these "
          "figures are not a measurement of the code", file=sys.stderr, flush=True)
  load["quiet"] = quiet
  _WATCHER = Watcher()
  _WATCHER.start()
  return load


def _describe(load: dict[str, Any], max_load: float) -> str:
  busy = load["busy_processes"]
  names = ", ".join(f"{p['name']} (pid {p['pid']}, {p['cores']} cores)" for p in busy[:5])
  return (f"load average {load['load_average'][0]:.2f} (quiet: <= {max_load:.2f}), "
          f"busy: {names or 'no other process'}")


def emit(record: dict[str, Any], before: dict[str, Any] | None = None) -> None:
  """Prints one JSON line (the benchmarks' only stdout output) and flushes it.

  With `before` (from `wait_until_quiet`, taken once before the script's first case),
  the record gets `load`: that reading, one taken now (`after`), the busy processes the
  watcher saw in between (`during`), and `quiet`, true only if the machine was quiet
  before and no other process was busy during or after.
  """
  if before is not None:
    after = machine_load()
    during = _WATCHER.report() if _WATCHER is not None else {"samples": 0,
                                                               "busy_processes": []}
    record = {**record, "load": {
        "before": before, "during": during, "after": after,
        "quiet": (bool(before.get("quiet")) and not after["busy_processes"]
                  and not during["busy_processes"])}}
  print(json.dumps(record, sort_keys=True, default=_jsonable), flush=True)
  sys.stdout.flush()


def _jsonable(value: Any) -> Any:
  if hasattr(value, "item"):
    return value.item()
  return str(value)
