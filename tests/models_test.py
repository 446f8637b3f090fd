"""Tests of the image models: sizes, shapes, BatchNorm and dropout modes, the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mpl_jax import models
from mpl_jax import state as state_lib
from mpl_jax.models import resnet
from mpl_jax.models import wide_resnet


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


def _jit_apply(module):
  return jax.jit(state_lib.make_apply(module), static_argnames="train")


def _tiny_wrn(dropout_rate=0.0, bn_momentum=0.9):
  return wide_resnet.WideResNet(num_classes=5, depth=10, width=1,
                                dropout_rate=dropout_rate, bn_momentum=bn_momentum)


def _tiny_resnet(dropout_rate=0.0):
  return resnet.ResNet(num_classes=5, stage_sizes=(1, 1, 1, 1), base_width=4,
                       dropout_rate=dropout_rate, bn_momentum=0.9)


def _inputs(shape=(4, 8, 8, 3), seed=0):
  return jax.random.normal(jax.random.key(seed), shape) * 2.0 + 1.0


@pytest.mark.parametrize("make,shape", [(_tiny_wrn, (4, 8, 8, 3)),
                                        (_tiny_resnet, (4, 32, 32, 3))])
def test_batch_stats_update_only_in_train_mode(make, shape):
  module = make()
  net = state_lib.init_net(module, None, jax.random.key(0), jnp.zeros(shape))
  apply = _jit_apply(module)
  x = _inputs(shape)
  logits, trained = apply(net.params, net.model_state, x, train=True,
                          rng=jax.random.key(1))
  assert logits.shape == (shape[0], 5)
  before = jax.tree.leaves(net.model_state)
  after = jax.tree.leaves(trained)
  assert len(before) == len(after) > 0
  assert all(not np.allclose(b, a) for b, a in zip(before, after))
  _, evaluated = apply(net.params, net.model_state, x, train=False)
  for b, a in zip(before, jax.tree.leaves(evaluated)):
    np.testing.assert_array_equal(b, a)


def test_batch_stats_follow_momentum():
  # One train step from the initial (0, 1) statistics: mean <- 0.9 * 0 + 0.1 * batch mean.
  module = _tiny_wrn(bn_momentum=0.9)
  x = _inputs()
  net = state_lib.init_net(module, None, jax.random.key(0), x)
  _, new_state = _jit_apply(module)(net.params, net.model_state, x, train=True)
  conv = net.params["stem"]["kernel"]
  features = jax.lax.conv_general_dilated(
      x, conv, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  stats = new_state["batch_stats"]["group_1_block_1"]["bn_1"]
  np.testing.assert_allclose(stats["mean"], 0.1 * features.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * features.var(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make,shape", [(_tiny_wrn, (4, 8, 8, 3)),
                                        (_tiny_resnet, (4, 32, 32, 3))])
def test_dropout_only_in_train_mode(make, shape):
  x = _inputs(shape)
  module = make(dropout_rate=0.5)
  net = state_lib.init_net(module, None, jax.random.key(0), x)
  apply = _jit_apply(module)
  train_a, _ = apply(net.params, net.model_state, x, train=True, rng=jax.random.key(1))
  train_b, _ = apply(net.params, net.model_state, x, train=True, rng=jax.random.key(2))
  assert not np.allclose(train_a, train_b)
  eval_a, _ = apply(net.params, net.model_state, x, train=False, rng=jax.random.key(1))
  eval_b, _ = apply(net.params, net.model_state, x, train=False, rng=jax.random.key(2))
  np.testing.assert_array_equal(eval_a, eval_b)
  # Without dropout, train mode does not depend on the rng (only BN differs from eval).
  plain = _jit_apply(make(dropout_rate=0.0))
  plain_a, _ = plain(net.params, net.model_state, x, train=True, rng=jax.random.key(1))
  plain_b, _ = plain(net.params, net.model_state, x, train=True, rng=jax.random.key(2))
  np.testing.assert_array_equal(plain_a, plain_b)


def test_tiny_wide_resnet_forward_backward_through_make_apply():
  module = models.build({"name": "wide_resnet", "depth": 10, "width": 1,
                         "dropout_rate": 0.2, "bn_momentum": 0.99}, num_classes=5)
  x = _inputs()
  labels = jnp.array([0, 1, 2, 3])
  net = state_lib.init_net(module, optax.sgd(0.1), jax.random.key(0), x)
  apply = state_lib.make_apply(module)

  def loss_fn(params):
    logits, new_state = apply(params, net.model_state, x, train=True,
                              rng=jax.random.key(3))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, new_state

  loss_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, new_state), grads = loss_and_grad(net.params)
  assert np.isfinite(loss)
  assert jax.tree.structure(new_state) == jax.tree.structure(net.model_state)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"
  # A few SGD steps on one batch lower the loss: the gradient points downhill.
  params = net.params
  for _ in range(5):
    (_, _), grads = loss_and_grad(params)
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
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
