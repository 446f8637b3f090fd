"""Tests of RandAugment: each op at M = 16, eager and inside tf.data, and the policy."""

import math

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps
import pytest
import tensorflow as tf

from mpl_jax.data import randaugment as ra

M = 16
SIZE = 32
FILL = 128


def _run(fn, image):
  """Runs `fn` eagerly and in a tf.data map; both must agree and keep dtype and shape."""
  image = tf.constant(image)
  eager = fn(image)
  dataset = tf.data.Dataset.from_tensors(image).map(fn)
  assert dataset.element_spec.shape == image.shape
  assert dataset.element_spec.dtype == tf.uint8
  graph = next(iter(dataset)).numpy()
  assert eager.dtype == tf.uint8 and tuple(eager.shape) == tuple(image.shape)
  np.testing.assert_array_equal(eager.numpy(), graph)
  return eager.numpy()


def _eager(fn, image):
  return fn(tf.constant(image)).numpy()


def _op(name, seed=(1, 2)):
  return lambda x: ra.OPS[name](x, M, tf.constant(seed, tf.int32), ra.Settings())


def _random_image(seed=0, shape=(SIZE, SIZE, 3)):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _coordinate_image():
  """Channel 0 encodes the row, channel 1 the column (8 * i + 1, never 128), channel 2
  is 0, so filled pixels (128, 128, 128) cannot be confused with moved ones."""
  rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
  return np.stack([8 * rows + 1, 8 * cols + 1, np.zeros_like(rows)], -1).astype(np.uint8)


def _sample(image, y_in, x_in):
  """Nearest-neighbour lookup (round half away from zero) with fill outside."""
  y_idx = (np.sign(y_in) * np.floor(np.abs(y_in) + 0.5)).astype(int)
  x_idx = (np.sign(x_in) * np.floor(np.abs(x_in) + 0.5)).astype(int)
  inside = (y_idx >= 0) & (y_idx < image.shape[0]) & (x_idx >= 0) & (x_idx < image.shape[1])
  out = np.full_like(image, FILL)
  out[inside] = image[y_idx[inside], x_idx[inside]]
  return out


def _grid():
  return np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64),
                     indexing="ij")


def _signed_results(name, expected_by_sign, image, seeds=range(12)):
  """Each seed's output must equal the expectation for + or - the magnitude; both occur."""
  signs = set()
  for seed in seeds:
    # The first seed also runs inside tf.data; the rest only eagerly (faster).
    out = (_run if seed == seeds[0] else _eager)(_op(name, (seed, 5)), image)
    matches = [s for s, expected in expected_by_sign.items()
               if np.array_equal(out, expected)]
    assert matches, f"{name} seed {seed} matches neither sign"
    signs.update(matches)
  assert signs == set(expected_by_sign), f"{name} drew only signs {signs}"


def test_registry_holds_the_15_official_ops():
  assert list(ra.OPS) == [
      "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
      "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
      "TranslateY", "Cutout"]


def test_magnitude_arguments():
  assert ra.rotate_degrees(16) == pytest.approx(48.0)
  assert ra.shear_amount(16) == pytest.approx(0.48)
  assert ra.translate_pixels(16, SIZE // 8) == pytest.approx(6.4)
  assert ra.enhance_factor(16) == pytest.approx(2.98)
  assert ra.posterize_bits(16) == 6
  assert ra.solarize_threshold(16) == 153  # int(409.6) = 409, wrapped to uint8
  assert ra.cutout_size(16, SIZE // 8) == 12
  # The 0..10 scale: M = 10 is the "full" argument of each op.
  assert ra.rotate_degrees(10) == pytest.approx(30.0)
  assert ra.enhance_factor(10) == pytest.approx(1.9)
  assert ra.posterize_bits(10) == 4 and ra.posterize_bits(30) == 8
  assert ra.solarize_threshold(5) == 128


def test_invert():
  image = _random_image()
  np.testing.assert_array_equal(_run(_op("Invert"), image), 255 - image)


def test_posterize_keeps_six_bits():
  image = _random_image()
  out = _run(_op("Posterize"), image)
  np.testing.assert_array_equal(out, image & 0b11111100)
  np.testing.assert_array_equal(out, np.asarray(ImageOps.posterize(Image.fromarray(image), 6)))


def test_solarize_inverts_pixels_at_or_above_threshold():
  image = _random_image()
  out = _run(_op("Solarize"), image)
  np.testing.assert_array_equal(out, np.where(image < 153, image, 255 - image))
  np.testing.assert_array_equal(
      out, np.asarray(ImageOps.solarize(Image.fromarray(image), threshold=153)))
  assert (out != image).mean() > 0.3  # the op is not the identity at M = 16


def test_autocontrast_stretches_each_channel_to_full_range():
  rng = np.random.default_rng(1)
  image = np.stack([rng.integers(50, 101, (SIZE, SIZE)), rng.integers(10, 201, (SIZE, SIZE)),
                    np.full((SIZE, SIZE), 77)], -1).astype(np.uint8)
  image[0, 0, :2] = (50, 10)
  image[0, 1, :2] = (100, 200)
  out = _run(_op("AutoContrast"), image)
  assert (out[..., 0].min(), out[..., 0].max()) == (0, 255)
  assert (out[..., 1].min(), out[..., 1].max()) == (0, 255)
  np.testing.assert_array_equal(out[..., 2], 77)  # a flat channel is left alone
  np.testing.assert_allclose(out[..., 0], (image[..., 0] - 50.0) * 255 / 50, atol=0.5)
  pil = np.asarray(ImageOps.autocontrast(Image.fromarray(image)))
  assert np.abs(out.astype(int) - pil).max() <= 1


def test_equalize_matches_pil():
  # Channel 0: 32 values (100..131), 32 pixels each; channel 1: random; channel 2: flat.
  values = np.repeat(np.arange(100, 132), 32).reshape(SIZE, SIZE)
  image = np.stack([np.random.default_rng(2).permutation(values.ravel()).reshape(SIZE, SIZE),
                    _random_image(3)[..., 0], np.full((SIZE, SIZE), 9)],
                   -1).astype(np.uint8)
  out = _run(_op("Equalize"), image)
  # PIL's rule: step = (1024 - 32) // 255 = 3; value i-th -> (32 i + 1) // 3, clipped.
  lut = {100 + i: min(255, (32 * i + 1) // 3) for i in range(32)}
  np.testing.assert_array_equal(out[..., 0], np.vectorize(lut.get)(image[..., 0]))
  np.testing.assert_array_equal(out[..., 2], 9)
  np.testing.assert_array_equal(out, np.asarray(ImageOps.equalize(Image.fromarray(image))))


def test_brightness_scales_by_2_98():
  image = _random_image()
  out = _run(_op("Brightness"), image)
  np.testing.assert_array_equal(out, np.clip(np.round(2.98 * image), 0, 255))
  pil = np.asarray(ImageEnhance.Brightness(Image.fromarray(image)).enhance(2.98))
  assert np.abs(out.astype(int) - pil).max() <= 1


def test_color_extrapolates_from_grey_by_2_98():
  image = np.zeros((SIZE, SIZE, 3), np.uint8)
  image[:16] = (100, 50, 50)  # grey level round(29.9 + 29.35 + 5.7) = 65
  image[16:] = (90, 90, 90)  # already grey: unchanged
  out = _run(_op("Color"), image)
  np.testing.assert_array_equal(out[0, 0], (169, 20, 20))  # 65 + 2.98 * (100 - 65), ...
  np.testing.assert_array_equal(out[20, 5], (90, 90, 90))
  rand = _random_image(4)
  pil = np.asarray(ImageEnhance.Color(Image.fromarray(rand)).enhance(2.98))
  assert np.abs(_run(_op("Color"), rand).astype(int) - pil).max() <= 3


def test_contrast_extrapolates_from_mean_by_2_98():
  image = np.full((SIZE, SIZE, 3), 100, np.uint8)
  image[:, 16:] = 120  # mean grey level 110
  out = _run(_op("Contrast"), image)
  np.testing.assert_array_equal(out[:, :16], 80)  # 110 + 2.98 * (100 - 110) = 80.2
  np.testing.assert_array_equal(out[:, 16:], 140)  # 110 + 2.98 * 10 = 139.8
  rand = _random_image(5)
  pil = np.asarray(ImageEnhance.Contrast(Image.fromarray(rand)).enhance(2.98))
  assert np.abs(_run(_op("Contrast"), rand).astype(int) - pil).max() <= 3


def test_sharpness_extrapolates_from_smoothed_by_2_98():
  image = np.full((SIZE, SIZE, 3), 100, np.uint8)
  image[16, 16] = 200
  image[0, 5] = 200  # on the border: never smoothed, so unchanged
  out = _run(_op("Sharpness"), image)
  # Centre: smooth (8 * 100 + 5 * 200) / 13 = 138; 138 + 2.98 * 62 clips to 255.
  np.testing.assert_array_equal(out[16, 16], 255)
  # Neighbour: smooth (7 * 100 + 200 + 5 * 100) / 13 = 108; 108 + 2.98 * (-8) = 84.2.
  np.testing.assert_array_equal(out[15, 16], 84)
  np.testing.assert_array_equal(out[16, 17], 84)
  np.testing.assert_array_equal(out[0, 5], 200)
  np.testing.assert_array_equal(out[1, 5], 84)  # interior neighbour of the border pixel
  np.testing.assert_array_equal(out[25, 25], 100)
  rand = _random_image(6)
  pil = np.asarray(ImageEnhance.Sharpness(Image.fromarray(rand)).enhance(2.98))
  assert np.abs(_run(_op("Sharpness"), rand).astype(int) - pil).max() <= 3


def _rotation_reference(image, degrees):
  rows, cols = _grid()
  center = (SIZE - 1) / 2
  angle = math.radians(degrees)
  dx, dy = cols - center, rows - center
  x_in = math.cos(angle) * dx - math.sin(angle) * dy + center
  y_in = math.sin(angle) * dx + math.cos(angle) * dy + center
  return _sample(image, y_in, x_in)


def test_rotate_direction_is_counter_clockwise():
  image = _random_image()
  out = _run(lambda x: ra.rotate(x, 90.0), image)
  np.testing.assert_array_equal(out, np.rot90(image))  # no fill: exact quarter turn


def test_rotate_by_48_degrees():
  image = _coordinate_image()
  plus, minus = _rotation_reference(image, 48), _rotation_reference(image, -48)
  for expected, degrees in ((plus, 48.0), (minus, -48.0)):
    out = _run(lambda x, d=degrees: ra.rotate(x, d), image)
    # Nearest-neighbour ties may round either way in float32; all else must match.
    assert (out == expected).all(-1).mean() > 0.99
    for corner in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
      np.testing.assert_array_equal(out[corner], (FILL,) * 3)
    # Centre pixel (15, 15) comes from input (15, 16) at +48 degrees.
    np.testing.assert_array_equal(out[15, 15], expected[15, 15])
  np.testing.assert_array_equal(plus[15, 15], image[15, 16])
  assert (plus != _rotation_reference(image, 45)).any(-1).mean() > 0.1  # angle matters
  _signed_results("Rotate", {1: _run(lambda x: ra.rotate(x, 48.0), image),
                             -1: _run(lambda x: ra.rotate(x, -48.0), image)}, image)


@pytest.mark.parametrize("name,axis", [("ShearX", 1), ("ShearY", 0)])
def test_shear_by_0_48(name, axis):
  image = _coordinate_image()
  rows, cols = _grid()
  expected = {}
  for sign in (1, -1):
    if axis == 1:
      expected[sign] = _sample(image, rows, cols + sign * 0.48 * rows)
    else:
      expected[sign] = _sample(image, rows + sign * 0.48 * cols, cols)
  # The first row (ShearX) / column (ShearY) does not move; the last moves by 15 px.
  edge = (0, slice(None)) if axis == 1 else (slice(None), 0)
  np.testing.assert_array_equal(expected[1][edge], image[edge])
  _signed_results(name, expected, image)


@pytest.mark.parametrize("name,axis", [("TranslateX", 1), ("TranslateY", 0)])
def test_translate_by_6_4_pixels(name, axis):
  image = _coordinate_image()
  expected = {}
  for sign in (1, -1):
    # Nearest neighbour: a shift of 6.4 px moves content by 6 whole pixels.
    shifted = np.full_like(image, FILL)
    if sign > 0:
      src = image[:, 6:] if axis == 1 else image[6:]
      if axis == 1:
        shifted[:, :SIZE - 6] = src
      else:
        shifted[:SIZE - 6] = src
    else:
      if axis == 1:
        shifted[:, 6:] = image[:, :SIZE - 6]
      else:
        shifted[6:] = image[:SIZE - 6]
    expected[sign] = shifted
  _signed_results(name, expected, image)


def _filled_box(out, image):
  changed = (out != image).any(-1)
  rows, cols = np.nonzero(changed)
  assert (out[changed] == FILL).all()
  box = out[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  assert (box == FILL).all(), "changed pixels must form one filled rectangle"
  return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_cutout_is_a_12_by_12_square_of_128():
  image = _coordinate_image()
  sizes = [_filled_box((_eager if seed else _run)(_op("Cutout", (seed, 9)), image), image)
           for seed in range(30)]
  assert all(h <= 12 and w <= 12 for h, w in sizes)
  assert (12, 12) in sizes
  assert len(set(sizes)) > 1  # centres near a border clip the square


def test_randaugment_is_deterministic_per_seed_and_graph_safe():
  image = _random_image(7)
  for seed in range(2):  # tracing all 15 branches per layer takes a few seconds
    fn = lambda x, s=seed: ra.randaugment(x, 2, M, tf.constant([s, 11]))
    np.testing.assert_array_equal(_run(fn, image), fn(tf.constant(image)).numpy())
  outputs = [ra.randaugment(tf.constant(image), 2, M, tf.constant([seed, 11])).numpy()
             for seed in range(10)]
  assert len({o.tobytes() for o in outputs}) > 5
  np.testing.assert_array_equal(
      ra.randaugment(tf.constant(image), 0, M, tf.constant([0, 1])).numpy(), image)


def test_randaugment_applies_each_layer_with_probability_between_0_2_and_0_8():
  image = _random_image(8)
  applied = []
  for seed in range(300):
    out = ra.randaugment(tf.constant(image), 1, M, tf.constant([seed, 3]),
                         ops=["Invert"]).numpy()
    assert np.array_equal(out, image) or np.array_equal(out, 255 - image)
    applied.append(not np.array_equal(out, image))
  # E[p] = 0.5 for p ~ U(0.2, 0.8); 300 draws give a std of about 0.03.
  assert 0.4 < np.mean(applied) < 0.6


def test_randaugment_draws_every_op():
  # One layer per image; recognise which op produced each output.
  image = np.random.default_rng(9).integers(20, 231, (SIZE, SIZE, 3), dtype=np.uint8)
  x = tf.constant(image)
  candidates = {name: [ra.OPS[name](x, M, tf.constant([0, 0]), ra.Settings()).numpy()]
                for name in ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize",
                             "Color", "Contrast", "Brightness", "Sharpness")}
  for name, fn, amount in (("Rotate", ra.rotate, 48.0), ("ShearX", ra.shear_x, 0.48),
                           ("ShearY", ra.shear_y, 0.48), ("TranslateX", ra.translate_x, 6.4),
                           ("TranslateY", ra.translate_y, 6.4)):
    candidates[name] = [fn(x, amount).numpy(), fn(x, -amount).numpy()]
  seen = set()
  for seed in range(300):
    out = ra.randaugment(x, 1, M, tf.constant([seed, 4])).numpy()
    if np.array_equal(out, image):
      continue
    names = [n for n, outs in candidates.items() if any(np.array_equal(out, o) for o in outs)]
    if not names:
      h, w = _filled_box(out, image)
      assert h <= 12 and w <= 12
      names = ["Cutout"]
    assert len(names) == 1, names
    seen.add(names[0])
  assert seen == set(ra.OPS)


def test_randaugment_rejects_bad_arguments():
  image = tf.constant(_random_image())
  with pytest.raises(ValueError, match="valid"):
    ra.randaugment(image, 2, M, tf.constant([0, 0]), ops=["Rotate", "Blur"])
  with pytest.raises(ValueError, match="uint8"):
    ra.randaugment(tf.cast(image, tf.float32), 2, M, tf.constant([0, 0]))
  with pytest.raises(ValueError, match=">= 0"):
    ra.randaugment(image, -1, M, tf.constant([0, 0]))
