"""Tests of the basic augmentations: flip, pad-and-crop, cutout, Inception and center crop."""

import numpy as np
import pytest
import tensorflow as tf

from mpl_jax.data import augment

SIZE = 32


def _run(fn, image, out_shape=None):
  """Runs `fn` eagerly and in a tf.data map; both must agree, give uint8 and the shape."""
  image = tf.constant(image)
  out_shape = tuple(image.shape) if out_shape is None else out_shape
  eager = fn(image)
  dataset = tf.data.Dataset.from_tensors(image).map(fn)
  assert tuple(dataset.element_spec.shape) == out_shape
  graph = next(iter(dataset)).numpy()
  assert eager.dtype == tf.uint8 and tuple(eager.shape) == out_shape
  np.testing.assert_array_equal(eager.numpy(), graph)
  return eager.numpy()


def _seed(*values):
  return tf.constant(values, tf.int32)


def _random_image(seed=0, shape=(SIZE, SIZE, 3)):
  # Values 0..127 only, so 128 marks invented pixels.
  return np.random.default_rng(seed).integers(0, 128, shape, dtype=np.uint8)


def test_random_flip_is_identity_or_mirror_and_seeded():
  image = _random_image()
  outcomes = set()
  for seed in range(10):
    out = _run(lambda x, s=seed: augment.random_flip(x, _seed(s, 1)), image)
    if np.array_equal(out, image):
      outcomes.add("same")
    else:
      np.testing.assert_array_equal(out, image[:, ::-1])
      outcomes.add("flipped")
    np.testing.assert_array_equal(
        out, augment.random_flip(tf.constant(image), _seed(seed, 1)).numpy())
  assert outcomes == {"same", "flipped"}


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_pad_and_crop_is_a_shifted_window(mode):
  image = _random_image(1)
  if mode == "constant":
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], constant_values=128)
  else:  # numpy "reflect" mirrors without repeating the edge, as TF's REFLECT
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], mode="reflect")
  offsets = set()
  for seed in range(12):
    out = _run(lambda x, s=seed: augment.pad_and_crop(x, 4, _seed(s, 2), mode=mode), image)
    found = [(dy, dx) for dy in range(9) for dx in range(9)
             if np.array_equal(out, padded[dy:dy + SIZE, dx:dx + SIZE])]
    assert found, f"seed {seed}: output is no 32x32 window of the padded image"
    offsets.add(found[0])
  assert len(offsets) > 3


def test_pad_and_crop_constant_fill_is_128():
  image = _random_image(2)
  # Find a seed that shifts content right/down, and check the border it uncovers.
  for seed in range(50):
    out = augment.pad_and_crop(tf.constant(image), 4, _seed(seed, 3)).numpy()
    if (out[0] == 128).all() and (out[:, 0] == 128).all():
      assert (out[4:, 4:] != 128).any()
      return
  pytest.fail("no crop uncovered the top-left padding in 50 seeds")


def test_pad_and_crop_rejects_unknown_mode():
  with pytest.raises(ValueError, match="reflect"):
    augment.pad_and_crop(tf.constant(_random_image()), 4, _seed(0, 0), mode="wrap")


def test_cutout_at_fills_an_exact_square():
  image = _random_image(3)
  out = _run(lambda x: augment.cutout_at(x, 16, 16, 16), image)
  expected = image.copy()
  expected[8:24, 8:24] = 128
  np.testing.assert_array_equal(out, expected)
  # Clipped at a corner: centre (0, 0) leaves the 8x8 quarter that is inside.
  corner = augment.cutout_at(tf.constant(image), 0, 0, 16).numpy()
  expected = image.copy()
  expected[:8, :8] = 128
  np.testing.assert_array_equal(corner, expected)


def test_cutout_random_square_is_at_most_size_and_seeded():
  image = _random_image(4)
  sizes = set()
  for seed in range(20):
    out = _run(lambda x, s=seed: augment.cutout(x, 16, _seed(s, 4)), image)
    changed = (out != image).any(-1)
    rows, cols = np.nonzero(changed)
    assert (out[changed] == 128).all()
    box = out[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (box == 128).all()
    sizes.add((rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
  assert all(h <= 16 and w <= 16 for h, w in sizes)
  assert (16, 16) in sizes and len(sizes) > 1


def test_center_crop_takes_the_central_window():
  # H=101, W=80, size 24: crop int(24 / 56 * 80) = 34, top (101 - 34 + 1) // 2 = 34,
  # left (80 - 34 + 1) // 2 = 23. Only that window is 200; the output must be all 200.
  image = np.zeros((101, 80, 3), np.uint8)
  image[34:68, 23:57] = 200
  out = _run(lambda x: augment.center_crop(x, 24), image, out_shape=(24, 24, 3))
  np.testing.assert_array_equal(out, 200)
  shifted = np.zeros_like(image)
  shifted[33:67, 23:57] = 200  # one row higher: the crop now includes a black row
  assert (augment.center_crop(tf.constant(shifted), 24).numpy() < 200).any()


def test_inception_crop_area_and_resize():
  # Horizontal ramp: value = 2 * x. A crop of a quarter of the area at aspect 1 is a
  # 32x32 window of the 64x64 image, so the output spans about 2 * 31 = 62 levels.
  ramp = np.broadcast_to((2 * np.arange(64, dtype=np.uint8))[None, :, None],
                         (64, 64, 3)).copy()
  lefts = set()
  for seed in range(6):
    out = _run(lambda x, s=seed: augment.inception_crop(
        x, 24, _seed(s, 5), area_range=(0.25, 0.25), aspect_ratio_range=(1.0, 1.0)),
               ramp, out_shape=(24, 24, 3))
    assert 55 <= int(out.max()) - int(out.min()) <= 70
    assert (out == out[:1]).all()  # rows stay identical: no vertical ramp
    lefts.add(int(out.min()))
  assert len(lefts) > 1  # the window moves with the seed


def test_inception_crop_defaults_give_varied_crops_of_any_input_shape():
  image = _random_image(5, shape=(48, 64, 3))
  outs = [_run(lambda x, s=seed: augment.inception_crop(x, 20, _seed(s, 6)), image,
               out_shape=(20, 20, 3)) for seed in range(4)]
  assert len({o.tobytes() for o in outs}) == 4


def test_inception_crop_falls_back_to_center_crop():
  # No window of aspect 3 can cover 90% of a square image: the sampler gives up.
  image = _random_image(6, shape=(40, 40, 3))
  out = _run(lambda x: augment.inception_crop(
      x, 16, _seed(0, 7), area_range=(0.9, 0.9), aspect_ratio_range=(3.0, 3.0)),
             image, out_shape=(16, 16, 3))
  np.testing.assert_array_equal(out, augment.center_crop(tf.constant(image), 16).numpy())
