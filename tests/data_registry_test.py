"""The data set registry: every module keeps the contract, specs match what is built, data
configs are checked per data set, and checking or sizing a config imports no TensorFlow."""

import ast
import importlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mpl_jax import data as data_lib
from mpl_jax.errors import ConfigError
from tests.helpers import ROOT

# Real configs: module under configs/, get_config argument, and the data set they name.
CONFIGS = [("twomoon", None, "twomoon"), ("digits", None, "digits"),
           ("cifar10_wrn28_2", None, "cifar10"), ("svhn_wrn28_2", None, "svhn_cropped"),
           ("imagenet10_resnet50", None, "imagenet2012"),
           ("imagenet10_resnet50", "mpl,runlocal", "imagenet2012"),
           ("imagenet_efficientnet_l2", None, "imagenet2012")]
DATA_DIR = pathlib.Path(ROOT) / "mpl_jax" / "data"


def _data(config_name: str, arg: str | None = None):
  return importlib.import_module(f"configs.{config_name}").get_config(arg).data


@pytest.mark.parametrize("name", sorted(data_lib.DATASETS))
def test_every_registered_module_exports_the_contract(name):
  module = data_lib.module(name)
  for attr in ("check", "spec", "build"):
    assert callable(getattr(module, attr, None)), f"{module.__name__}.{attr}"
  assert isinstance(module.IN_MEMORY, bool)


def test_every_data_set_module_in_the_package_is_registered():
  """A module keeping the contract (IN_MEMORY marks it) serves at least one name."""
  data_set_modules = set()
  for path in DATA_DIR.glob("*.py"):
    if path.stem != "__init__":
      module = importlib.import_module(f"mpl_jax.data.{path.stem}")
      if hasattr(module, "IN_MEMORY"):
        data_set_modules.add(module.__name__)
  assert data_set_modules == set(data_lib.DATASETS.values())


def test_in_memory_data_sets_are_twomoon_and_digits():
  held = {name for name in data_lib.DATASETS if data_lib.held_in_memory(name)}
  assert held == {"twomoon", "digits"}


@pytest.mark.parametrize("config_name,arg,name", CONFIGS)
def test_real_configs_check_and_name_their_data_set(config_name, arg, name):
  data = _data(config_name, arg)
  assert data.name == name
  data_lib.check(data)


@pytest.mark.parametrize("config_name", ["twomoon", "digits"])
def test_spec_is_what_build_gives(config_name):
  data = _data(config_name)
  dataset = data_lib.build(data, seed=0)
  assert data_lib.spec(data) == dataset.spec
  assert dataset.eval_x.shape[1:] == dataset.input_shape
  assert dataset.eval_y.max() == dataset.num_classes - 1


@pytest.mark.parametrize("config_name,arg,expected", [
    ("cifar10_wrn28_2", None, (10, (32, 32, 3))),
    ("svhn_wrn28_2", None, (10, (32, 32, 3))),
    ("imagenet10_resnet50", None, (1000, (224, 224, 3))),
    ("imagenet10_resnet50", "mpl,runlocal", (1000, (32, 32, 3))),
    ("imagenet_efficientnet_l2", None, (1000, (512, 512, 3)))])
def test_image_set_specs(config_name, arg, expected):
  assert data_lib.spec(_data(config_name, arg)) == data_lib.DataSpec(*expected)


def test_in_memory_sources_keep_the_source_protocol():
  source = data_lib.build(_data("twomoon"), seed=0).source
  assert isinstance(source, data_lib.Source)
  assert source.per_process is False
  batch = source.batch(0)
  assert len(batch["labeled_y"]) == source.labeled_batch_size
  assert len(batch["unlabeled_weak"]) == source.unlabeled_batch_size
  source.close()


def test_tf_data_sources_return_this_process_rows():
  from mpl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  images = np.zeros((8, 32, 32, 3), np.uint8)
  source = pipeline.ArraySource(
      name="cifar10", labeled_x=images, labeled_y=np.arange(8) % 2, unlabeled_x=images,
      unlabeled_y=None, labeled_batch_size=4, unlabeled_batch_size=8,
      augment=pipeline.ImageAugment(), seed=0, process_index=1, process_count=2)
  assert isinstance(source, data_lib.Source) and source.per_process is True
  assert len(source.batch(0)["labeled_x"]) == 2  # half of the global batch of 4
  source.close()


def test_unknown_data_name_lists_the_valid_ones():
  for call in (data_lib.check, data_lib.spec, lambda cfg: data_lib.build(cfg, 0)):
    with pytest.raises(ConfigError) as err:
      call({"name": "mnist"})
    assert str(err.value) == (f"data.name='mnist' is unknown; valid: "
                              f"{sorted(data_lib.DATASETS)}")


@pytest.mark.parametrize("config_name,field,value,message", [
    ("twomoon", "labeled_selection", "edge",
     "data.labeled_selection='edge' is unknown; valid: ['random', 'tips', 'inner']"),
    ("digits", "test_per_class", 160,
     "data: labeled + validation + test per class = 185 leaves too few unlabeled images "
     "(each class has at least 174); lower them"),
    ("cifar10_wrn28_2", "cutout_size", 64, "data.cutout_size=64 exceeds data.image_size=32"),
    ("svhn_wrn28_2", "labeled_per_class", 0, "data.labeled_per_class=0 must be > 0"),
    ("imagenet10_resnet50", "labeled_fraction", 1.5,
     "data.labeled_fraction=1.5 must be in (0, 1] (ImageNet-10%: 0.1)")])
def test_check_names_the_bad_field(config_name, field, value, message):
  data = _data(config_name)
  data[field] = value
  with pytest.raises(ConfigError) as err:
    data_lib.check(data)
  assert str(err.value) == message


def test_image_sets_reject_unknown_fields_and_batches_that_split_unevenly(monkeypatch):
  data = _data("cifar10_wrn28_2")
  with data.unlocked():
    data.bogus = 1
  with pytest.raises(ConfigError, match=r"data \(cifar10\) has unknown fields \['bogus'\]"):
    data_lib.check(data)
  import jax  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  with pytest.raises(ConfigError, match="does not divide by the 3 processes"):
    data_lib.check(_data("imagenet10_resnet50"))


def test_checking_and_sizing_every_config_imports_no_tensorflow():
  code = ("import importlib, sys; import mpl_jax.data as d\n"
          f"for module, arg, _ in {CONFIGS!r}:\n"
          "  data = importlib.import_module('configs.' + module).get_config(arg).data\n"
          "  d.check(data); d.spec(data); d.held_in_memory(data.name)\n"
          "bad = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]\n"
          "print(bad); sys.exit(1 if bad else 0)")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr


def _package_imports(path: pathlib.Path) -> list[str]:
  """Modules of mpl_jax.data that `path` imports, lazily or not, as dotted names."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module in ("mpl_jax", "mpl_jax.data"):
      found += [f"{node.module}.{alias.name}" for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.append(node.module)
  return [name for name in found if name.startswith("mpl_jax.data")]


def test_data_modules_import_submodules_never_the_package():
  submodules = {f"mpl_jax.data.{p.stem}" for p in DATA_DIR.glob("*.py")}
  for path in DATA_DIR.glob("*.py"):
    if path.stem == "__init__":
      continue
    for name in _package_imports(path):
      assert name in submodules, f"{path.name} imports {name}: import a submodule"
