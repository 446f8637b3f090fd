"""Image augmentations of the MPL input pipelines, as TensorFlow ops on uint8 HWC images.

Each function works eagerly and inside `tf.data` maps (graph mode). Random ones take a
`seed`, a shape-[2] integer tensor, and use stateless ops, so a pipeline that derives
seeds from (run seed, example index, epoch) is reproducible and resumable.

The official MPL CIFAR pipeline (facts from its data code): the weak view is a random
horizontal flip, then padding by image_size // 8 = 4 pixels filled with 128 and a random
crop back to 32x32; the strong view adds RandAugment and a cutout of side
image_size // 2 = 16 (fill 128). ImageNet uses an Inception-style crop (area 8%-100%,
aspect 3/4-4/3, bicubic resize) and a flip for training, and a center crop of
size / (size + 32) of the shorter side for evaluation.
"""

from typing import Sequence

import tensorflow as tf

# Value of pixels that augmentations invent (padding, cutout, areas moved into view).
FILL_VALUE = 128
PAD_MODES = ("constant", "reflect")


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """Rounds and clips a float image to uint8."""
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Flips left-right with probability 1/2."""
  return tf.image.stateless_random_flip_left_right(image, seed)


def pad_and_crop(image: tf.Tensor, pad: int, seed: tf.Tensor, mode: str = "constant",
                 fill: int = FILL_VALUE) -> tf.Tensor:
  """Pads `pad` pixels on each side and crops a random window of the original size.

  Args:
    image: uint8 [H, W, C].
    pad: pixels added on each border (official CIFAR: image_size // 8 = 4).
    seed: shape-[2] integer tensor.
    mode: "constant" (pad with `fill`, as the official code) or "reflect" (mirror the
      border, without repeating the edge pixel; `pad` must be below H and W).
    fill: padding value for mode "constant".

  Returns:
    uint8 image of the input's shape, shifted by up to `pad` pixels each way.
  """
  if mode not in PAD_MODES:
    raise ValueError(f"pad mode {mode!r} is unknown; valid: {list(PAD_MODES)}")
  paddings = [[pad, pad], [pad, pad], [0, 0]]
  if mode == "reflect":
    padded = tf.pad(image, paddings, mode="REFLECT")
  else:
    padded = tf.pad(image, paddings, constant_values=tf.cast(fill, image.dtype))
  cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed)
  cropped.set_shape(image.shape)
  return cropped


def cutout_at(image: tf.Tensor, center_y: tf.Tensor, center_x: tf.Tensor, size,
              fill: int = FILL_VALUE) -> tf.Tensor:
  """Fills the size x size square whose top-left is center - size // 2, clipped to the image."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  size = tf.cast(size, tf.int32)
  top = tf.cast(center_y, tf.int32) - size // 2
  left = tf.cast(center_x, tf.int32) - size // 2
  rows = tf.range(height)
  cols = tf.range(width)
  in_rows = (rows >= top) & (rows < top + size)
  in_cols = (cols >= left) & (cols < left + size)
  mask = in_rows[:, None, None] & in_cols[None, :, None]
  return tf.where(mask, tf.cast(fill, image.dtype), image)


def cutout(image: tf.Tensor, size, seed: tf.Tensor, fill: int = FILL_VALUE) -> tf.Tensor:
  """Cutout (DeVries & Taylor 2017): a size x size square of `fill` at a random centre.

  The centre is uniform over the whole image, so the square is clipped at the borders
  (as in the official code); it is complete when the centre lies size // 2 or more
  from the top/left and (size + 1) // 2 or more from the bottom/right.
  """
  center_seeds = tf.random.experimental.stateless_split(seed, 2)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  center_y = tf.random.stateless_uniform([], center_seeds[0], 0, height, dtype=tf.int32)
  center_x = tf.random.stateless_uniform([], center_seeds[1], 0, width, dtype=tf.int32)
  return cutout_at(image, center_y, center_x, size, fill)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  resized = tf.image.resize(image, [size, size], method="bicubic")
  return to_uint8(resized)


def center_crop(image: tf.Tensor, size: int, crop_padding: int = 32) -> tf.Tensor:
  """ImageNet evaluation crop: the central size/(size+crop_padding) of the shorter side,
  resized (bicubic) to size x size."""
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  crop = tf.cast(size / (size + crop_padding) *
                 tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  top = (height - crop + 1) // 2
  left = (width - crop + 1) // 2
  cropped = image[top:top + crop, left:left + crop]
  out = _resize(cropped, size)
  out.set_shape([size, size, image.shape[-1]])
  return out


def inception_crop(image: tf.Tensor, size: int, seed: tf.Tensor,
                   area_range: Sequence[float] = (0.08, 1.0),
                   aspect_ratio_range: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
                   min_object_covered: float = 0.1, max_attempts: int = 10) -> tf.Tensor:
  """Inception-style random crop: random area fraction and aspect ratio, resized.

  When no window is found in `max_attempts` tries the sampler returns the whole image;
  then, as in the official code, the evaluation center crop is used instead.
  """
  shape = tf.shape(image)
  whole = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=whole, seed=seed, min_object_covered=min_object_covered,
      aspect_ratio_range=aspect_ratio_range, area_range=area_range,
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  failed = tf.reduce_all(tf.equal(crop_size[:2], shape[:2]))
  out = tf.cond(failed, lambda: center_crop(image, size),
                lambda: _resize(tf.slice(image, begin, crop_size), size))
  out.set_shape([size, size, image.shape[-1]])
  return out
