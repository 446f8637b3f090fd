"""Every config loads, validates and builds; the pure modules import no TensorFlow."""

import glob
import importlib
import os
import subprocess
import sys

import pytest

from mpl_jax import config_checks
from mpl_jax import experiment
from tests.helpers import ROOT

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_validates_and_builds(name):
  module = importlib.import_module(f"configs.{name}")
  args = [None, "runlocal"] + [f"{m}" for m in getattr(module, "METHODS", ())]
  args += [f"{m},runlocal" for m in getattr(module, "METHODS", ())]
  for arg in args:
    config = module.get_config(arg)
    config_checks.validate(config)
    exp = experiment.build(config)
    assert exp.total_steps > 0
    assert module.__doc__ and "main.py" in module.__doc__  # the run command is documented


def test_twomoon_config_is_the_papers_setting():
  from configs import twomoon  # pylint: disable=g-import-not-at-top
  c = twomoon.get_config()
  assert (c.data.num_points, c.data.labeled_per_class, tuple(c.model.hidden)) == (2000, 3, (8, 8))
  assert (c.model.activation, c.model.init_scale) == ("sigmoid", 0.1)
  assert (c.teacher.learning_rate, c.student.learning_rate, c.teacher.momentum) == (0.1, 0.1, 0)


def test_step_models_and_estimators_import_no_tensorflow():
  code = ("import sys; import mpl_jax.step, mpl_jax.estimators, mpl_jax.models, mpl_jax.state, "
          "mpl_jax.losses, mpl_jax.optim, mpl_jax.sharding; "
          "bad = [m for m in ('tensorflow', 'clu', 'ml_collections', 'tensorflow_datasets') "
          "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
