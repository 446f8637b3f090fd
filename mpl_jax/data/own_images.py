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

Held in memory or streamed, the module's choice from the set's size: when the training
images (train split and unlabeled extras, at `image_size`) fit in `max_in_memory_gib`,
they are resized (bilinear, antialiased), held in host memory and augmented by the CIFAR
pipeline (`pipeline.ArraySource`: flip and pad-and-crop by image_size // 8, RandAugment
whose translations and cutout are image_size // 8 at magnitude 10, cutout); a larger tfds
set is streamed like ImageNet (`imagenet_stream.StreamSource`: Inception crop to
`image_size` and flip, RandAugment; evaluation center crops), its unlabeled stream drawing
from the rest of train and the extras in proportion to their sizes. Image folders are
always held in memory. The choice is printed and kept in `Dataset.extras`. `mean` and
`std` (per channel, 0..255) are given, or, left empty, computed once from the training
images (held in memory: the labeled and unlabeled ones; streamed: the first
`STATS_IMAGES` of train); either way the values used are in
`Dataset.extras["normalization"]`, which the run writes to its workdir
(normalization.json). Bad input (an empty folder, a class in
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
STATS_IMAGES = 10_000  # a streamed set's mean and std come from this many train images
_COMMON = frozenset({"labeled_per_class", "labeled_fraction", "validation_per_class",
                     "num_classes", "mean", "std", "max_in_memory_gib", "shuffle_buffer"})
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
  if bool(len(cfg["mean"])) != bool(len(cfg["std"])):
    raise errors.ConfigError("data.mean and data.std go together: give both, or neither "
                             "(computed from the training images)")
  if any(v <= 0 for v in cfg["std"]):
    raise errors.ConfigError(f"data.std={tuple(cfg['std'])} must be positive")
  errors.positive("data.max_in_memory_gib", cfg["max_in_memory_gib"])
  errors.positive("data.shuffle_buffer", cfg["shuffle_buffer"])
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


def _rgb(image):
  """HWC with 1 to 4 channels -> 3: grey repeated, alpha dropped (a TF or numpy image)."""
  channels = image.shape[-1]
  if channels in (1, 2):
    image = image[..., :1]
    return np.repeat(image, 3, axis=-1) if isinstance(image, np.ndarray) else (
        image[..., :1] * np.ones((1, 1, 3), np.uint8))
  return image[..., :3]


def _resize(image, size: int):
  """A uint8 HWC TF image at size x size (bilinear, antialiased), unchanged at that size."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  resized = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
      image, (size, size), antialias=True)), 0, 255), tf.uint8)
  same = tf.logical_and(tf.shape(image)[0] == size, tf.shape(image)[1] == size)
  return tf.cond(same, lambda: tf.ensure_shape(image, (None, None, 3)),
                 lambda: resized)


def _read_folder(files: list[str], size: int) -> tuple[np.ndarray, dict[int, str]]:
  """The files decoded, each at size x size with 3 channels (uint8 NHWC), and {channel
  count: first file with it}; ConfigError naming a file that cannot be decoded."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images, channels = [], {}
  for path in files:
    try:
      image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
      raise errors.ConfigError(f"{path} is not a readable image; remove or replace it") from None
    channels.setdefault(int(image.shape[-1]), path)
    images.append(np.asarray(_resize(tf.convert_to_tensor(_rgb(image.numpy())), size)))
  stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
  return stacked, channels


def _labeled_folder(folder: str, classes: list[str], size: int):
  files, labels = [], []
  for index, name in enumerate(classes):
    if os.path.isdir(os.path.join(folder, name)):
      found = _image_files(os.path.join(folder, name))
      files += found
      labels += [index] * len(found)
  images, channels = _read_folder(files, size)
  return images, np.asarray(labels, np.int32), channels


def _tfds_images(name: str, split: str, data_dir: str | None, size: int, labels: bool):
  """All images of a tfds split at size x size, 3 channels (uint8), and their labels
  (int32; None without `labels`): resized one by one before batching, so images of
  any sizes load."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ds = tfds_arrays.load_dataset(name, split, data_dir)

  def prepare(ex):
    image = _rgb(ex["image"])
    label = tf.cast(ex["label"], tf.int32) if labels else tf.constant(0, tf.int32)
    return _resize(image, size), label

  images, found = [], []
  for x, y in ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(1024
                                                                      ).as_numpy_iterator():
    images.append(x)
    found.append(y)
  images = np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8)
  return images, (np.concatenate(found) if labels and found else
                  (np.zeros((0,), np.int32) if labels else None))


def _load(cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """train_x/y, extra_x (unlabeled only) and test_x/y (None when none), uint8 at size."""
  size = int(cfg["image_size"])
  if cfg["name"] == "image_folder":
    classes = folder_classes(cfg["labeled_dir"], "labeled_dir")
    train_x, train_y, channels = _labeled_folder(cfg["labeled_dir"], classes, size)
    extra_x, more = _read_folder(_image_files(cfg["unlabeled_dir"]), size)
    test_x = test_y = None
    if cfg["test_dir"]:
      test_x, test_y, test_channels = _labeled_folder(cfg["test_dir"], classes, size)
      more = {**test_channels, **more}
    channels = {**more, **channels}
    if len(channels) > 1:
      shown = ", ".join(f"{c} channel(s) in {p}" for c, p in sorted(channels.items()))
      raise errors.ConfigError(f"images of mixed channel counts ({shown}); convert them to "
                               "one format (e.g. all RGB)")
    return {"train_x": train_x, "train_y": train_y, "extra_x": extra_x,
            "test_x": test_x, "test_y": test_y}
  name, data_dir = cfg["tfds_name"], cfg["data_dir"] or None
  train_x, train_y = _tfds_images(name, cfg["train_split"], data_dir, size, labels=True)
  _check_labels(cfg, train_y)
  extras = []
  for source in cfg["unlabeled_extra"]:
    builder, _, split = source.rpartition(":")
    extras.append(_tfds_images(builder or name, split, data_dir, size, labels=False)[0])
  test_x = test_y = None
  if cfg["test_split"]:
    test_x, test_y = _tfds_images(name, cfg["test_split"], data_dir, size, labels=True)
  return {"train_x": train_x, "train_y": train_y,
          "extra_x": (np.concatenate(extras) if extras
                      else np.zeros((0, size, size, 3), np.uint8)),
          "test_x": test_x, "test_y": test_y}


def make_splits(labels: np.ndarray, cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """validation, labeled and the rest (unlabeled) of the training images, class-balanced,
  a pure function of data.split_seed."""
  fraction = float(cfg["labeled_fraction"])
  labeled = (splits_lib.fraction(fraction) if fraction
             else int(cfg["labeled_per_class"]))
  try:
    parts = splits_lib.class_balanced(
        labels, {"validation": int(cfg["validation_per_class"]), "labeled": labeled},
        np.random.default_rng([int(cfg["split_seed"]), 0x0E1]), rest="unlabeled")
  except ValueError as err:
    raise errors.ConfigError(f"the training images cannot be split as configured ({err}); "
                             "lower data.labeled_per_class or data.validation_per_class")
  unlabeled_classes = sorted(set(np.unique(labels)) - set(np.unique(labels[parts["labeled"]])))
  if unlabeled_classes:
    raise errors.ConfigError(f"classes {unlabeled_classes} have no labeled image left after "
                             f"data.validation_per_class={cfg['validation_per_class']} are "
                             "held out; add images to them or lower validation_per_class")
  return parts


def normalization(cfg: Mapping[str, Any], images: np.ndarray | None) -> dict[str, Any]:
  """The per-channel mean and std the networks' inputs use: given, or from `images`."""
  if len(cfg["mean"]) and len(cfg["std"]):
    return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "computed": False}
  total, squares, pixels = np.zeros(3), np.zeros(3), 0
  for start in range(0, len(images), 1024):  # float64 sums, a chunk at a time
    chunk = images[start:start + 1024].reshape(-1, 3).astype(np.float64)
    total, squares, pixels = total + chunk.sum(0), squares + (chunk**2).sum(0), (
        pixels + len(chunk))
  mean = total / max(pixels, 1)
  std = np.sqrt(np.maximum(squares / max(pixels, 1) - mean**2, 0.0))
  return {"mean": mean.round(3).tolist(), "std": np.maximum(std, 1e-3).round(3).tolist(),
          "computed": True, "images": int(len(images))}


def _gib(images: int, cfg: Mapping[str, Any]) -> float:
  return images * int(cfg["image_size"]) ** 2 * 3 / 2**30


def build(cfg: Mapping[str, Any], seed: int) -> base.Dataset:
  """The Dataset: held in memory when the training images fit `max_in_memory_gib`,
  streamed otherwise (tfds sets only)."""
  if cfg["name"] == "tfds":
    from mpl_jax.data import imagenet_stream  # pylint: disable=g-import-not-at-top
    data_dir = cfg["data_dir"] or None
    labels = imagenet_stream.train_labels(data_dir, cfg["tfds_name"], cfg["train_split"])
    extras = []
    for source in cfg["unlabeled_extra"]:
      builder, _, split = source.rpartition(":")
      builder = builder or cfg["tfds_name"]
      extras.append((builder, split, imagenet_stream.count_examples(builder, split,
                                                                    data_dir)))
    gib = _gib(len(labels) + sum(n for _, _, n in extras), cfg)
    if gib > float(cfg["max_in_memory_gib"]):
      return _streamed(cfg, seed, labels, extras, gib)
  return _in_memory(cfg, seed)


def _streamed(cfg: Mapping[str, Any], seed: int, labels: np.ndarray, extras: list,
              gib: float) -> base.Dataset:
  """A tfds set too large for memory, streamed as ImageNet is (`imagenet_stream`)."""
  from mpl_jax.data import imagenet_stream  # pylint: disable=g-import-not-at-top
  from mpl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  _check_labels(cfg, labels)
  name, split, size = cfg["tfds_name"], cfg["train_split"], int(cfg["image_size"])
  data_dir = cfg["data_dir"] or None
  parts = make_splits(labels, cfg)
  stats = normalization(cfg, None if len(cfg["mean"]) else imagenet_stream.first_images(
      data_dir, name, split, size, STATS_IMAGES))
  mean_std = (tuple(stats["mean"]), tuple(stats["std"]))
  source = imagenet_stream.StreamSource(
      cfg=cfg, num_train=len(labels), parts=parts, seed=seed,
      process_index=jax.process_index(), process_count=jax.process_count(), name=name,
      train_split=split, mean_std=mean_std, unlabeled=extras,
      augment=pipeline.ImageAugment.from_config(cfg, "imagenet"))
  _describe(cfg, parts, sum(n for _, _, n in extras), stats,
            f"streamed ({gib:.1f} GiB at {size} px is above data.max_in_memory_gib="
            f"{cfg['max_in_memory_gib']})")
  data_spec = spec(cfg)
  return base.Dataset(
      source=source, eval_x=None, eval_y=None, num_classes=data_spec.num_classes,
      input_shape=data_spec.input_shape,
      extras={"splits": parts, "normalization": stats, "held_in_memory": False},
      eval_stream=imagenet_stream.held_out_batches(data_dir, parts["validation"],
                                                   len(labels), size, name, split, mean_std),
      test_stream=(imagenet_stream.official_validation_batches(
          data_dir, size, name, cfg["test_split"], mean_std) if cfg["test_split"] else None))


def _check_labels(cfg: Mapping[str, Any], labels: np.ndarray) -> None:
  if labels.size and labels.max() >= int(cfg["num_classes"]):
    raise errors.ConfigError(f"{cfg['tfds_name']} has labels up to {labels.max()}, more "
                             f"than data.num_classes={cfg['num_classes']}; set it to "
                             f"{labels.max() + 1}")


def _describe(cfg, parts, extra: int, stats: dict, how: str) -> None:
  print(f"[data] {cfg.get('tfds_name') or cfg['labeled_dir']}: {len(parts['labeled'])} "
        f"labeled, {len(parts['validation'])} validation, "
        f"{len(parts['unlabeled']) + extra} unlabeled images at {cfg['image_size']} px, "
        f"{how}; normalized by {'the computed' if stats['computed'] else 'the given'} mean "
        f"{stats['mean']} and std {stats['std']}", flush=True)


def _in_memory(cfg: Mapping[str, Any], seed: int) -> base.Dataset:
  """Arrays in host memory, augmented by the CIFAR pipeline."""
  from mpl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  if cfg["name"] == "image_folder":  # folders are not streamed: refuse before decoding
    files = len(_image_files(cfg["labeled_dir"])) + len(_image_files(cfg["unlabeled_dir"]))
    if _gib(files, cfg) > float(cfg["max_in_memory_gib"]):
      raise errors.ConfigError(
          f"the images take {_gib(files, cfg):.1f} GiB at data.image_size="
          f"{cfg['image_size']}, above data.max_in_memory_gib={cfg['max_in_memory_gib']}; "
          "raise it if the host has the memory, or lower data.image_size (folders are not "
          "streamed)")
  arrays = _load(cfg)
  parts = make_splits(arrays["train_y"], cfg)
  x, y = arrays["train_x"], arrays["train_y"]
  unlabeled_x = np.concatenate([x[parts["unlabeled"]], arrays["extra_x"]])
  unlabeled_y = np.concatenate([y[parts["unlabeled"]],
                                np.full(len(arrays["extra_x"]), -1, np.int32)])
  gib = _gib(len(x) + len(arrays["extra_x"]), cfg)
  if not len(unlabeled_x):
    raise errors.ConfigError("no unlabeled images are left: lower data.labeled_per_class or "
                             "data.validation_per_class, or add data.unlabeled_extra")
  stats = normalization(cfg, np.concatenate([x[parts["labeled"]], unlabeled_x]))
  mean_std = (tuple(stats["mean"]), tuple(stats["std"]))
  data_spec = spec(cfg)
  _describe(cfg, parts, len(arrays["extra_x"]), stats, f"{gib:.2f} GiB held in host memory")
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
      extras={"splits": parts, "normalization": stats, "held_in_memory": True},
      test_x=None if test_x is None else pipeline.normalize(test_x, mean_std=mean_std),
      test_y=arrays["test_y"])
