"""Your own images: any tfds image-classification builder (data.name=tfds) or folders of
image files (data.name=image_folder), as labeled, validation, unlabeled and test data.

data.name=tfds: a builder with an `image` and a `label` feature (`data.tfds_name`, e.g.
cifar100 or stl10) read from a prepared data_dir. `data.train_split` is split, a pure
function of data.split_seed and class-balanced like CIFAR-10: `validation_per_class`
images held out, `labeled_per_class` images labeled (or, with `labeled_fraction` > 0, that
share of each class), the rest unlabeled; `unlabeled_extra` adds more unlabeled images:
other splits of the builder ("unlabelled") or other builders ("name:split"); their labels
are never read. `test_split` ("" for none) is evaluated once at the end.

data.name=image_folder: `labeled_dir` holds one sub-folder per class (its name is the
class; classes are ordered by name); `unlabeled_dir` holds images, in any sub-folders,
without labels; `test_dir` ("" for none) has the labeled folder's layout. PNG, JPEG, GIF
and BMP files are decoded by TensorFlow (`tf.io.decode_image`).

Both: images are resized to `image_size` (bilinear, antialiased) when their size differs
and held in host memory, where the CIFAR pipeline augments them (`pipeline.ArraySource`:
flip and pad-and-crop by image_size // 8, RandAugment whose translations and cutout are
image_size // 8 at magnitude 10, cutout); they must fit in `max_in_memory_gib`. `mean` and `std` (per channel,
0..255) are given, or, left empty, computed once from the labeled and unlabeled training
images; either way the values used are in `Dataset.extras["normalization"]`, which the
run writes to its workdir (normalization.json). Bad input (an empty folder, a class in
test but not in labeled, an unreadable image, images of mixed channel counts) fails with
one line naming what to fix, before any compute.
"""

import os
from typing import Any, Mapping

import jax
import numpy as np

from mpl_jax import errors
from mpl_jax.data import base
from mpl_jax.data import image_checks
from mpl_jax.data import splits as splits_lib
from mpl_jax.data import tfds_arrays

IN_MEMORY = False  # held as arrays for tf.data (like CIFAR), not reduced MPL's numpy source
IMAGE_FILES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
_COMMON = frozenset({"labeled_per_class", "labeled_fraction", "validation_per_class",
                     "num_classes", "mean", "std", "max_in_memory_gib"})
_OWN_FIELDS = {
    "tfds": _COMMON | {"tfds_name", "train_split", "test_split", "unlabeled_extra"},
    "image_folder": (_COMMON - {"num_classes"}) | {"labeled_dir", "unlabeled_dir",
                                                   "test_dir"},
}


# ---- Image folders: what can be known by listing them (no TensorFlow). ----


def _image_files(folder: str) -> list[str]:
  """Every image file under `folder`, recursively, sorted."""
  found = []
  for root, _, names in os.walk(folder):
    found += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_FILES)]
  return sorted(found)


def folder_classes(folder: str, field: str) -> list[str]:
  """The class sub-folders of a labeled folder, sorted; ConfigError if it has none."""
  if not os.path.isdir(folder):
    raise errors.ConfigError(f"data.{field}={folder!r} is not a folder; give a folder with "
                             "one sub-folder of images per class")
  classes = sorted(d.name for d in os.scandir(folder) if d.is_dir() and _image_files(d.path))
  if not classes:
    raise errors.ConfigError(f"data.{field}={folder!r} has no class sub-folder with images; "
                             "put each class's images in a sub-folder named after the class")
  return classes


def _check_folders(cfg: Mapping[str, Any]) -> None:
  classes = folder_classes(cfg["labeled_dir"], "labeled_dir")
  if not os.path.isdir(cfg["unlabeled_dir"]) or not _image_files(cfg["unlabeled_dir"]):
    raise errors.ConfigError(f"data.unlabeled_dir={cfg['unlabeled_dir']!r} holds no images "
                             f"({', '.join(IMAGE_FILES)}); give the folder of unlabeled images")
  if cfg["test_dir"]:
    unknown = sorted(set(folder_classes(cfg["test_dir"], "test_dir")) - set(classes))
    if unknown:
      raise errors.ConfigError(f"data.test_dir has classes {unknown} that data.labeled_dir "
                               f"does not (it has {classes}); the test classes must be "
                               "labeled classes")


def check(cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError on the first field of the data section that cannot work."""
  image_checks.check(cfg, _OWN_FIELDS[cfg["name"]])
  for field in ("mean", "std"):
    if len(cfg[field]) not in (0, 3):
      raise errors.ConfigError(f"data.{field}={tuple(cfg[field])} needs 3 values (one per "
                               "channel, 0..255) or none (computed from the training images)")
  if any(v <= 0 for v in cfg["std"]):
    raise errors.ConfigError(f"data.std={tuple(cfg['std'])} must be positive")
  errors.positive("data.max_in_memory_gib", cfg["max_in_memory_gib"])
  if cfg["name"] == "tfds":
    errors.positive("data.num_classes", cfg["num_classes"])
    if not cfg["tfds_name"]:
      raise errors.ConfigError("data.name=tfds needs data.tfds_name (a tfds image builder, "
                               "e.g. cifar100)")
  else:
    _check_folders(cfg)


def spec(cfg: Mapping[str, Any]) -> base.DataSpec:
  size = int(cfg["image_size"])
  if cfg["name"] == "tfds":
    classes = int(cfg["num_classes"])
  else:
    classes = len(folder_classes(cfg["labeled_dir"], "labeled_dir"))
  return base.DataSpec(num_classes=classes, input_shape=(size, size, 3))


# ---- Reading the images (TensorFlow). ----


def _read_folder(files: list[str]) -> list[np.ndarray]:
  """Each file decoded to uint8 HWC; ConfigError naming a file that cannot be decoded."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images = []
  for path in files:
    try:
      image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
      raise errors.ConfigError(f"{path} is not a readable image; remove or replace it") from None
    images.append(image)
  channels = {}
  for path, image in zip(files, images):
    channels.setdefault(image.shape[-1], path)
  if len(channels) > 1:
    shown = ", ".join(f"{c} channel(s) in {p}" for c, p in sorted(channels.items()))
    raise errors.ConfigError(f"images of mixed channel counts ({shown}); convert them to "
                             "one format (e.g. all RGB)")
  return images


def _resized(images, size: int) -> np.ndarray:
  """uint8 images (a list of HWC or an NHWC array) at size x size, 3 channels."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = []
  for image in images:
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    if image.shape[:2] != (size, size):
      image = tf.image.resize(image, (size, size), antialias=True).numpy()
      image = np.clip(np.round(image), 0, 255)
    out.append(image.astype(np.uint8))
  return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def _labeled_folder(folder: str, classes: list[str], size: int):
  files, labels = [], []
  for index, name in enumerate(classes):
    if os.path.isdir(os.path.join(folder, name)):
      found = _image_files(os.path.join(folder, name))
      files += found
      labels += [index] * len(found)
  return _resized(_read_folder(files), size), np.asarray(labels, np.int32)


def _load(cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """train_x/y, extra_x (unlabeled only) and test_x/y (None when none), uint8 at size."""
  size = int(cfg["image_size"])
  if cfg["name"] == "image_folder":
    classes = folder_classes(cfg["labeled_dir"], "labeled_dir")
    train_x, train_y = _labeled_folder(cfg["labeled_dir"], classes, size)
    extra_x = _resized(_read_folder(_image_files(cfg["unlabeled_dir"])), size)
    test = _labeled_folder(cfg["test_dir"], classes, size) if cfg["test_dir"] else (None,
                                                                                   None)
    return {"train_x": train_x, "train_y": train_y, "extra_x": extra_x,
            "test_x": test[0], "test_y": test[1]}
  name, data_dir = cfg["tfds_name"], cfg["data_dir"] or None
  train_x, train_y = tfds_arrays.load_arrays(name, cfg["train_split"], data_dir)
  if train_y.size and train_y.max() >= int(cfg["num_classes"]):
    raise errors.ConfigError(f"{name} has labels up to {train_y.max()}, more than "
                             f"data.num_classes={cfg['num_classes']}; set it to "
                             f"{train_y.max() + 1}")
  extras = []
  for source in cfg["unlabeled_extra"]:
    builder, _, split = source.rpartition(":")
    extras.append(_resized(tfds_arrays.load_arrays(builder or name, split, data_dir,
                                                   labels=False)[0], size))
  test = (tfds_arrays.load_arrays(name, cfg["test_split"], data_dir) if cfg["test_split"]
          else (None, None))
  return {"train_x": _resized(train_x, size), "train_y": train_y,
          "extra_x": (np.concatenate(extras) if extras
                      else np.zeros((0, size, size, 3), np.uint8)),
          "test_x": None if test[0] is None else _resized(test[0], size), "test_y": test[1]}


def make_splits(labels: np.ndarray, cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """validation, labeled and the rest (unlabeled) of the training images, class-balanced,
  a pure function of data.split_seed."""
  fraction = float(cfg["labeled_fraction"])

  def labeled(size: int, left: int) -> int:
    if not fraction:
      return int(cfg["labeled_per_class"])
    return min(max(1, int(np.floor(fraction * size + 0.5))), left)

  try:
    return splits_lib.class_balanced(
        labels, {"validation": int(cfg["validation_per_class"]), "labeled": labeled},
        np.random.default_rng([int(cfg["split_seed"]), 0x0E1]), rest="unlabeled")
  except ValueError as err:
    raise errors.ConfigError(f"the training images cannot be split as configured ({err}); "
                             "lower data.labeled_per_class or data.validation_per_class")


def normalization(cfg: Mapping[str, Any], images: np.ndarray) -> dict[str, Any]:
  """The per-channel mean and std the networks' inputs use: given, or from `images`."""
  if len(cfg["mean"]) and len(cfg["std"]):
    return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "computed": False}
  flat = images.reshape(-1, images.shape[-1]).astype(np.float64)
  return {"mean": flat.mean(axis=0).round(3).tolist(),
          "std": np.maximum(flat.std(axis=0), 1e-3).round(3).tolist(), "computed": True,
          "images": int(len(images))}


def build(cfg: Mapping[str, Any], seed: int) -> base.Dataset:
  """The Dataset: arrays in host memory, augmented by the CIFAR pipeline."""
  from mpl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  arrays = _load(cfg)
  parts = make_splits(arrays["train_y"], cfg)
  x, y = arrays["train_x"], arrays["train_y"]
  unlabeled_x = np.concatenate([x[parts["unlabeled"]], arrays["extra_x"]])
  unlabeled_y = np.concatenate([y[parts["unlabeled"]],
                                np.full(len(arrays["extra_x"]), -1, np.int32)])
  gib = (len(x) + len(arrays["extra_x"])) * x[0].nbytes / 2**30
  if gib > float(cfg["max_in_memory_gib"]):
    raise errors.ConfigError(f"the training images take {gib:.1f} GiB, above "
                             f"data.max_in_memory_gib={cfg['max_in_memory_gib']}; raise it if "
                             "the host has the memory (own image sets are not streamed)")
  if not len(unlabeled_x):
    raise errors.ConfigError("no unlabeled images are left: lower data.labeled_per_class or "
                             "data.validation_per_class, or add data.unlabeled_extra")
  stats = normalization(cfg, np.concatenate([x[parts["labeled"]], unlabeled_x]))
  mean_std = (tuple(stats["mean"]), tuple(stats["std"]))
  data_spec = spec(cfg)
  print(f"[data] {cfg.get('tfds_name') or cfg['labeled_dir']}: {len(parts['labeled'])} "
        f"labeled, {len(parts['validation'])} validation, {len(unlabeled_x)} unlabeled, "
        f"{0 if arrays['test_x'] is None else len(arrays['test_x'])} test images at "
        f"{cfg['image_size']} px, {gib:.2f} GiB held in host memory; normalized by "
        f"{'the computed' if stats['computed'] else 'the given'} mean {stats['mean']} and "
        f"std {stats['std']}", flush=True)
  known = np.any(unlabeled_y >= 0)
  source = pipeline.ArraySource(
      name=cfg["name"], labeled_x=x[parts["labeled"]], labeled_y=y[parts["labeled"]],
      unlabeled_x=unlabeled_x, unlabeled_y=unlabeled_y if known and np.all(
          unlabeled_y >= 0) else None,
      labeled_batch_size=int(cfg["labeled_batch_size"]),
      unlabeled_batch_size=int(cfg["unlabeled_batch_size"]),
      augment=pipeline.ImageAugment.from_config(cfg, "cifar"),  # sizes scale with the image
      seed=seed, process_index=jax.process_index(), process_count=jax.process_count(),
      mean_std=mean_std)
  test_x = arrays["test_x"]
  return base.Dataset(
      source=source, eval_x=pipeline.normalize(x[parts["validation"]], mean_std=mean_std),
      eval_y=y[parts["validation"]], num_classes=data_spec.num_classes,
      input_shape=data_spec.input_shape,
      extras={"splits": parts, "normalization": stats},
      test_x=None if test_x is None else pipeline.normalize(test_x, mean_std=mean_std),
      test_y=arrays["test_y"])
