"""The XLA options main.py sets before JAX starts."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from mpl_jax import xla_options
from tests.helpers import ROOT


def test_eigen_convolutions_only_where_measured_and_not_chosen(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("MPL_CPU_CONVOLUTIONS", raising=False)
  measured = importlib.metadata.version("jaxlib") in xla_options.MEASURED_JAXLIB
  assert xla_options.prefer_eigen_cpu_convolutions() == measured
  assert (xla_options.EIGEN_CONVOLUTIONS in os.environ.get("XLA_FLAGS", "")) == measured
  # The user's own choice of the option stays; so does an opt-out.
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert not xla_options.prefer_eigen_cpu_convolutions()
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
  monkeypatch.delenv("XLA_FLAGS")
  monkeypatch.setenv("MPL_CPU_CONVOLUTIONS", "default")
  assert not xla_options.prefer_eigen_cpu_convolutions()
  assert "XLA_FLAGS" not in os.environ
  monkeypatch.setenv("MPL_CPU_CONVOLUTIONS", "egien")
  with pytest.raises(ValueError, match=r"MPL_CPU_CONVOLUTIONS='egien' is unknown"):
    xla_options.prefer_eigen_cpu_convolutions()
  # An unmeasured jaxlib gets nothing: an XLA that does not know a flag aborts.
  monkeypatch.delenv("MPL_CPU_CONVOLUTIONS")
  monkeypatch.setattr(xla_options, "MEASURED_JAXLIB", ("0.0.0",))
  assert not xla_options.prefer_eigen_cpu_convolutions()
  assert "XLA_FLAGS" not in os.environ


def test_the_benchmarks_choice_is_applied_on_any_jaxlib(monkeypatch):
  """--cpu_convolutions=eigen asks for the flag: set on an unmeasured jaxlib too."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setattr(xla_options, "MEASURED_JAXLIB", ("0.0.0",))
  assert not xla_options.set_cpu_convolutions("default")
  assert "XLA_FLAGS" not in os.environ
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  assert xla_options.set_cpu_convolutions("eigen")
  assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                     + xla_options.EIGEN_CONVOLUTIONS)
  assert not xla_options.set_cpu_convolutions("eigen")  # once
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  assert not xla_options.set_cpu_convolutions("eigen")  # XLA_FLAGS chose already
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
  with pytest.raises(ValueError, match=r"'Eigen' are unknown; valid: \['eigen', 'default'\]"):
    xla_options.set_cpu_convolutions("Eigen")


@pytest.mark.parametrize("script,args", [
    ("main.py", ["--config=configs/twomoon.py", "--workdir=unused"]),
    ("demo.py", ["--workdir=unused"])])
def test_entry_points_reject_an_unknown_choice_in_one_line(script, args):
  env = dict(os.environ, MPL_CPU_CONVOLUTIONS="egien", TF_CPP_MIN_LOG_LEVEL="3")
  done = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: MPL_CPU_CONVOLUTIONS='egien' is unknown; use eigen (what is set when it is "
      "unset) or default (XLA's own CPU convolutions)"]


def test_entry_points_log_warnings_unless_verbosity_is_given(monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("MPL_CPU_CONVOLUTIONS", "default")
  before = logging.get_verbosity()
  try:
    logging.set_verbosity(logging.INFO)
    monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 1)
    xla_options.set_up_entry_point()
    assert logging.get_verbosity() == logging.INFO
    monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 0)
    xla_options.set_up_entry_point()
    assert logging.get_verbosity() == logging.WARNING
  finally:
    logging.set_verbosity(before)


class _Analysed:
  """A computation whose cost_analysis() returns what it is given."""

  def __init__(self, costs):
    self.costs = costs

  def cost_analysis(self):
    return self.costs


@pytest.mark.parametrize("costs,expected", [
    ({"flops": 6.0}, {"flops": 6.0}),                                # a dict
    ([{"flops": 6.0, "bytes accessed": 8.0}], {"flops": 6.0, "bytes accessed": 8.0}),
    ((), {}),                                                        # no program
    (None, {}),                                                      # no analysis
])
def test_cost_analysis_is_one_dict(costs, expected):
  assert xla_options.cost_analysis(_Analysed(costs)) == expected


def test_cost_analysis_of_this_jax():
  """A 4x8 by 8x2 product, compiled and lowered: 2*4*8*2 FLOPs."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  lowered = jax.jit(jnp.matmul).lower(jnp.ones((4, 8)), jnp.ones((8, 2)))
  for computation in (lowered, lowered.compile()):
    assert xla_options.cost_analysis(computation)["flops"] == 2 * 4 * 8 * 2


def test_the_module_imports_neither_jax_nor_tensorflow():
  code = ("import sys; import mpl_jax.xla_options; "
          "print(sorted(m for m in ('jax', 'tensorflow') if m in sys.modules))")
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
  assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


@pytest.mark.skipif(
    importlib.metadata.version("jaxlib") not in xla_options.MEASURED_JAXLIB,
    reason="the option is only set for the jaxlib it was measured with")
def test_the_flag_is_accepted_by_this_xla():
  """A fresh process with the option set starts JAX and runs a convolution."""
  code = ("import jax, jax.numpy as jnp; x = jnp.ones((1, 8, 8, 3)); "
          "k = jnp.ones((3, 3, 3, 4)); print(float(jax.lax.conv_general_dilated("
          "x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()))")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(XLA_FLAGS=xla_options.EIGEN_CONVOLUTIONS, JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  # Ones through a 3x3 SAME convolution: 3 input channels x (2 + 6*3 + 2)^2 taps x 4 outputs.
  assert float(done.stdout.strip()) == 3 * 22 * 22 * 4
