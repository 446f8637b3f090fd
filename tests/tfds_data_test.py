"""tfds image sets: missing data fails fast with the fix; mock data loads; paper splits."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mpl_jax.data import cifar_svhn
from mpl_jax.data import tfds_arrays


def test_missing_data_fails_within_seconds_naming_the_fix(tmp_path):
  start = time.time()
  with pytest.raises(tfds_arrays.DataNotFoundError) as err:
    tfds_arrays.load_arrays("cifar10", "train", str(tmp_path))
  assert time.time() - start < 30
  message = str(err.value)
  assert "\n" not in message
  assert "'cifar10'" in message and str(tmp_path) in message
  assert f"tfds build cifar10 --data_dir={tmp_path}" in message


@pytest.mark.parametrize("name", ["cifar10", "svhn_cropped"])
def test_mock_data_loads_as_uint8_images_and_int_labels(tmp_path, name):
  with tfds.testing.mock_data(num_examples=64):
    images, labels = tfds_arrays.load_arrays(name, "train", str(tmp_path), chunk=25)
  assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
  assert labels.shape == (64,) and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() < 10


def test_paper_split_is_seeded_balanced_and_disjoint():
  labels = np.repeat(np.arange(10), 1000)  # a CIFAR-sized training set, 5,000 per class
  labels = np.tile(labels, 5)
  cfg = cifar_svhn.PAPER_SPLITS["cifar10"]
  a = cifar_svhn.make_splits(
      labels, labeled_per_class=cfg["labeled_per_class"],
      validation_per_class=cfg["validation_per_class"], seed=3)
  b = cifar_svhn.make_splits(
      labels, labeled_per_class=cfg["labeled_per_class"],
      validation_per_class=cfg["validation_per_class"], seed=3)
  c = cifar_svhn.make_splits(
      labels, labeled_per_class=cfg["labeled_per_class"],
      validation_per_class=cfg["validation_per_class"], seed=4)
  assert {k: len(v) for k, v in a.items()} == {"labeled": 4000, "unlabeled": 41000,
                                               "validation": 5000}
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["labeled"], c["labeled"])
  assert np.all(np.bincount(labels[a["labeled"]]) == 400)
  assert np.all(np.bincount(labels[a["validation"]]) == 500)
  union = np.concatenate(list(a.values()))
  assert len(np.unique(union)) == len(union) == len(labels)
