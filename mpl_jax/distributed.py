"""Multi-process start-up: whether and how to call `jax.distributed.initialize()`.

One process per host (Cloud TPU pod slice) or per node or GPU (SLURM) runs the same
`main.py`; `jax.distributed.initialize()` connects them before JAX touches a device. It is
chosen by environment variables, read before any config is parsed:

  MPL_DISTRIBUTED          auto (default): initialize when a multi-process cluster is
                           detected (SLURM step or Open MPI job with more than one task, a
                           Cloud TPU VM) or the three variables below are set;
                           always: initialize, letting JAX find the cluster (fails with a
                           one-line error where it cannot); never: a single process.
  MPL_COORDINATOR_ADDRESS  host:port of process 0, e.g. localhost:12355; with the two
  MPL_NUM_PROCESSES        below it is passed to initialize() as is, for clusters JAX
  MPL_PROCESS_ID           does not detect and for several processes on one machine.

On Cloud TPU and under SLURM or Open MPI, initialize() takes no arguments: JAX reads the
TPU metadata server or the scheduler's variables (SLURM_STEP_NODELIST, SLURM_NTASKS,
SLURM_PROCID, SLURM_LOCALID). Under SLURM, JAX gives each process the one GPU numbered by
its SLURM_LOCALID unless JAX_LOCAL_DEVICE_IDS lists the GPUs it should use (one task per
node: JAX_LOCAL_DEVICE_IDS=0,1,...,7; launch/slurm.sh sets it).
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any, Callable, Mapping

from mpl_jax import errors

ENV_MODE = "MPL_DISTRIBUTED"
ENV_COORDINATOR = "MPL_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "MPL_NUM_PROCESSES"
ENV_PROCESS_ID = "MPL_PROCESS_ID"
MODES = ("auto", "never", "always")

# What JAX's own SLURM detection needs: present only inside an `srun` step.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID")
_GOOGLE_PCI_VENDOR = "0x1ae0"


class DistributedError(errors.ConfigError):
  """The multi-process settings cannot work; the message names the variable to fix."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `maybe_initialize` does: call initialize(**kwargs) or not, and why."""
  initialize: bool
  kwargs: Mapping[str, Any]
  reason: str


def on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM: TPU chips on the PCI bus (sysfs only, no JAX backend)."""
  try:  # JAX's own check, with the TPU device ids it knows.
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except (ImportError, AttributeError, OSError):
    pass
  # Fallback: Google PCI devices with accelerator device files (gVNIC alone is not a TPU).
  vendors = glob.glob("/sys/bus/pci/devices/*/vendor")
  google = any(_read(path) == _GOOGLE_PCI_VENDOR for path in vendors)
  return google and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return ""


def _int_var(environ: Mapping[str, str], name: str) -> int:
  value = environ.get(name, "")
  try:
    return int(value)
  except ValueError:
    raise DistributedError(f"{name}={value!r} must be an integer") from None


def _explicit_args(environ: Mapping[str, str]) -> dict[str, Any]:
  """coordinator_address/num_processes/process_id from MPL_*; {} when none is set."""
  names = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
  present = [n for n in names if environ.get(n)]
  if not present:
    return {}
  missing = [n for n in names if n not in present]
  if missing:
    raise DistributedError(f"{present[0]} is set but {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} not; set all three")
  address = environ[ENV_COORDINATOR]
  if ":" not in address:
    raise DistributedError(f"{ENV_COORDINATOR}={address!r} must be host:port")
  num_processes = _int_var(environ, ENV_NUM_PROCESSES)
  process_id = _int_var(environ, ENV_PROCESS_ID)
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise DistributedError(f"{ENV_PROCESS_ID}={process_id} must be in [0, "
                           f"{ENV_NUM_PROCESSES}={num_processes})")
  return {"coordinator_address": address, "num_processes": num_processes,
          "process_id": process_id}


def detect_cluster(environ: Mapping[str, str],
                   on_tpu: Callable[[], bool] = on_cloud_tpu_vm) -> str | None:
  """The multi-process environment this process runs in, or None for a lone process."""
  if all(v in environ for v in _SLURM_VARS):
    tasks = _int_var(environ, "SLURM_NTASKS")
    if tasks > 1:
      return f"SLURM ({tasks} tasks)"
  if "OMPI_MCA_orte_hnp_uri" in environ:
    size = int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1)
    if size > 1:
      return f"Open MPI ({size} processes)"
  if on_tpu():
    return "Cloud TPU VM"
  return None


def plan(mode: str | None = None, environ: Mapping[str, str] | None = None,
         on_tpu: Callable[[], bool] = on_cloud_tpu_vm) -> Plan:
  """Decides, without touching JAX, what `maybe_initialize` will do.

  Args:
    mode: 'auto', 'never' or 'always'; None reads MPL_DISTRIBUTED (default 'auto').
    environ: the environment to read (os.environ by default).
    on_tpu: whether this is a Cloud TPU VM (consulted in 'auto' mode only).
  Raises:
    DistributedError: an unknown mode, or the MPL_* coordinator variables incomplete.
  """
  environ = os.environ if environ is None else environ
  source = "mode"
  if mode is None:
    source = ENV_MODE
    mode = environ.get(ENV_MODE, "")
  mode = (mode or "auto").strip().lower()
  if mode not in MODES:
    raise DistributedError(f"{source}={mode!r} is unknown; valid: {list(MODES)}")
  if mode == "never":
    return Plan(False, {}, f"{source}=never")
  explicit = _explicit_args(environ)
  if explicit:
    return Plan(True, explicit, f"coordinator {explicit['coordinator_address']} from "
                f"{ENV_COORDINATOR}, process {explicit['process_id']} of "
                f"{explicit['num_processes']}")
  if mode == "always":
    return Plan(True, {}, f"{source}=always: JAX detects the cluster")
  cluster = detect_cluster(environ, on_tpu)
  if cluster is None:
    return Plan(False, {}, "no multi-process cluster detected: one process")
  return Plan(True, {}, f"{cluster}: JAX detects the cluster")


def maybe_initialize(mode: str | None = None,
                     environ: Mapping[str, str] | None = None) -> Plan:
  """Calls `jax.distributed.initialize` when `plan` says so; before any other JAX call.

  Returns the plan followed. Errors in the settings (including JAX's own complaints that
  it found no cluster) become a DistributedError with one line; failures to reach the
  coordinator propagate unchanged, with JAX's details.
  """
  decision = plan(mode, environ)
  if not decision.initialize:
    return decision
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return dataclasses.replace(decision, initialize=False, reason="already initialized")
  try:
    jax.distributed.initialize(**decision.kwargs)
  except (ValueError, TypeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DistributedError(
        f"jax.distributed.initialize() ({decision.reason}): {first}; set "
        f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}, or "
        f"{ENV_MODE}=never for one process") from e
  return decision
