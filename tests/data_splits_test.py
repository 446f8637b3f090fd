"""The one split helper: its two orders of draws, and every data set's splits pinned (the
project's results depend on exactly these indices)."""

import numpy as np
import pytest

from mpl_jax.data import cifar_svhn
from mpl_jax.data import digits
from mpl_jax.data import imagenet
from mpl_jax.data import splits


def _labels(seed: int = 0) -> np.ndarray:
  """Shuffled labels of 4 classes of unequal sizes."""
  rng = np.random.default_rng(seed)
  return rng.permutation(np.repeat(np.arange(4), [9, 12, 15, 20]))


@pytest.mark.parametrize("draw", splits.DRAWS)
def test_parts_are_disjoint_sorted_class_balanced_and_rest_is_the_remainder(draw):
  labels = _labels()
  out = splits.class_balanced(labels, {"validation": 2, "labeled": 3},
                              np.random.default_rng(0), rest="unlabeled", draw=draw)
  assert list(out) == ["validation", "labeled", "unlabeled"]
  for name, per_class in (("validation", 2), ("labeled", 3)):
    assert np.all(np.diff(out[name]) > 0)
    np.testing.assert_array_equal(np.bincount(labels[out[name]]), [per_class] * 4)
  union = np.concatenate(list(out.values()))
  np.testing.assert_array_equal(np.sort(union), np.arange(len(labels)))


@pytest.mark.parametrize("draw", splits.DRAWS)
def test_draws_only_from_the_pool(draw):
  labels = _labels()
  pool = np.arange(0, len(labels), 2)
  out = splits.class_balanced(labels, {"labeled": 1}, np.random.default_rng(0), pool=pool,
                              rest="rest", draw=draw)
  assert set(out["labeled"]) <= set(pool)
  np.testing.assert_array_equal(np.sort(np.concatenate([out["labeled"], out["rest"]])), pool)


@pytest.mark.parametrize("draw", splits.DRAWS)
def test_a_count_function_sees_the_class_size_and_what_is_left(draw):
  labels = _labels()
  seen = []

  def half(size: int, left: int) -> int:
    seen.append((size, left))
    return min(size // 2, left)

  out = splits.class_balanced(labels, {"a": 4, "b": half}, np.random.default_rng(0),
                              draw=draw)
  assert sorted(seen) == [(9, 5), (12, 8), (15, 11), (20, 16)]
  np.testing.assert_array_equal(np.bincount(labels[out["b"]]), [4, 6, 7, 10])


def test_the_two_draws_differ_and_each_is_a_pure_function_of_the_generator():
  labels = _labels()
  parts = {}
  for draw in splits.DRAWS:
    a, b = (splits.class_balanced(labels, {"labeled": 3}, np.random.default_rng(5), draw=draw)
            for _ in range(2))
    np.testing.assert_array_equal(a["labeled"], b["labeled"])
    parts[draw] = a["labeled"]
  assert not np.array_equal(parts["by_part"], parts["by_class"])


def test_too_few_examples_and_unknown_draws_fail_with_the_reason():
  with pytest.raises(ValueError, match="class 0 has 9 examples left, 10 asked"):
    splits.class_balanced(_labels(), {"labeled": 10}, np.random.default_rng(0))
  with pytest.raises(ValueError, match="draw='random' is unknown"):
    splits.class_balanced(_labels(), {"labeled": 1}, np.random.default_rng(0), draw="random")


def test_cifar_svhn_splits_are_pinned():
  out = cifar_svhn.make_splits(np.arange(30) % 3, labeled_per_class=2,
                               validation_per_class=1, seed=0)
  assert out["validation"].tolist() == [0, 16, 17]
  assert out["labeled"].tolist() == [2, 3, 21, 22, 26, 28]
  assert out["unlabeled"].tolist() == [1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18, 19, 20,
                                       23, 24, 25, 27, 29]


def test_imagenet_splits_are_pinned():
  out = imagenet.make_splits(np.repeat([0, 1, 2], [5, 8, 11]), labeled_fraction=0.25,
                             validation_per_class=2, seed=0)
  assert out["validation"].tolist() == [2, 4, 9, 11, 14, 23]
  assert out["labeled"].tolist() == [3, 5, 7, 15, 17, 20]


def test_digits_splits_are_pinned():
  _, labels = digits.load()
  out = digits.make_splits(labels, test_per_class=1, validation_per_class=1,
                           labeled_per_class=1, split_seed=0, seed=0)
  assert out.test.tolist() == [27, 71, 136, 296, 475, 580, 892, 1126, 1454, 1516]
  assert out.validation.tolist() == [151, 600, 939, 1182, 1187, 1225, 1406, 1477, 1583, 1674]
  assert out.labeled.tolist() == [80, 383, 862, 887, 1048, 1240, 1413, 1497, 1600, 1650]
