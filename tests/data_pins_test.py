"""The image configs' splits and images are pinned: a change to the data code must not
change which images are labeled, held out, unlabeled or tested, nor the first batch's
uint8 images before augmentation (augmented float batches depend on the CPU). The hashes
were taken on tfds's mock data before the generic image module existed."""

import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar10_wrn28_2
from configs import imagenet10_resnet50
from configs import svhn_wrn28_2
from mpl_jax import data as data_lib

PINNED = {
    "cifar10": (cifar10_wrn28_2, {"splits": "3d814e1634e59ed6",
                                  "first_batch": "be1d771e03bf1409"}),
    "svhn": (svhn_wrn28_2, {"splits": "3d814e1634e59ed6", "first_batch": "525a7e3bf11da15d"}),
    "imagenet10": (imagenet10_resnet50, {"splits": "ad0488494bc790a6"}),
}


def digest(*arrays) -> str:
  """sha256 (first 16 hex digits) over each array's dtype, shape and bytes."""
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(str(a.dtype).encode())
    h.update(str(a.shape).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_splits_and_first_batch_are_unchanged(name):
  module, pinned = PINNED[name]
  config = module.get_config("mpl,runlocal")
  with tfds.testing.mock_data(num_examples=200):
    dataset = data_lib.build(config.data, 0)
  try:
    splits = dataset.extras["splits"]
    found = {"splits": digest(*[np.asarray(splits[k]) for k in sorted(splits)])}
    source = dataset.source
    if "first_batch" in pinned:
      labeled = source._labeled_indices.rows(0, source.labeled_batch_size)  # pylint: disable=protected-access
      unlabeled = source._unlabeled_indices.rows(0, source.unlabeled_batch_size)  # pylint: disable=protected-access
      found["first_batch"] = digest(source.labeled_x[labeled], source.labeled_y[labeled],
                                    source.unlabeled_x[unlabeled])
  finally:
    dataset.close()
  assert found == pinned
