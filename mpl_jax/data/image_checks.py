"""The config section every tfds image set shares (CIFAR-10, SVHN, ImageNet), checked."""

from typing import AbstractSet, Any, Mapping

import jax

from mpl_jax import errors

FIELDS = frozenset({"name", "data_dir", "split_seed", "labeled_batch_size",
                    "unlabeled_batch_size", "image_size", "randaugment_layers",
                    "randaugment_magnitude", "cutout_size"})


def check(data: Mapping[str, Any], own_fields: AbstractSet[str]) -> None:
  """Fields (the shared ones plus the set's `own_fields`), sizes, and batch sizes that
  divide by the number of processes."""
  valid = FIELDS | own_fields
  present = set(data.keys())
  if present - valid or valid - present - {"use_extra"}:
    wrong = sorted(present - valid) or sorted(valid - present)
    what = "unknown" if present - valid else "missing"
    raise errors.ConfigError(f"data ({data['name']}) has {what} fields {wrong}; valid: "
                             f"{sorted(valid)}")
  for field in ("labeled_batch_size", "unlabeled_batch_size", "image_size"):
    errors.positive(f"data.{field}", data[field])
  for field in ("split_seed", "randaugment_layers", "randaugment_magnitude", "cutout_size",
                "validation_per_class"):
    errors.positive(f"data.{field}", data[field], allow_zero=True)
  if "labeled_per_class" in data:
    errors.positive("data.labeled_per_class", data["labeled_per_class"])
  if "labeled_fraction" in data:  # 0 beside labeled_per_class: use labeled_per_class
    fraction, per_class = data["labeled_fraction"], "labeled_per_class" in data
    if not (0.0 < fraction <= 1.0 or (per_class and fraction == 0.0)):
      allowed = "[0, 1] (0: labeled_per_class)" if per_class else "(0, 1] (ImageNet-10%: 0.1)"
      raise errors.ConfigError(f"data.labeled_fraction={fraction} must be in {allowed}")
  if data["cutout_size"] > data["image_size"]:
    raise errors.ConfigError(f"data.cutout_size={data['cutout_size']} exceeds "
                             f"data.image_size={data['image_size']}")
  processes = jax.process_count()
  for field in ("labeled_batch_size", "unlabeled_batch_size"):
    if data[field] % processes:
      raise errors.ConfigError(f"data.{field}={data[field]} does not divide by the "
                               f"{processes} processes; use a multiple of {processes}")
