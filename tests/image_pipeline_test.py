"""Image pipelines: deterministic resumable batches, per-host rows, the paper's splits,
and every image config training end to end on tfds mock data."""

import json
import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar10_wrn28_2
from configs import imagenet10_resnet50
from configs import svhn_wrn28_2
from mpl_jax import train
from mpl_jax.data import cifar_svhn
from mpl_jax.data import imagenet
from mpl_jax.data import pipeline
from mpl_jax.data import tfds_arrays

IMAGE_CONFIGS = {"cifar10": cifar10_wrn28_2, "svhn": svhn_wrn28_2,
                 "imagenet10": imagenet10_resnet50}
MOCK_EXAMPLES = 200


def _source(**kwargs) -> pipeline.ArraySource:
  rng = np.random.default_rng(0)
  args = dict(name="cifar10",
              labeled_x=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
              labeled_y=np.arange(24) % 10,
              unlabeled_x=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
              unlabeled_y=np.arange(40) % 10, labeled_batch_size=8, unlabeled_batch_size=16,
              augment=pipeline.ImageAugment(), seed=3)
  args.update(kwargs)
  return pipeline.ArraySource(**args)


@pytest.fixture(scope="module")
def sequential_batches():
  source = _source()
  batches = [source.batch(step) for step in range(4)]
  source.close()
  return batches


def test_array_source_batches_have_the_right_shapes_and_dtypes(sequential_batches):
  batch = sequential_batches[0]
  shapes = {k: (v.shape, v.dtype.name) for k, v in batch.items()}
  assert shapes == {"labeled_x": ((8, 32, 32, 3), "float32"), "labeled_y": ((8,), "int32"),
                    "unlabeled_weak": ((16, 32, 32, 3), "float32"),
                    "unlabeled_strong": ((16, 32, 32, 3), "float32"),
                    "unlabeled_y": ((16,), "int32")}
  # Normalized pixels, and two different views of each unlabeled image.
  assert abs(float(batch["labeled_x"].mean())) < 1.0
  assert not np.allclose(batch["unlabeled_weak"], batch["unlabeled_strong"])


def test_a_resumed_source_gives_the_uninterrupted_batches(sequential_batches):
  resumed = _source()
  for step in (2, 3):  # a fresh source starting at step 2, as after a restart
    batch = resumed.batch(step)
    for key, value in batch.items():
      np.testing.assert_array_equal(value, sequential_batches[step][key], err_msg=key)
  resumed.close()
  other_seed = _source(seed=4)
  assert not np.array_equal(other_seed.batch(2)["unlabeled_strong"],
                            sequential_batches[2]["unlabeled_strong"])
  other_seed.close()


def test_each_process_builds_its_rows_of_the_same_global_batch(sequential_batches):
  parts = []
  for index in range(2):
    source = _source(process_index=index, process_count=2)
    parts.append(source.batch(1))
    source.close()
  for key, value in sequential_batches[1].items():
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value, err_msg=key)


def test_every_image_is_drawn_once_per_epoch():
  indices = pipeline.EpochIndices(40, seed=3, stream=pipeline.UNLABELED)
  epoch = np.concatenate([indices.rows(step, 8) for step in range(5)])
  assert sorted(epoch) == list(range(40))
  next_epoch = np.concatenate([indices.rows(step, 8) for step in range(5, 10)])
  assert sorted(next_epoch) == list(range(40)) and not np.array_equal(epoch, next_epoch)
  np.testing.assert_array_equal(  # a batch across the epoch boundary
      indices.rows(2, 16), np.concatenate([epoch[32:], next_epoch[:8]]))


def test_svhn_unlabeled_pool_adds_extra_and_never_holds_labeled_or_validation():
  cfg = svhn_wrn28_2.get_config("mpl,runlocal").data
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    dataset = cifar_svhn.build(cfg, seed=0)
    train_x, _ = tfds_arrays.load_arrays("svhn_cropped", "train", None)
    extra_x, _ = tfds_arrays.load_arrays("svhn_cropped", "extra", None)
  parts = dataset.extras["splits"]
  source = dataset.source
  assert len(source.unlabeled_x) == len(parts["unlabeled"]) + len(extra_x)
  held = {train_x[i].tobytes() for i in np.concatenate([parts["labeled"], parts["validation"]])}
  assert not held & {x.tobytes() for x in source.unlabeled_x[:len(parts["unlabeled"])]}
  assert np.all(np.bincount(source.labeled_y, minlength=10) == cfg.labeled_per_class)
  assert np.all(np.bincount(dataset.eval_y, minlength=10) == cfg.validation_per_class)


def test_imagenet_splits_are_seeded_exact_per_class_and_disjoint():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(50), rng.integers(732, 1301, size=50))
  a = imagenet.make_splits(labels, labeled_fraction=0.1, validation_per_class=10, seed=1)
  b = imagenet.make_splits(labels, labeled_fraction=0.1, validation_per_class=10, seed=1)
  c = imagenet.make_splits(labels, labeled_fraction=0.1, validation_per_class=10, seed=2)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["labeled"], c["labeled"])
  per_class = np.bincount(labels)
  np.testing.assert_array_equal(np.bincount(labels[a["labeled"]]),
                                np.floor(0.1 * per_class + 0.5).astype(int))
  assert np.all(np.bincount(labels[a["validation"]]) == 10)
  assert not set(a["labeled"]) & set(a["validation"])


@pytest.mark.parametrize("name", sorted(IMAGE_CONFIGS))
def test_missing_data_fails_within_seconds_naming_the_fix(tmp_path, name):
  config = IMAGE_CONFIGS[name].get_config("mpl,runlocal")
  config.data.data_dir = str(tmp_path / "nothing_here")
  start = time.time()
  with pytest.raises(tfds_arrays.DataNotFoundError) as err:
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert time.time() - start < 30
  message = str(err.value)
  assert "\n" not in message and config.data.name in message
  assert f"tfds build {config.data.name} --data_dir={config.data.data_dir}" in message
  assert not os.path.exists(tmp_path / "workdir" / "checkpoints")


def _two_step_config(name: str, num_devices: int):
  config = IMAGE_CONFIGS[name].get_config("mpl,runlocal")
  config.num_steps = 2
  config.finetune.num_steps = 0
  config.mesh.num_devices = num_devices
  config.print_progress = False
  return config


# cifar10 in `make test`; svhn (its extra split) and imagenet10 (streamed) in `make test-all`.
@pytest.mark.parametrize("name", [n if n == "cifar10" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(IMAGE_CONFIGS)])
def test_image_config_batches_shard_and_train_two_steps(tmp_path, monkeypatch, name):
  config = _two_step_config(name, num_devices=8)
  fed = []  # the host batches the loop hands to the 8-device mesh
  to_global = train.sharding.to_global

  def recording_to_global(batch, mesh, **kwargs):
    fed.append({k: (v.shape, v.dtype.name) for k, v in batch.items()})
    return to_global(batch, mesh, **kwargs)

  monkeypatch.setattr(train.sharding, "to_global", recording_to_global)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    result = train.train_and_evaluate(config, str(tmp_path))
  assert int(result.state.step) == 2 and len(fed) == 2
  size, b, ub = (config.data.image_size, config.data.labeled_batch_size,
                 config.data.unlabeled_batch_size)
  assert fed[0] == {"labeled_x": ((b, size, size, 3), "float32"), "labeled_y": ((b,), "int32"),
                    "unlabeled_weak": ((ub, size, size, 3), "float32"),
                    "unlabeled_strong": ((ub, size, size, 3), "float32"),
                    "unlabeled_y": ((ub,), "int32")}
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  for key in ("eval/student_ema_accuracy", "eval/teacher_top5_accuracy",
              "test/student_accuracy", "test/student_ema_top5_accuracy"):
    assert 0.0 <= results[key] <= 1.0, key
  assert results["test/student_top5_accuracy"] >= results["test/student_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(IMAGE_CONFIGS))
def test_image_config_trains_two_steps_on_one_device(tmp_path, name):
  config = _two_step_config(name, num_devices=1)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    result = train.train_and_evaluate(config, str(tmp_path))
  assert int(result.state.step) == 2
