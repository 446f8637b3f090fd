"""Your own images (mpl_jax/data/own_images.py): tfds builders of other sizes and class
counts, and folders of image files, trained through main's entry point; bad input fails
with one line before any compute."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from configs import cifar100_wrn28_8
from configs import stl10_wrn28_2
from mpl_jax import config_checks
from mpl_jax import data as data_lib
from mpl_jax.data import own_images
from mpl_jax.data import tfds_arrays
from tests.helpers import run_main


def _main_in_process(config_arg: str, workdir, **fields):
  """main.py's entry point in this process (tfds's mock does not reach a subprocess).
  `fields` ({"data.mean": (...)}) are written over the config by a config file made for
  the call (absl's --config.* overrides need a fresh process)."""
  import main  # pylint: disable=g-import-not-at-top
  if fields:
    path, _, arg = config_arg.partition(":")
    module = os.path.splitext(os.path.basename(path))[0]
    lines = [f"from configs import {module}", "", "def get_config(arg=None):",
             f"  c = {module}.get_config(arg)"]
    lines += [f"  c.{field} = {value!r}" for field, value in fields.items()]
    own = os.path.join(str(workdir) + "_config.py")
    with open(own, "w") as f:
      f.write("\n".join(lines + ["  return c", ""]))
    config_arg = f"{own}:{arg}"
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(["main.py", f"--config={config_arg}", f"--workdir={workdir}"])
    main.main([])
  finally:
    flags.FLAGS.unparse_flags()


@pytest.mark.slow  # a mock builder generated and trained through main: a minute each
@pytest.mark.parametrize("module, size, classes, extra, examples", [
    (cifar100_wrn28_8, 32, 100, False, 1000), (stl10_wrn28_2, 96, 10, True, 200)])
def test_tfds_builders_split_and_train_through_main(tmp_path, module, size, classes, extra,
                                                    examples):
  """Each mock split holds `examples` images (the installed tfds has no split sizes)."""
  config = module.get_config("mpl,runlocal")
  assert config.data.name == "tfds" and config.data.image_size == size
  with tfds.testing.mock_data(num_examples=examples):
    dataset = data_lib.build(config.data, seed=0)
    train_y = tfds_arrays.load_arrays(config.data.tfds_name, "train", None)[1]
    parts = dataset.extras["splits"]
    # Disjoint, class-balanced parts of `train`; the unlabeled pool is the rest of it,
    # plus STL-10's `unlabelled` split.
    for a, b in (("labeled", "validation"), ("labeled", "unlabeled"),
                 ("validation", "unlabeled")):
      assert not set(parts[a]) & set(parts[b]), (a, b)
    assert len(parts["labeled"]) + len(parts["validation"]) + len(parts["unlabeled"]) == examples
    for part, per_class in (("labeled", config.data.labeled_per_class),
                            ("validation", config.data.validation_per_class)):
      counts = np.bincount(train_y[parts[part]], minlength=classes)
      assert set(counts[counts > 0]) == {per_class}, part
    source = dataset.source
    assert len(source.unlabeled_x) == len(parts["unlabeled"]) + (examples if extra else 0)
    assert dataset.test_x.shape == (examples, size, size, 3) and dataset.num_classes == classes
    batch = source.batch(0)
    assert batch["unlabeled_strong"].shape[1:] == (size, size, 3)
    dataset.close()
    _main_in_process(f"configs/{module.__name__.split('.')[-1]}.py:mpl,runlocal", tmp_path)
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["step"] == config.num_steps + config.finetune.num_steps
  assert "test/student_accuracy" in results


@pytest.mark.slow
def test_mean_and_std_computed_and_recorded_or_given(tmp_path):
  with tfds.testing.mock_data(num_examples=200):
    _main_in_process("configs/stl10_wrn28_2.py:supervised,runlocal", tmp_path / "computed")
    config = stl10_wrn28_2.get_config("supervised,runlocal")
    dataset = data_lib.build(config.data, seed=0)
    source = dataset.source
    images = np.concatenate([source.labeled_x, source.unlabeled_x]).reshape(-1, 3)
    dataset.close()
    _main_in_process("configs/stl10_wrn28_2.py:supervised,runlocal", tmp_path / "given",
                     **{"data.mean": (100.0, 110.0, 120.0), "data.std": (50.0, 51.0, 52.0)})
  computed = json.loads((tmp_path / "computed" / "normalization.json").read_text())
  assert computed["computed"] and computed["images"] == len(images) // (96 * 96)
  np.testing.assert_allclose(computed["mean"], images.mean(axis=0), atol=1e-3)
  np.testing.assert_allclose(computed["std"], images.std(axis=0), atol=1e-3)
  assert json.loads((tmp_path / "given" / "normalization.json").read_text()) == {
      "mean": [100.0, 110.0, 120.0], "std": [50.0, 51.0, 52.0], "computed": False}


def test_held_in_memory_or_streamed_by_size(tmp_path, capsys):
  """The same STL-10 config: held in memory, then, with the size threshold below its 400
  images of 96 x 96 x 3 (0.01 GiB), streamed as ImageNet is."""
  config = stl10_wrn28_2.get_config("mpl,runlocal")
  with tfds.testing.mock_data(num_examples=200):
    held = data_lib.build(config.data, seed=0)
    assert held.extras["held_in_memory"] and held.eval_x is not None
    held.close()
    config.data.max_in_memory_gib = 0.001
    streamed = data_lib.build(config.data, seed=0)
    assert not streamed.extras["held_in_memory"] and streamed.eval_x is None
    assert "streamed (0.0 GiB at 96 px is above data.max_in_memory_gib=0.001)" in (
        capsys.readouterr().out)
    np.testing.assert_array_equal(streamed.extras["splits"]["labeled"],
                                  held.extras["splits"]["labeled"])
    batch = streamed.source.batch(0)
    assert batch["unlabeled_strong"].shape == (config.data.unlabeled_batch_size, 96, 96, 3)
    assert "unlabeled_y" not in batch  # the unlabeled stream's labels are unknown
    streamed.close()


@pytest.mark.slow
def test_streamed_stl10_trains_through_main(tmp_path):
  """The streamed choice above, trained and evaluated through main.py (slow: the streamed
  96 px pipeline and its evaluation)."""
  with tfds.testing.mock_data(num_examples=200):
    _main_in_process("configs/stl10_wrn28_2.py:mpl,runlocal", tmp_path / "run",
                     **{"data.max_in_memory_gib": 0.001})
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert 0.0 <= results["test/student_accuracy"] <= 1.0


def test_image_folders_above_the_memory_limit_fail_with_one_line(tmp_path):
  args = _folders(tmp_path / "images")
  result = run_main([*FOLDER_RUN, f"--workdir={tmp_path / 'run'}", *args,
                     "--config.data.max_in_memory_gib=0.000001"])
  assert result.returncode == 2
  assert "above data.max_in_memory_gib=1e-06" in result.stderr
  assert not (tmp_path / "run").exists()


def _write_images(folder, count: int, channels: int = 3, start: int = 0):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(start)
  for i in range(count):
    image = rng.integers(0, 256, (20 + i % 5, 24, channels), dtype=np.uint8)
    encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
    suffix = ".png" if i % 2 else ".jpg"
    tf.io.write_file(os.path.join(folder, f"img{start + i}{suffix}"), encode(image))


def _folders(root):
  for name in ("cat", "dog", "owl"):
    _write_images(root / "labeled" / name, 8, start=hash(name) % 1000)
    _write_images(root / "test" / name, 3, start=hash(name) % 1000 + 50)
  _write_images(root / "unlabeled" / "any" / "depth", 12, start=99)
  return [f"--config.data.labeled_dir={root / 'labeled'}",
          f"--config.data.unlabeled_dir={root / 'unlabeled'}",
          f"--config.data.test_dir={root / 'test'}"]


FOLDER_RUN = ["--config=configs/image_folder.py:mpl,runlocal",
              "--config.print_progress=False"]


def test_image_folder_trains_mpl_through_main(tmp_path):
  args = _folders(tmp_path / "images")
  result = run_main([*FOLDER_RUN, f"--workdir={tmp_path / 'run'}", *args])
  assert result.returncode == 0, result.stderr[-2000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["method"] == "mpl" and "test/student_accuracy" in results
  assert "held in host memory" in result.stdout
  # Resuming after the folders changed would train on other input statistics: refused.
  _write_images(tmp_path / "images" / "unlabeled" / "later", 6, start=700)
  again = run_main([*FOLDER_RUN, f"--workdir={tmp_path / 'run'}", *args])
  assert again.returncode == 2
  assert "differ from those this run started with" in again.stderr
  assert (tmp_path / "run" / "results.json").exists()  # the finished run is untouched


@pytest.mark.parametrize("breakage, expected", [
    ("empty_unlabeled", "data.unlabeled_dir=.* holds no images"),
    ("test_only_class", r"data.test_dir has classes \['yak'\]"),
    ("unreadable", r"labeled/dog/broken.png is not a readable image"),
    ("mixed_channels", "images of mixed channel counts"),
])
def test_bad_folders_fail_with_one_line_and_write_nothing(tmp_path, breakage, expected):
  args = _folders(tmp_path / "images")
  images = tmp_path / "images"
  if breakage == "empty_unlabeled":
    for f in (images / "unlabeled" / "any" / "depth").iterdir():
      f.unlink()
  elif breakage == "test_only_class":
    _write_images(images / "test" / "yak", 2)
  elif breakage == "unreadable":
    (images / "labeled" / "dog" / "broken.png").write_bytes(b"not an image")
  else:
    _write_images(images / "labeled" / "owl", 2, channels=1, start=500)
  workdir = tmp_path / "run"
  result = run_main([*FOLDER_RUN, f"--workdir={workdir}", *args])
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and re.search(expected, errors[0]), result.stderr[-800:]
  assert not workdir.exists()


def test_folder_classes_are_the_sub_folders(tmp_path):
  _folders(tmp_path)
  assert own_images.folder_classes(str(tmp_path / "labeled"), "labeled_dir") == [
      "cat", "dog", "owl"]
  with pytest.raises(config_checks.ConfigError, match="no class sub-folder"):
    own_images.folder_classes(str(tmp_path / "unlabeled" / "any" / "depth"), "labeled_dir")
