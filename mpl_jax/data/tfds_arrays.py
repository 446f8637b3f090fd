"""Prepared tfds data, never downloaded: a missing data set fails at once with the command
that prepares it. Small splits (CIFAR-10, SVHN) are read whole into host memory.
TensorFlow is imported inside the functions that need it."""

import numpy as np

from mpl_jax.errors import ConfigError


class DataNotFoundError(ConfigError):
  """A data set is not prepared in the data_dir."""


def missing_data_error(name: str, split: str, data_dir: str | None) -> DataNotFoundError:
  where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
  return DataNotFoundError(
      f"data set {name!r} (split {split!r}) is not prepared in {where}; prepare it with "
      f"`tfds build {name} --data_dir={data_dir or '~/tensorflow_datasets'}` on a machine "
      "with network access, or set --config.data.data_dir")


def load_dataset(name: str, split: str, data_dir: str | None, **kwargs):
  """`tfds.load` that never downloads and fails at once, with the fix, on missing data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.load(name, split=split, data_dir=data_dir, download=False, **kwargs)
  except AssertionError:
    raise missing_data_error(name, split, data_dir) from None


def load_arrays(name: str, split: str, data_dir: str | None, *, chunk: int = 4096,
                labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
  """All images (uint8 NHWC) and labels (int32; None without `labels`) of a prepared tfds
  split.

  Fails at once, with the command that prepares the data, when it is missing: tfds would
  otherwise retry a download for minutes.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  dataset = load_dataset(name, split, data_dir)
  images, found = [], []
  for batch in tfds.as_numpy(dataset.batch(chunk)):
    images.append(batch["image"])
    if labels:
      found.append(batch["label"])
  return (np.concatenate(images).astype(np.uint8),
          np.concatenate(found).astype(np.int32) if labels else None)
