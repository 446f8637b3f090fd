"""Every config loads, validates and builds; the pure modules import no TensorFlow."""

import glob
import importlib
import os
import subprocess
import sys

import pytest

from mpl_jax import config_checks
from mpl_jax import data as data_lib
from mpl_jax import experiment
from tests.helpers import ROOT

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_validates_and_builds(name):
  """Every variant validates; all are built (data, models, steps), except that image
  sets at full size are built without their data: mock data stands in for :runlocal."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"configs.{name}")
  args = [None, "runlocal"] + [f"{m}" for m in getattr(module, "METHODS", ())]
  args += [f"{m},runlocal" for m in getattr(module, "METHODS", ())]
  for arg in args:
    config = module.get_config(arg)
    if config.method == "reduced_mpl":  # needs a finished run's workdir: reduced_mpl_test
      with pytest.raises(config_checks.ConfigError, match="large_teacher_workdir"):
        config_checks.validate(config)
      continue
    if config.data.name == "image_folder":  # needs the user's folders: own_images_test
      with pytest.raises(config_checks.ConfigError, match="data.labeled_dir"):
        config_checks.validate(config)
      continue
    config_checks.validate(config)
    if not data_lib.held_in_memory(config.data.name):
      if "runlocal" not in (arg or ""):
        continue
      # 100 classes (CIFAR-100) need more mock images for a few of each class.
      many = config.data.get("num_classes", 10) > 10
      with tfds.testing.mock_data(num_examples=1000 if many else 200):
        exp = experiment.build(config)
    else:
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
  code = ("import sys; import mpl_jax.steps.mpl, mpl_jax.steps.baselines, mpl_jax.estimators, "
          "mpl_jax.models, mpl_jax.state, mpl_jax.losses, mpl_jax.optim, mpl_jax.sharding; "
          "bad = [m for m in ('tensorflow', 'clu', 'ml_collections', 'tensorflow_datasets') "
          "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr


def test_digits_splits_are_balanced_disjoint_and_seeded():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mpl_jax.data import digits  # pylint: disable=g-import-not-at-top
  _, labels = digits.load()
  kwargs = dict(test_per_class=50, validation_per_class=20, labeled_per_class=5, split_seed=0)
  a = digits.make_splits(labels, seed=1, **kwargs)
  b = digits.make_splits(labels, seed=1, **kwargs)
  c = digits.make_splits(labels, seed=2, **kwargs)
  for name in ("labeled", "unlabeled", "validation", "test"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  np.testing.assert_array_equal(a.test, c.test)  # the test set does not follow the run seed
  assert not np.array_equal(a.labeled, c.labeled)
  assert np.all(np.bincount(labels[a.labeled], minlength=10) == 5)
  assert np.all(np.bincount(labels[a.test], minlength=10) == 50)
  sets = [set(a.labeled), set(a.unlabeled), set(a.validation), set(a.test)]
  assert sum(len(s) for s in sets) == len(labels) and len(set().union(*sets)) == len(labels)


def test_digits_views_shift_and_cut_out():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mpl_jax.data import digits  # pylint: disable=g-import-not-at-top
  image = np.zeros((1, 8, 8, 1), np.float32)
  image[0, 4, 4, 0] = 1.0
  rng = np.random.default_rng(0)
  moved = digits.shift(np.repeat(image, 200, axis=0), 1, rng)
  ys, xs = np.nonzero(moved[..., 0].reshape(200, 8, 8).sum(axis=0))
  assert set(ys) == {3, 4, 5} and set(xs) == {3, 4, 5}  # every shift within 1 pixel
  assert np.all(moved.sum(axis=(1, 2, 3)) == 1.0)
  ones = np.ones((50, 8, 8, 1), np.float32)
  cut = digits.cutout(ones, 3, rng)
  zeros = (cut == 0).sum(axis=(1, 2, 3))
  assert zeros.max() == 9 and zeros.min() >= 4  # a 3x3 square, clipped at borders
