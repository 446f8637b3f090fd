"""EfficientNet: published sizes, block layout, a tiny variant's forward and backward
passes (BatchNorm, dropout, stochastic depth, remat), the registry's field checks, and
(slow) an ahead-of-time compile of the MPL step for a TPU topology."""

import functools
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mpl_jax import models
from mpl_jax import state as state_lib
from mpl_jax.models import efficientnet
from tests.helpers import ROOT, assert_close_on_scale

# Tolerances of max|a - b| / max|b| per tensor (tests/helpers.py), set from the worst figure
# of tools/tolerance_survey.py over five XLA:CPU code paths (RELIABILITY.md, "Numerical
# tolerances"): at least 10x it, never below 1e-5 for float32.
TOL_REMAT = 1e-5  # worst 0: remat was bit-identical on every path; 1e-5 is the floor
TOL_SCAN = 1e-5  # the scanned loss, logits and statistics: worst 0 on every path
TOL_SCAN_GRADIENTS = 5e-5  # worst 4.2e-6 (AVX2), on an SE bias of scale 0.29; the
                           # BatchNorm-fed biases (0 in exact arithmetic): 1.2e-7


def _abstract_params(module, size=32):
  variables = jax.eval_shape(lambda: module.init(
      {"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3)), train=False))
  return variables["params"]


def _count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


# Published parameter counts (1,000 classes): B0 5.3M, B7 66M (Tan & Le), L2 480M.
@pytest.mark.parametrize("variant,expected,blocks", [
    ("b0", 5.3e6, 16), ("b7", 66e6, 55), ("l2", 480e6, 88)])
def test_parameter_counts_match_the_published_ones(variant, expected, blocks):
  module = efficientnet.from_variant(variant, num_classes=1000)
  params = _abstract_params(module)
  count = _count(params)
  assert abs(count - expected) / expected < 0.02, count
  assert len([k for k in params if k.startswith("block_")]) == blocks == len(
      module.block_layout())
  scanned = _abstract_params(module.clone(scan_blocks=True))
  assert _count(scanned) == count
  assert not any(k.startswith("block_") for k in scanned)


def test_b0_layout():
  params = _abstract_params(efficientnet.from_variant("b0", num_classes=1000))
  assert params["stem"]["kernel"].shape == (3, 3, 3, 32)
  # The first block has no expansion; the second expands 16 -> 96 channels.
  assert "expand_conv" not in params["block_1"]
  assert params["block_2"]["expand_conv"]["kernel"].shape == (1, 1, 16, 96)
  assert params["block_2"]["depthwise_conv"]["kernel"].shape == (3, 3, 1, 96)
  # Squeeze-excite width is a quarter of the block's input channels.
  assert params["block_2"]["se"]["reduce"]["kernel"].shape == (96, 4)
  assert params["block_16"]["project_conv"]["kernel"].shape == (1, 1, 1152, 320)
  assert params["head_conv"]["kernel"].shape == (1, 1, 320, 1280)
  assert params["head"]["kernel"].shape == (1280, 1000)


def test_channel_and_depth_rounding():
  assert efficientnet.round_channels(32, 4.3) == 136   # L2 stem
  assert efficientnet.round_channels(1280, 4.3) == 5504
  assert efficientnet.round_channels(16, 1.1) == 16    # 17.6 rounds to 16 (>= 90%)
  assert efficientnet.round_channels(24, 0.1) == 8     # never below the divisor
  assert [efficientnet.round_repeats(r, 3.1) for r in (1, 2, 3, 4)] == [4, 7, 10, 13]


def _key(seed):
  return jax.random.key(seed, impl="rbg")


@functools.cache
def _tiny():
  """A 10-block, 8-to-80-channel EfficientNet on 32x32 inputs, initialized once.

  Depth 0.5 gives stages 4-6 two blocks each, so three blocks have identity shortcuts.
  """
  module = efficientnet.EfficientNet(num_classes=5, width=0.25, depth=0.5,
                                     dropout_rate=0.5, bn_momentum=0.9)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32))
  net = jax.jit(lambda v: state_lib.init_net(module, None, _key(0), v))(x)
  return module, x, net


_APPLY_CACHE = {}


def _apply(module):
  """A jitted `make_apply` per module configuration, so tests share compilations."""
  key = repr(module)
  if key not in _APPLY_CACHE:
    _APPLY_CACHE[key] = jax.jit(state_lib.make_apply(module), static_argnames="train")
  return _APPLY_CACHE[key]


def test_tiny_forward_modes_and_batch_stats():
  module, x, net = _tiny()
  apply = _apply(module)
  logits, new_state = apply(net.params, net.model_state, x, train=True, rng=_key(1))
  assert logits.shape == (4, 5) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  before, after = jax.tree.leaves(net.model_state), jax.tree.leaves(new_state)
  assert len(before) == len(after) > 0
  # Every running variance moves. (Batch means after an expansion conv stay ~0: its input
  # is the previous block's freshly initialized BN output, which has zero mean.)
  variances = [(b, a) for (path, b), a in zip(
      jax.tree_util.tree_leaves_with_path(net.model_state), after) if "var" in str(path)]
  assert len(variances) == len(before) // 2
  assert all(not np.allclose(b, a) for b, a in variances)
  stem_mean = new_state["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(stem_mean, net.model_state["batch_stats"]["stem_bn"]["mean"])
  eval_a, same = apply(net.params, net.model_state, x, train=False)
  eval_b, _ = apply(net.params, net.model_state, x, train=False, rng=_key(2))
  np.testing.assert_array_equal(eval_a, eval_b)
  for b, a in zip(before, jax.tree.leaves(same)):
    np.testing.assert_array_equal(b, a)
  train_b, _ = apply(net.params, net.model_state, x, train=True, rng=_key(2))
  assert not np.allclose(logits, train_b)  # dropout draws from the rng


def test_stochastic_depth_drops_residual_branches_in_train_mode_only():
  module, x, net = _tiny()
  plain = _apply(module.clone(dropout_rate=0.0))
  deep = _apply(module.clone(dropout_rate=0.0, drop_connect_rate=0.9))
  # Without dropout or stochastic depth, train mode does not depend on the rng.
  a, _ = plain(net.params, net.model_state, x, train=True, rng=_key(1))
  b, _ = plain(net.params, net.model_state, x, train=True, rng=_key(2))
  np.testing.assert_array_equal(a, b)
  c, _ = deep(net.params, net.model_state, x, train=True, rng=_key(1))
  d, _ = deep(net.params, net.model_state, x, train=True, rng=_key(2))
  assert not np.allclose(c, d)
  e, _ = deep(net.params, net.model_state, x, train=False)
  f, _ = plain(net.params, net.model_state, x, train=False)
  np.testing.assert_array_equal(e, f)


@pytest.mark.slow
def test_remat_gives_the_same_loss_and_gradients():
  module, x, net = _tiny()
  labels = jnp.array([0, 1, 2, 3])

  def grads(m, params, model_state):
    apply = state_lib.make_apply(m.clone(dropout_rate=0.0))

    def loss_fn(p):
      logits, _ = apply(p, model_state, x, train=True, rng=_key(3))
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

    return jax.jit(jax.value_and_grad(loss_fn))(params)

  loss, g = grads(module, net.params, net.model_state)
  loss_remat, g_remat = grads(module.clone(remat=True), net.params, net.model_state)
  assert_close_on_scale(loss_remat, loss, TOL_REMAT, "remat loss")
  for path, u in jax.tree_util.tree_leaves_with_path(g):
    assert np.any(u != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"
  assert_close_on_scale(g_remat, g, TOL_REMAT, "remat gradients")
  # Remat inside the per-stage scan (no CSE barrier there) computes the same gradients.
  scanned_state = {"batch_stats": _to_scanned_layout(net.model_state["batch_stats"], module)}
  loss_scan, g_scan = grads(module.clone(remat=True, scan_blocks=True),
                            _to_scanned_layout(net.params, module), scanned_state)
  assert_close_on_scale(loss_scan, loss, TOL_SCAN, "scanned loss")
  # (Some true gradients are 0, e.g. of the biases that feed BatchNorm: both programs give
  # rounding of ~1e-7 of the largest gradient there, which the helper measures on the
  # tree's scale.)
  assert_close_on_scale(g_scan, _to_scanned_layout(g, module), TOL_SCAN_GRADIENTS,
                        "scanned gradients")


def _to_scanned_layout(tree, module):
  """block_<i> entries -> stage_<s>_first and stacked stage_<s>_rest entries."""
  out, index = {k: v for k, v in tree.items() if not k.startswith("block_")}, 1
  for stage, spec in enumerate(efficientnet.B0_STAGES):
    repeats = efficientnet.round_repeats(spec.repeats, module.depth)
    out[f"stage_{stage + 1}_first"] = tree[f"block_{index}"]
    if repeats > 1:
      rest = [tree[f"block_{index + i}"] for i in range(1, repeats)]
      out[f"stage_{stage + 1}_rest"] = jax.tree.map(lambda *xs: jnp.stack(xs), *rest)
    index += repeats
  return out


def test_scanned_blocks_compute_the_same_function():
  module, x, net = _tiny()
  scanned = module.clone(scan_blocks=True, dropout_rate=0.0)
  params = _to_scanned_layout(net.params, module)
  model_state = {"batch_stats": _to_scanned_layout(net.model_state["batch_stats"], module)}
  reference = jax.eval_shape(lambda: scanned.init({"params": _key(0)}, x, train=False))
  assert jax.tree.structure(reference["params"]) == jax.tree.structure(params)
  assert _count(reference["params"]) == _count(net.params)
  plain_apply, scanned_apply = _apply(module.clone(dropout_rate=0.0)), _apply(scanned)
  for train in (False, True):
    a, state_a = plain_apply(net.params, net.model_state, x, train=train, rng=_key(1))
    b, state_b = scanned_apply(params, model_state, x, train=train, rng=_key(1))
    assert_close_on_scale(b, a, TOL_SCAN, f"scanned logits, train={train}")
  assert_close_on_scale(state_b, {"batch_stats": _to_scanned_layout(state_a["batch_stats"],
                                                                    module)},
                        TOL_SCAN, "scanned batch statistics")


def test_scanned_blocks_draw_stochastic_depth_per_block():
  module, x, net = _tiny()
  scanned = _apply(module.clone(scan_blocks=True, dropout_rate=0.0, drop_connect_rate=0.9))
  params = _to_scanned_layout(net.params, module)
  model_state = {"batch_stats": _to_scanned_layout(net.model_state["batch_stats"], module)}
  a, _ = scanned(params, model_state, x, train=True, rng=_key(1))
  b, _ = scanned(params, model_state, x, train=True, rng=_key(2))
  assert not np.allclose(a, b)
  c, _ = scanned(params, model_state, x, train=False)
  d, _ = _apply(module)(net.params, net.model_state, x, train=False)
  assert_close_on_scale(c, d, TOL_SCAN, "scanned eval logits")


def test_bfloat16_compute_keeps_float32_params():
  module = models.build({"name": "efficientnet", "variant": "b0", "width": 0.25,
                         "depth": 0.25, "dropout_rate": 0.0, "bn_momentum": 0.99,
                         "dtype": "bfloat16"}, num_classes=3)
  variables = jax.eval_shape(lambda: module.init(
      {"params": jax.random.key(0)}, jnp.zeros((2, 32, 32, 3)), train=False))
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits = jax.eval_shape(lambda v: module.apply(v, jnp.zeros((2, 32, 32, 3))), variables)
  assert logits.dtype == jnp.float32


def test_registry_builds_variants_with_overrides():
  l2 = models.build({"name": "efficientnet", "variant": "l2", "dropout_rate": 0.5,
                     "bn_momentum": 0.99, "drop_connect_rate": 0.2, "remat": True},
                    num_classes=1000)
  assert isinstance(l2, efficientnet.EfficientNet)
  assert (l2.width, l2.depth, l2.dropout_rate, l2.drop_connect_rate, l2.remat) == (
      4.3, 5.3, 0.5, 0.2, True)
  small = models.build({"name": "efficientnet", "variant": "b7", "width": 0.5,
                        "dropout_rate": 0.1, "bn_momentum": 0.9}, num_classes=10)
  assert (small.width, small.depth, small.bn_momentum) == (0.5, 3.1, 0.9)
  assert efficientnet.VARIANTS["l2"].resolution == 800


@pytest.mark.parametrize("cfg,message", [
    ({"name": "efficientnet", "dropout_rate": 0.2, "bn_momentum": 0.99}, "needs fields"),
    ({"name": "efficientnet", "variant": "b0", "dropout_rate": 0.2, "bn_momentum": 0.99,
      "resolution": 224}, "unknown fields"),
    ({"name": "efficientnet", "variant": "b9", "dropout_rate": 0.2, "bn_momentum": 0.99},
     "b6_wide"),
    ({"name": "efficientnet", "variant": "b0", "dropout_rate": 0.2, "bn_momentum": 0.99,
      "drop_connect_rate": 1.0}, "drop_connect_rate"),
    ({"name": "efficientnet", "variant": "b0", "dropout_rate": 0.2, "bn_momentum": 0.99,
      "width": 0.0}, "width"),
    ({"name": "efficientnet", "variant": "b0", "dropout_rate": 1.2, "bn_momentum": 0.99},
     "dropout_rate"),
    ({"name": "efficientnet", "variant": "b0", "dropout_rate": 0.2, "bn_momentum": 0.99,
      "dtype": "int8"}, "dtype"),
])
def test_registry_rejects_bad_fields(cfg, message):
  with pytest.raises(ValueError, match=message):
    models.build(cfg, num_classes=10)


def _tpu_python() -> str | None:
  """A Python that can import libtpu: this one, or the project's .venv-tpu."""
  if importlib.util.find_spec("libtpu") is not None:
    return sys.executable
  candidate = os.path.join(ROOT, ".venv-tpu", "bin", "python")
  return candidate if os.path.exists(candidate) else None


@pytest.mark.slow
def test_mpl_step_compiles_ahead_of_time_for_a_tpu_topology():
  python = _tpu_python()
  if python is None:
    pytest.skip("libtpu is not importable; see tools/aot_tpu.py for the .venv-tpu setup")
  args = ["--variant=b0", "--width=0.25", "--depth=0.25", "--resolution=32",
          "--num_classes=10", "--topology=v4:2x2x1"]
  results = []
  for extra in ("--model_axis=1", "--model_axis=2", "--plan"):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([python, os.path.join(ROOT, "tools", "aot_tpu.py"), *args,
                           extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
    results.append(json.loads(line[len("RESULT "):]))
  *results, plan = results
  for r in results:
    assert r["device_kind"] == "TPU v4" and r["chips"] == 4 and r["fits"]
    assert r["flops_per_chip"] > 0 and r["peak_gib_per_chip"] > 0
  # --plan (no compile): the flagship's 2,048 + 16,384 from 4 chips at 1+8 is 512
  # micro-batches; its FLOPs per chip are near the compiled step's.
  assert plan["accum_steps"] == 512 and "peak_gib_per_chip" not in plan
  assert plan["lowered_flops_per_chip"] == pytest.approx(results[0]["flops_per_chip"], rel=0.3)
  # Splitting parameters and optimizer state two ways halves what each chip holds of them.
  data_parallel, sharded = results
  assert sharded["argument_gib"] < 0.75 * data_parallel["argument_gib"]


@pytest.mark.slow
def test_any_method_of_any_config_compiles_ahead_of_time():
  """tools/aot_tpu.py compiles the step `mpl_jax.compiled` gives any method: the flagship
  config's UDA and supervised steps (tiny EfficientNet) and the CIFAR config's MPL step
  (WRN-28-2 at 32 px), for a v4 topology of 4 chips."""
  python = _tpu_python()
  if python is None:
    pytest.skip("libtpu is not importable; see tools/aot_tpu.py for the .venv-tpu setup")
  tiny = ["--variant=b0", "--width=0.25", "--depth=0.25", "--resolution=32",
          "--num_classes=10"]
  flagship = os.path.join("configs", "imagenet_efficientnet_l2.py")
  cases = [([f"--config={flagship}:uda", *tiny], ("uda", "uda")),
           ([f"--config={flagship}:supervised", *tiny], ("supervised", "supervised")),
           ([f"--config={os.path.join('configs', 'cifar10_wrn28_2.py')}:mpl"], ("mpl", "mpl"))]
  steps = {}
  for args, (method, phase) in cases:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([python, os.path.join(ROOT, "tools", "aot_tpu.py"), *args,
                           "--topology=v4:2x2x1", "--model_axis=1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")][-1]
    r = json.loads(line[len("RESULT "):])
    assert (r["method"], r["phase"]) == (method, phase)
    assert r["device_kind"] == "TPU v4" and r["chips"] == 4 and r["fits"]
    assert r["flops_per_chip"] > 0 and r["peak_gib_per_chip"] > 0
    steps[method] = r
  # UDA runs one network on the three views, supervised one on the labeled images only.
  assert steps["uda"]["flops_per_chip"] > 2 * steps["supervised"]["flops_per_chip"]
  assert steps["mpl"]["config"] == os.path.join("configs", "cifar10_wrn28_2.py")
