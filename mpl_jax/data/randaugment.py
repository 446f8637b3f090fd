"""RandAugment (Cubuk et al. 2020) with the semantics of the official MPL code.

Per image: one probability p ~ U(0.2, 0.8); then `num_layers` times, one of the 15 ops is
drawn uniformly and applied with probability p. Every op uses the same fixed magnitude M
on a 0..10 scale that extrapolates beyond 10 (MPL uses M = 16 on CIFAR, 17 on ImageNet):

  op                    argument at magnitude M          at M = 16, 32x32 image
  Rotate                +-3 M degrees                    +-48 degrees
  ShearX / ShearY       +-0.03 M                         +-0.48
  TranslateX / Y        +-M / 10 * translate_const px    +-6.4 px (const = size // 8)
  Color, Contrast,      factor 0.1 + 0.18 M              2.98
    Brightness, Sharpness
  Posterize             keep int(0.4 M) bits (max 8)     6 bits
  Solarize              threshold int(25.6 M) mod 256    153
  Cutout                side 2 int(M / 10 * cutout_const)  12 x 12 (const = size // 8)
  AutoContrast, Equalize, Invert: no argument.

Signs of signed arguments are random (1/2 each). Pixels moved into view and cutout
squares get the fill value 128. Geometric ops use nearest-neighbour sampling (as the
official code), so a 6.4 px translation moves content by round(6.4) = 6 px.

Where the official code deviates from the PIL operations it means to copy, this module
follows PIL: blends clip to 0..255 (the official code casts out-of-range floats to
uint8 without saturating), and Contrast blends towards the mean grey level (the official
code uses pixel count / 256). The Solarize threshold keeps the official wrap-around (its
uint8 cast of int(25.6 M) gives 153 at M = 16), since that is what the published models
were trained with; without it Solarize would do nothing for M >= 10.

All ops take and return uint8 HWC (3-channel) images and work eagerly and in `tf.data`
(graph mode). Randomness is stateless, from a shape-[2] integer seed.
"""

import dataclasses
import math
from typing import Callable, Sequence

import tensorflow as tf

from mpl_jax.data import augment

MAX_LEVEL = 10.0
FILL_VALUE = augment.FILL_VALUE


# ----------------------------------------------------------------------------------
# Magnitude -> argument (the official level-to-argument rules).


def rotate_degrees(magnitude: float) -> float:
  """Rotation angle before the random sign: 30 degrees at M = 10."""
  return magnitude / MAX_LEVEL * 30.0


def shear_amount(magnitude: float) -> float:
  """Shear coefficient before the random sign: 0.3 at M = 10."""
  return magnitude / MAX_LEVEL * 0.3


def translate_pixels(magnitude: float, translate_const):
  """Translation in pixels before the random sign: translate_const at M = 10 (a float
  tensor where translate_const is one)."""
  return magnitude / MAX_LEVEL * translate_const


def enhance_factor(magnitude: float) -> float:
  """Blend factor of Color/Contrast/Brightness/Sharpness: 0.1 + 1.8 M / 10."""
  return magnitude / MAX_LEVEL * 1.8 + 0.1


def posterize_bits(magnitude: float) -> int:
  """Bits Posterize keeps: int(4 M / 10), at most 8 (higher M keeps more bits)."""
  return min(8, max(0, int(magnitude / MAX_LEVEL * 4)))


def solarize_threshold(magnitude: float) -> int:
  """Pixels at or above this are inverted: int(256 M / 10), wrapped to uint8 as the
  official code's cast does (409 -> 153 at M = 16)."""
  return int(magnitude / MAX_LEVEL * 256) % 256


def cutout_size(magnitude: float, cutout_const) -> tf.Tensor:
  """Side of the RandAugment cutout square, 2 * int(M / 10 * cutout_const): an int32
  scalar tensor (cutout_const may be one)."""
  return 2 * tf.cast(magnitude / MAX_LEVEL * cutout_const, tf.int32)


# ----------------------------------------------------------------------------------
# The operations, with explicit arguments.


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
  """degenerate + factor * (image - degenerate), clipped to 0..255 (PIL ImageEnhance)."""
  degenerate = tf.cast(degenerate, tf.float32)
  image = tf.cast(image, tf.float32)
  return augment.to_uint8(degenerate + factor * (image - degenerate))


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  """ITU-R 601-2 luma (PIL's "L" mode), rounded to uint8, shape [H, W, 1]."""
  weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
  gray = tf.reduce_sum(tf.cast(image, tf.float32) * weights, axis=-1, keepdims=True)
  return augment.to_uint8(gray)


def autocontrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel linearly so its minimum maps to 0 and its maximum to 255."""
  pixels = tf.cast(image, tf.float32)
  low = tf.reduce_min(pixels, axis=(0, 1))
  high = tf.reduce_max(pixels, axis=(0, 1))
  scale = 255.0 / tf.maximum(high - low, 1.0)
  stretched = augment.to_uint8((pixels - low) * scale)
  return tf.where(high > low, stretched, image)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Histogram equalization per channel, with PIL's lookup table."""
  shape = tf.shape(image)
  channels = tf.reshape(tf.transpose(tf.cast(image, tf.int32), [2, 0, 1]),
                        [shape[2], -1])  # [C, H*W]
  hist = tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)  # [C, 256]
  count_of_max = tf.gather(hist, tf.reduce_max(channels, axis=1), batch_dims=1)
  # PIL: step = (number of pixels - count of the last non-empty bin) // 255.
  step = (shape[0] * shape[1] - count_of_max) // 255  # [C]
  safe_step = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(hist, axis=1, exclusive=True) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(lut, 0, 255)
  equalized = tf.gather(lut, channels, batch_dims=1)
  equalized = tf.where((step > 0)[:, None], equalized, channels)
  out = tf.transpose(tf.reshape(equalized, [shape[2], shape[0], shape[1]]), [1, 2, 0])
  out = tf.cast(out, tf.uint8)
  out.set_shape(image.shape)
  return out


def invert(image: tf.Tensor) -> tf.Tensor:
  """x -> 255 - x."""
  return tf.cast(255, image.dtype) - image


def posterize(image: tf.Tensor, bits: int) -> tf.Tensor:
  """Keeps the `bits` most significant bits of every pixel (0 <= bits <= 8)."""
  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image: tf.Tensor, threshold) -> tf.Tensor:
  """Inverts pixels >= threshold; keeps the rest."""
  return tf.where(tf.cast(image, tf.int32) < tf.cast(threshold, tf.int32), image,
                  invert(image))


def color(image: tf.Tensor, factor) -> tf.Tensor:
  """Saturation (PIL Color): blend with the grey image; 0 is grey, 1 the original."""
  return _blend(tf.image.grayscale_to_rgb(_grayscale(image)), image, factor)


def contrast(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL Contrast: blend with a flat image at the mean grey level."""
  mean = tf.round(tf.reduce_mean(tf.cast(_grayscale(image), tf.float32)))
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL Brightness: blend with black, i.e. scale by `factor`."""
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor) -> tf.Tensor:
  """PIL Sharpness: blend with a smoothed copy (3x3 kernel, centre 5, others 1, / 13;
  border pixels stay unsmoothed)."""
  planes = tf.transpose(tf.cast(image, tf.float32), [2, 0, 1])[..., None]  # [C, H, W, 1]
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  smooth = tf.nn.conv2d(planes, kernel[:, :, None, None], strides=1, padding="VALID")
  smooth = tf.transpose(smooth[..., 0], [1, 2, 0])  # [H-2, W-2, C]
  smooth = augment.to_uint8(smooth)
  interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
  return _blend(degenerate, image, factor)


def _transform(image: tf.Tensor, transform: Sequence, fill: int) -> tf.Tensor:
  """Projective transform, nearest neighbour; output (x, y) samples input at
  ((a0 x + a1 y + a2), (b0 x + b1 y + b2)) for transform [a0, a1, a2, b0, b1, b2, 0, 0]."""
  transform = tf.cast(tf.stack(transform), tf.float32)[None]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=tf.cast(fill, tf.float32), interpolation="NEAREST",
      fill_mode="CONSTANT")[0]
  out.set_shape(image.shape)
  return out


def rotate(image: tf.Tensor, degrees, fill: int = FILL_VALUE) -> tf.Tensor:
  """Rotates about the image centre, counter-clockwise as displayed for degrees > 0."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  shape = tf.cast(tf.shape(image), tf.float32)
  center_y, center_x = (shape[0] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0
  # Output pixel (x, y) comes from the input point rotated by -degrees about the centre.
  return _transform(image, [cos, -sin, center_x - cos * center_x + sin * center_y,
                            sin, cos, center_y - sin * center_x - cos * center_y,
                            0.0, 0.0], fill)


def shear_x(image: tf.Tensor, shear, fill: int = FILL_VALUE) -> tf.Tensor:
  """Horizontal shear about the top-left corner: out[y, x] = in[y, x + shear * y]."""
  return _transform(image, [1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], fill)


def shear_y(image: tf.Tensor, shear, fill: int = FILL_VALUE) -> tf.Tensor:
  """Vertical shear about the top-left corner: out[y, x] = in[y + shear * x, x]."""
  return _transform(image, [1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0], fill)


def translate_x(image: tf.Tensor, pixels, fill: int = FILL_VALUE) -> tf.Tensor:
  """out[y, x] = in[y, x + pixels] (content moves left for pixels > 0)."""
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], fill)


def translate_y(image: tf.Tensor, pixels, fill: int = FILL_VALUE) -> tf.Tensor:
  """out[y, x] = in[y + pixels, x] (content moves up for pixels > 0)."""
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], fill)


# ----------------------------------------------------------------------------------
# The registry: (image, magnitude, seed, settings) -> image.


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the ops need besides the magnitude.

  Attributes:
    fill: value of pixels moved into view and of the cutout square.
    translate_const: pixels of translation at M = 10; None means min(H, W) // 8, the
      official CIFAR value (4 px at 32x32). The official ImageNet pipeline kept the
      AutoAugment default of 100.
    cutout_const: half the cutout side at M = 10; None means min(H, W) // 8 (official
      CIFAR). The official ImageNet pipeline kept the AutoAugment default of 40.
  """

  fill: int = FILL_VALUE
  translate_const: float | None = None
  cutout_const: float | None = None


OpFn = Callable[[tf.Tensor, float, tf.Tensor, Settings], tf.Tensor]


def _random_sign(value, seed: tf.Tensor):
  negate = tf.random.stateless_uniform([], seed) < 0.5
  return tf.where(negate, -tf.cast(value, tf.float32), tf.cast(value, tf.float32))


def _default_const(image: tf.Tensor, const: float | None) -> tf.Tensor:
  if const is not None:
    return tf.constant(float(const))
  shape = tf.shape(image)
  return tf.cast(tf.minimum(shape[0], shape[1]) // 8, tf.float32)


def _translate_op(translate_fn):
  def op(image, magnitude, seed, settings):
    const = _default_const(image, settings.translate_const)
    pixels = _random_sign(translate_pixels(magnitude, const), seed)
    return translate_fn(image, pixels, settings.fill)
  return op


def _cutout_op(image, magnitude, seed, settings):
  size = cutout_size(magnitude, _default_const(image, settings.cutout_const))
  return augment.cutout(image, size, seed, settings.fill)


OPS: dict[str, OpFn] = {
    "AutoContrast": lambda image, m, seed, s: autocontrast(image),
    "Equalize": lambda image, m, seed, s: equalize(image),
    "Invert": lambda image, m, seed, s: invert(image),
    "Rotate": lambda image, m, seed, s: rotate(
        image, _random_sign(rotate_degrees(m), seed), s.fill),
    "Posterize": lambda image, m, seed, s: posterize(image, posterize_bits(m)),
    "Solarize": lambda image, m, seed, s: solarize(image, solarize_threshold(m)),
    "Color": lambda image, m, seed, s: color(image, enhance_factor(m)),
    "Contrast": lambda image, m, seed, s: contrast(image, enhance_factor(m)),
    "Brightness": lambda image, m, seed, s: brightness(image, enhance_factor(m)),
    "Sharpness": lambda image, m, seed, s: sharpness(image, enhance_factor(m)),
    "ShearX": lambda image, m, seed, s: shear_x(
        image, _random_sign(shear_amount(m), seed), s.fill),
    "ShearY": lambda image, m, seed, s: shear_y(
        image, _random_sign(shear_amount(m), seed), s.fill),
    "TranslateX": _translate_op(translate_x),
    "TranslateY": _translate_op(translate_y),
    "Cutout": _cutout_op,
}


def randaugment(image: tf.Tensor, num_layers: int, magnitude: float, seed: tf.Tensor,
                settings: Settings = Settings(),
                ops: Sequence[str] | None = None) -> tf.Tensor:
  """Applies RandAugment to one uint8 [H, W, 3] image.

  Args:
    image: uint8 [H, W, 3].
    num_layers: N, how many ops are drawn in sequence (MPL: 2).
    magnitude: M, shared by all ops, on the 0..10 scale (MPL: 16 CIFAR, 17 ImageNet).
    seed: shape-[2] integer tensor; the same seed gives the same output.
    settings: fill value and translate/cutout constants.
    ops: names of the ops to draw from (default: all 15 in OPS).

  Returns:
    The augmented uint8 image, same shape.
  """
  names = list(OPS) if ops is None else list(ops)
  unknown = sorted(set(names) - set(OPS))
  if unknown or not names:
    raise ValueError(f"RandAugment ops {unknown or names} are invalid; valid: {list(OPS)}")
  if num_layers < 0 or magnitude < 0:
    raise ValueError(f"num_layers={num_layers} and magnitude={magnitude} must be >= 0")
  image = tf.convert_to_tensor(image)
  if image.dtype != tf.uint8:
    raise ValueError(f"RandAugment takes uint8 images, got {image.dtype}")
  static_shape = image.shape
  seeds = tf.random.experimental.stateless_split(seed, num_layers + 1)
  probability = tf.random.stateless_uniform([], seeds[0], 0.2, 0.8)
  for layer in range(num_layers):
    choose_seed, apply_seed, op_seed = tf.unstack(
        tf.random.experimental.stateless_split(seeds[layer + 1], 3))
    index = tf.random.stateless_uniform([], choose_seed, 0, len(names), dtype=tf.int32)
    apply = tf.random.stateless_uniform([], apply_seed) < probability
    branches = [
        (lambda op=OPS[name], img=image, s=op_seed: op(img, magnitude, s, settings))
        for name in names]
    image = tf.cond(apply, lambda b=branches: tf.switch_case(index, b),
                    lambda img=image: img)
  image.set_shape(static_shape)
  return image
