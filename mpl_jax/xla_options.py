"""XLA options the entry points set before JAX creates its backend, and XLA's cost analysis.

On the CPU, XLA sends convolutions to YNNPACK by default; sending them to Eigen makes a
WRN's forward+backward about 2x faster on the project's CPU and the whole MPL step 3.8x
faster, 17.14 s against 4.46 s at B=16 (BENCHMARKS.md, "Levers measured", the Eigen row). The flag is experimental: an XLA that does not
know a flag in XLA_FLAGS aborts, so main.py and demo.py (`set_up_entry_point`) set it only
for the jaxlib versions it was measured with, only when XLA_FLAGS does not choose already,
and never when MPL_CPU_CONVOLUTIONS=default. The benchmarks' --cpu_convolutions applies
its choice on any jaxlib (`set_cpu_convolutions`). It touches only XLA:CPU; GPU and TPU
programs are unchanged.

Nothing here imports TensorFlow or JAX (absl only inside set_up_entry_point): tools that
run without them read this module.
"""

import importlib.metadata
import os
import sys

EIGEN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
MEASURED_JAXLIB = ("0.10.2",)


CHOICES = ("eigen", "default")


def set_cpu_convolutions(choice: str) -> bool:
  """Applies a CPU-convolution choice to XLA_FLAGS; True if it added the Eigen flag.

  eigen adds the flag unless XLA_FLAGS sets the option already (that choice stays);
  default leaves XLA's own convolutions. It must run before JAX creates its backend.
  Raises ValueError for a choice not in CHOICES.
  """
  if choice not in CHOICES:
    raise ValueError(f"CPU convolutions {choice!r} are unknown; valid: {list(CHOICES)}")
  flags = os.environ.get("XLA_FLAGS", "")
  if choice == "default" or "xla_cpu_experimental_ynn_fusion_type" in flags:
    return False
  os.environ["XLA_FLAGS"] = (flags + " " + EIGEN_CONVOLUTIONS).strip()
  return True


def prefer_eigen_cpu_convolutions() -> bool:
  """Adds the Eigen-convolution flag to XLA_FLAGS where that is safe; True if it did.

  Raises ValueError for an MPL_CPU_CONVOLUTIONS other than eigen or default.
  """
  choice = os.environ.get("MPL_CPU_CONVOLUTIONS", "eigen")
  if choice not in CHOICES:
    raise ValueError(f"MPL_CPU_CONVOLUTIONS={choice!r} is unknown; use eigen (what is set "
                     "when it is unset) or default (XLA's own CPU convolutions)")
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  if version not in MEASURED_JAXLIB:
    return False
  return set_cpu_convolutions(choice)


def set_up_entry_point() -> None:
  """What main.py and demo.py do first inside absl's app.run, before JAX starts.

  Eigen CPU convolutions where safe (an unknown MPL_CPU_CONVOLUTIONS prints one line and
  exits 2), and absl logs at WARNING unless --verbosity was given (orbax logs every save
  at INFO).
  """
  try:
    prefer_eigen_cpu_convolutions()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def cost_analysis(compiled) -> dict[str, float]:
  """XLA's cost analysis of a compiled (or lowered) computation, as one dict.

  Keys as XLA names them ('flops', 'bytes accessed', ...). Depending on the JAX version
  `cost_analysis()` returns a dict or a list of one dict per device program; no analysis
  (None or an empty list) is {}.
  """
  costs = compiled.cost_analysis()
  if isinstance(costs, (list, tuple)):
    costs = costs[0] if costs else {}
  return dict(costs or {})
