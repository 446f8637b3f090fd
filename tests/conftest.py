"""Test set-up: 8 CPU devices and main.py's XLA options before JAX starts, the repo root
importable."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mpl_jax import xla_options  # pylint: disable=g-import-not-at-top

xla_options.prefer_eigen_cpu_convolutions()  # as main.py does: Eigen convolutions on CPU

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_num_cpu_devices", 8)
