"""Tests of the image models: sizes, shapes, BatchNorm and dropout modes, the registry."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mpl_jax import models
from mpl_jax import state as state_lib
from mpl_jax.models import resnet
from mpl_jax.models import wide_resnet
from tests.helpers import assert_close_on_scale

# max|a - b| / max|b| (tests/helpers.py) of BatchNorm's statistics against a convolution and
# numpy's mean and variance: worst 5.1e-8 over five XLA:CPU code paths of
# tools/tolerance_survey.py (RELIABILITY.md, "Numerical tolerances"); 1e-5 is the floor.
TOL_STATISTICS = 1e-5


def _abstract_variables(module, input_shape):
  return jax.eval_shape(
      lambda: module.init({"params": jax.random.key(0)}, jnp.zeros(input_shape),
                          train=False))


def _num_params(module, input_shape):
  variables = _abstract_variables(module, input_shape)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("width,expected", [(2, 1.45e6), (10, 36.5e6)])
def test_wide_resnet_parameter_count(width, expected):
  module = models.build({"name": "wide_resnet", "depth": 28, "width": width,
                         "dropout_rate": 0.2, "bn_momentum": 0.99}, num_classes=10)
  count = _num_params(module, (1, 32, 32, 3))
  assert abs(count - expected) / expected < 0.02, count


def test_resnet50_parameter_count_and_shape():
  module = models.build({"name": "resnet50", "dropout_rate": 0.1, "bn_momentum": 0.99},
                        num_classes=1000)
  count = _num_params(module, (1, 224, 224, 3))
  assert abs(count - 25.5e6) / 25.5e6 < 0.02, count
  variables = _abstract_variables(module, (2, 224, 224, 3))
  logits = jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables,
                          jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32))
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  # 16 bottleneck blocks, 4 of them with a projection shortcut.
  blocks = [k for k in variables["params"] if k.startswith("stage_")]
  assert len(blocks) == 16
  assert sum("shortcut" in variables["params"][k] for k in blocks) == 4


def test_wide_resnet_layout():
  variables = _abstract_variables(wide_resnet.WideResNet(10, depth=28, width=2),
                                  (1, 32, 32, 3))
  params = variables["params"]
  blocks = [k for k in params if k.startswith("group_")]
  assert len(blocks) == 12
  # Projection shortcuts only where the resolution halves (the stem already has 16k).
  assert sorted(k for k in blocks if "shortcut" in params[k]) == [
      "group_2_block_1", "group_3_block_1"]
  assert params["group_3_block_4"]["conv_2"]["kernel"].shape == (3, 3, 128, 128)
  assert params["head"]["kernel"].shape == (128, 10)
  assert "bias" not in params["stem"]


def test_bfloat16_compute_keeps_float32_params():
  module = models.build({"name": "wide_resnet", "depth": 10, "width": 1,
                         "dropout_rate": 0.0, "bn_momentum": 0.9, "dtype": "bfloat16"},
                        num_classes=3)
  assert module.dtype == jnp.bfloat16
  variables = _abstract_variables(module, (2, 8, 8, 3))
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def _key(seed):
  # rbg keys: threefry's random bits take seconds to compile on CPU; the models are the
  # same with either key type.
  return jax.random.key(seed, impl="rbg")


class _Net:
  """A tiny model, its initialized state and a jitted `make_apply`, built once."""

  def __init__(self, module, input_shape):
    self.module = module
    self.x = jnp.asarray(
        np.random.default_rng(0).normal(1.0, 2.0, input_shape).astype(np.float32))
    self.net = jax.jit(lambda x: state_lib.init_net(module, None, _key(0), x))(self.x)
    self.apply = jax.jit(state_lib.make_apply(module), static_argnames="train")


@functools.cache
def _tiny_net(kind):
  if kind == "wide_resnet":
    # 8x8 inputs; BN decay 0.9 so one step moves the running averages visibly.
    return _Net(wide_resnet.WideResNet(num_classes=5, depth=10, width=1,
                                       dropout_rate=0.5, bn_momentum=0.9), (4, 8, 8, 3))
  return _Net(resnet.ResNet(num_classes=5, stage_sizes=(1, 1, 1, 1), base_width=4,
                            dropout_rate=0.5, bn_momentum=0.9), (4, 32, 32, 3))


@pytest.fixture(params=["wide_resnet", "resnet"])
def tiny(request):
  return _tiny_net(request.param)


@pytest.fixture
def tiny_wrn():
  return _tiny_net("wide_resnet")


def test_batch_stats_update_only_in_train_mode(tiny):
  params, model_state = tiny.net.params, tiny.net.model_state
  logits, trained = tiny.apply(params, model_state, tiny.x, train=True, rng=_key(1))
  assert logits.shape == (4, 5) and logits.dtype == jnp.float32
  before = jax.tree.leaves(model_state)
  after = jax.tree.leaves(trained)
  assert len(before) == len(after) > 0
  assert all(not np.allclose(b, a) for b, a in zip(before, after))
  logits, evaluated = tiny.apply(params, model_state, tiny.x, train=False)
  assert logits.shape == (4, 5)
  for b, a in zip(before, jax.tree.leaves(evaluated)):
    np.testing.assert_array_equal(b, a)


def test_batch_stats_follow_momentum(tiny_wrn):
  tiny = tiny_wrn
  # One train step from the initial (0, 1) statistics: mean <- 0.9 * 0 + 0.1 * batch mean.
  _, new_state = tiny.apply(tiny.net.params, tiny.net.model_state, tiny.x, train=True,
                            rng=_key(1))
  features = jax.lax.conv_general_dilated(
      tiny.x, tiny.net.params["stem"]["kernel"], (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  stats = new_state["batch_stats"]["group_1_block_1"]["bn_1"]
  assert_close_on_scale(stats["mean"], 0.1 * features.mean(axis=(0, 1, 2)), TOL_STATISTICS,
                        "mean")
  assert_close_on_scale(stats["var"], 0.9 + 0.1 * features.var(axis=(0, 1, 2)),
                        TOL_STATISTICS, "variance")


def test_dropout_only_in_train_mode(tiny):
  params, model_state = tiny.net.params, tiny.net.model_state
  train_a, _ = tiny.apply(params, model_state, tiny.x, train=True, rng=_key(1))
  train_b, _ = tiny.apply(params, model_state, tiny.x, train=True, rng=_key(2))
  assert not np.allclose(train_a, train_b)
  eval_a, _ = tiny.apply(params, model_state, tiny.x, train=False, rng=_key(1))
  eval_b, _ = tiny.apply(params, model_state, tiny.x, train=False, rng=_key(2))
  np.testing.assert_array_equal(eval_a, eval_b)
  if isinstance(tiny.module, wide_resnet.WideResNet):
    # Control: without dropout, train mode does not depend on the rng.
    plain = jax.jit(state_lib.make_apply(tiny.module.clone(dropout_rate=0.0)),
                    static_argnames="train")
    plain_a, _ = plain(params, model_state, tiny.x, train=True, rng=_key(1))
    plain_b, _ = plain(params, model_state, tiny.x, train=True, rng=_key(2))
    np.testing.assert_array_equal(plain_a, plain_b)


def test_tiny_wide_resnet_forward_backward_through_make_apply(tiny_wrn):
  tiny = tiny_wrn
  apply = state_lib.make_apply(tiny.module)
  labels = jnp.array([0, 1, 2, 3])
  model_state = tiny.net.model_state

  def loss_fn(params):
    logits, new_state = apply(params, model_state, tiny.x, train=True, rng=_key(3))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, new_state

  loss_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, new_state), grads = loss_and_grad(tiny.net.params)
  assert np.isfinite(loss)
  assert jax.tree.structure(new_state) == jax.tree.structure(model_state)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"
  # A few SGD steps on one batch lower the loss: the gradient points downhill.
  params = tiny.net.params
  for _ in range(5):
    _, grads = loss_and_grad(params)
    params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
  assert loss_and_grad(params)[0][0] < loss


@pytest.mark.parametrize("cfg,message", [
    ({"name": "wide_resnet", "depth": 28, "width": 2, "dropout_rate": 0.2},
     "needs fields"),
    ({"name": "wide_resnet", "depth": 28, "width": 2, "dropout_rate": 0.2,
      "bn_momentum": 0.99, "bn_decay": 0.99}, "unknown fields"),
    ({"name": "wide_resnet", "depth": 27, "width": 2, "dropout_rate": 0.2,
      "bn_momentum": 0.99}, "6n \\+ 4"),
    ({"name": "wide_resnet", "depth": 28, "width": 0, "dropout_rate": 0.2,
      "bn_momentum": 0.99}, "positive integer"),
    ({"name": "resnet50", "dropout_rate": 1.0, "bn_momentum": 0.99}, "dropout_rate"),
    ({"name": "resnet50", "dropout_rate": 0.1, "bn_momentum": 1.5}, "bn_momentum"),
    ({"name": "resnet50", "dropout_rate": 0.1, "bn_momentum": 0.99, "dtype": "fp8"},
     "dtype"),
    ({"name": "resnet18"}, "resnet50"),
])
def test_registry_rejects_bad_fields(cfg, message):
  with pytest.raises(ValueError, match=message):
    models.build(cfg, num_classes=10)


def test_registry_builds_configured_modules():
  wrn = models.build({"name": "wide_resnet", "depth": 28, "width": 2,
                      "dropout_rate": 0.2, "bn_momentum": 0.99}, num_classes=10)
  assert isinstance(wrn, wide_resnet.WideResNet)
  assert (wrn.depth, wrn.width, wrn.dropout_rate, wrn.bn_momentum) == (28, 2, 0.2, 0.99)
  assert wrn.dtype == jnp.float32
  r50 = models.build({"name": "resnet50", "dropout_rate": 0.1, "bn_momentum": 0.99},
                     num_classes=1000)
  assert isinstance(r50, resnet.ResNet)
  assert tuple(r50.stage_sizes) == (3, 4, 6, 3) and r50.num_classes == 1000
