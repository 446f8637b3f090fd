"""The mesh's model axis: FSDP-style sharding of parameters, optimizer state and EMA."""

import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mpl_jax import config_checks
from mpl_jax import data as data_lib
from mpl_jax import experiment
from mpl_jax import networks
from mpl_jax import sharding
from mpl_jax import train
from tests.helpers import assert_close_on_scale, flat_params, tiny_config

# max|a - b| / max|b| (tests/helpers.py) of each tensor after the same training under
# another sharding: at least 10x the worst figure of tools/tolerance_survey.py over five
# XLA:CPU code paths (RELIABILITY.md, "Numerical tolerances"): 5.6e-6, MPL's teacher with
# 128-bit vectors.
TOL_LAYOUT = 1e-4


def test_fsdp_spec_splits_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((3, 3, 16, 64), 4) == P(None, None, None, "model")
  assert sharding.fsdp_spec((64, 10), 4) == P("model", None)
  assert sharding.fsdp_spec((10, 6), 4) == P()  # nothing divides: replicated
  assert sharding.fsdp_spec((), 4) == P()
  assert sharding.fsdp_spec((64, 10), 1) == P()


def test_state_is_split_over_the_model_axis():
  """With model_axis=4 each device holds a quarter of every splittable array of the state
  (parameters, momentum, EMA), and the batch is split over all 8 devices."""
  c = tiny_config("mpl")
  c.student.momentum = 0.9
  mesh = sharding.make_mesh(0, model_axis=4)
  assert dict(mesh.shape) == {"data": 2, "model": 4}
  exp = experiment.build(c, mesh)
  abstract = jax.eval_shape(exp.init_fn, jax.random.key(0))
  state = jax.jit(exp.init_fn, out_shardings=sharding.state_sharding(mesh, abstract))(
      jax.random.key(0))
  split = 0
  for leaf in jax.tree.leaves(state):
    shard = leaf.addressable_shards[0].data
    if any(d % 4 == 0 for d in leaf.shape):
      assert shard.size * 4 == leaf.size, (leaf.shape, shard.shape)
      split += 1
    else:
      assert shard.shape == leaf.shape
  assert split >= 9  # kernels of both networks, the EMA and the student's momentum
  batch = sharding.to_global(exp.dataset.source.batch(0), mesh)
  assert batch["unlabeled_weak"].addressable_shards[0].data.shape[0] == 64 // 8


@pytest.mark.parametrize("method", ["mpl", "uda"])
def test_fsdp_training_equals_data_parallel(tmp_path, method):
  """20 steps with parameters split 4 ways reach the data-parallel parameters."""
  results = {}
  for model_axis in (1, 4):
    c = tiny_config(method)
    c.num_steps = 20
    c.student.momentum = c.teacher.momentum = 0.9
    c.mesh.model_axis = model_axis
    results[model_axis] = train.train_and_evaluate(c, str(tmp_path / f"m{model_axis}"))
  init = experiment.build(tiny_config(method)).init_fn(
      jax.random.split(jax.random.key(0))[0])
  nets = ("student", "teacher") if method == "mpl" else ("student",)
  for net in nets:
    dp = jax.device_get(getattr(results[1].state, net).params)
    fsdp = jax.device_get(getattr(results[4].state, net).params)
    assert not np.allclose(flat_params(dp), flat_params(getattr(init, net).params))
    assert_close_on_scale(fsdp, dp, TOL_LAYOUT, f"{net} parameters")
  assert set(results[4].eval_metrics) == set(results[1].eval_metrics)
  for key, value in results[1].eval_metrics.items():
    assert_close_on_scale(results[4].eval_metrics[key], value, TOL_LAYOUT, key)


@pytest.mark.slow  # three layouts, each compiled and trained
def test_checkpoint_resumes_across_layouts(tmp_path):
  """A data-parallel checkpoint resumes with parameters split over `model`, and back."""
  c = tiny_config("mpl")
  straight = train.train_and_evaluate(c, str(tmp_path / "straight")).state
  c.num_steps = 20
  train.train_and_evaluate(c, str(tmp_path / "switch"))
  c.num_steps, c.mesh.model_axis = 30, 2
  train.train_and_evaluate(c, str(tmp_path / "switch"))
  c.num_steps, c.mesh.model_axis = 40, 1
  resumed = train.train_and_evaluate(c, str(tmp_path / "switch")).state
  assert int(resumed.step) == 40
  for net in ("student", "teacher"):
    assert_close_on_scale(jax.device_get(getattr(resumed, net).params),
                          jax.device_get(getattr(straight, net).params), TOL_LAYOUT,
                          f"{net} parameters")


def test_model_axis_that_does_not_divide_the_devices(tmp_path):
  c = tiny_config("mpl")
  c.mesh.model_axis = 3
  with pytest.raises(config_checks.ConfigError,
                     match=r"mesh.model_axis=3 does not divide the 8 devices"):
    train.train_and_evaluate(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()
  c.mesh.model_axis = 0
  with pytest.raises(config_checks.ConfigError, match=r"mesh.model_axis=0 must be an integer"):
    config_checks.validate(c)


# --- FSDP per layer (mesh.gather="layer") on a network with scanned stages -------------

DEPTH = 0.7  # stages of 1, 2, 2, 3, 3, 3, 1 blocks: four loops of two or more steps


def _scanned_config(method: str, model_axis: int, gather: str):
  """A small EfficientNet (three stages scanned) on 16x16 images; the meta estimator with
  soft labels, so nothing in the step is discrete (a flipped argmax or sample would make
  two exact runs part ways for reasons that have nothing to do with the layout)."""
  c = tiny_config(method)
  c.student.wait_steps = 0
  c.student.momentum = c.teacher.momentum = 0.9
  c.student.learning_rate = c.teacher.learning_rate = 1e-3
  c.mpl.log_grad_parts = False
  c.mpl.estimator, c.mpl.labels = "meta", "soft"
  c.mesh.model_axis, c.mesh.gather = model_axis, gather
  c.model = dict(name="efficientnet", variant="b0", width=0.25, depth=DEPTH, dropout_rate=0.0,
                 bn_momentum=0.9, scan_blocks=True)
  return c


def _compiled_step(method: str, model_axis: int, gather: str):
  """The method's step compiled for a (data, model_axis) mesh of all devices; its initial
  state in that layout, the state's sharding and a fixed batch."""
  c = _scanned_config(method, model_axis, gather)
  mesh = sharding.make_mesh(0, model_axis)
  nets = networks.build(c, data_lib.DataSpec(4, (16, 16, 3)), mesh)
  abstract = jax.eval_shape(nets.init_fn, jax.random.key(0))
  state_sharding = sharding.state_sharding(mesh, abstract)
  state = jax.jit(nets.init_fn, out_shardings=state_sharding)(jax.random.key(0))
  replicated = sharding.replicated(mesh)
  step = jax.jit(nets.phase_at(0).step_fn, donate_argnums=(0,),
                 in_shardings=(state_sharding, sharding.batch_sharded(mesh), replicated),
                 out_shardings=(state_sharding, replicated))
  r = np.random.RandomState(0)
  batch = sharding.to_global({
      "labeled_x": r.randn(8, 16, 16, 3).astype(np.float32),
      "labeled_y": r.randint(0, 4, 8).astype(np.int32),
      "unlabeled_weak": r.randn(16, 16, 16, 3).astype(np.float32),
      "unlabeled_strong": r.randn(16, 16, 16, 3).astype(np.float32)}, mesh)
  compiled = step.lower(state, batch, jax.random.key(1)).compile()
  return compiled, state, state_sharding, batch


STEPS = 20


def _lockstep(method: str):
  """STEPS steps of per-layer FSDP (split 4 ways); before each, the data-parallel step
  is run from the same state. Returns the initial state, the largest difference between
  the two layouts' results over all steps (per network), and the final FSDP state with
  its compiled step.

  Each step is compared from a shared state rather than two runs compared at the end:
  this tiny network on 16x16 noise (BatchNorm over a handful of values in the last
  stages) amplifies float rounding, so two 20-step runs that differ by 1e-6 after one
  step part ways by 0.1 whatever the layout; a step that computes something else shows
  up in the first step it does."""
  layer, state, _, batch = _compiled_step(method, 4, "layer")
  data_parallel, _, dp_sharding, dp_batch = _compiled_step(method, 1, "network")
  nets = ("student", "teacher") if method == "mpl" else ("student",)
  init = jax.tree.map(np.asarray, state)
  worst = dict.fromkeys(nets, 0.0)
  for i in range(STEPS):
    same = jax.device_put(jax.tree.map(np.asarray, state), dp_sharding)
    state, _ = layer(state, batch, jax.random.key(i))
    expected, _ = data_parallel(same, dp_batch, jax.random.key(i))
    for net in nets:
      a = flat_params(getattr(expected, net).params)
      b = flat_params(getattr(state, net).params)
      worst[net] = max(worst[net], float(np.abs(a - b).max()))
  return init, worst, state, layer


@pytest.fixture(name="layer_runs", scope="module")
def _layer_runs():
  return {method: _lockstep(method) for method in ("mpl", "uda")}


@pytest.mark.slow  # four compiles of the step: minutes on two cores (make test-all)
@pytest.mark.parametrize("method", ["mpl", "uda"])
def test_per_layer_fsdp_equals_data_parallel(layer_runs, method):
  """Each of 20 steps with each block's parameters gathered where it runs (split 4 ways)
  gives the data-parallel step's parameters from the same state; every splittable array
  of the state is split 4 ways."""
  init, worst, fsdp, _ = layer_runs[method]
  for net, difference in worst.items():
    moved = np.abs(flat_params(getattr(fsdp, net).params)
                   - flat_params(getattr(init, net).params)).max()
    assert moved > 0.03, (net, moved)  # trained, far beyond the tolerance below
    # Float rounding of one step: up to 1e-5 for the student, and up to 5e-5 seen for
    # MPL's teacher, whose update passes through the student's (a difference of two
    # gradients magnifies rounding), against steps of about 0.05. A step that computes
    # something else (a term lost, a factor of 2) is off by the order of the step.
    assert difference < 1e-4, (net, difference)
  split = 0
  paths = jax.tree_util.tree_flatten_with_path(fsdp)[0]
  for path, leaf in paths:
    spec = sharding.fsdp_spec(leaf.shape, 4, sharding.is_stacked(path))
    shard = leaf.addressable_shards[0].data
    if spec != P():
      assert shard.size * 4 == leaf.size, (jax.tree_util.keystr(path), leaf.shape)
      split += 1
    else:
      assert shard.shape == leaf.shape
  stacked = [p for p, _ in paths if sharding.is_stacked(p)]
  assert stacked  # the scanned stages' parameters, their momentum and EMA
  for path, leaf in paths:  # never split on the scan axis: each loop step reads its slice
    if sharding.is_stacked(path) and leaf.ndim:
      assert leaf.sharding.spec[:1] in ((), (None,)), jax.tree_util.keystr(path)
  assert split >= 30


def _while_bodies(hlo: str) -> dict[str, str]:
  """Computation name -> its text, for every while loop body of an HLO module."""
  bodies = set(re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", hlo))
  computations = {}
  for block in re.split(r"\n(?=\S)", hlo):
    match = re.match(r"%?([\w.\-]+)\s", block)
    if match and match.group(1) in bodies:
      computations[match.group(1)] = block
  return computations


@pytest.mark.slow
def test_per_layer_gather_happens_inside_the_scanned_loop(layer_runs):
  """The compiled per-layer step all-gathers parameters inside the loop bodies of the
  scanned stages (one block's slice per iteration, forward and backward), not once for
  the whole network before the loops."""
  layer = layer_runs["uda"][3]
  bodies = _while_bodies(layer.as_text())
  assert len(bodies) >= 4  # forward and backward loops of the stages with 2+ blocks
  assert all("all-gather" in text for text in bodies.values())


def _replicated_constraints(jaxpr, in_loop=False, found=None) -> dict:
  """in a loop body? -> the shapes that `jaxpr` constrains to whole (replicated) there;
  "batch" -> the shapes of images it constrains to the batch split."""
  found = {True: [], False: [], "batch": []} if found is None else found
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "sharding_constraint":
      shape, spec = tuple(eqn.invars[0].aval.shape), eqn.params["sharding"].spec
      if eqn.params["sharding"].is_fully_replicated:
        found[in_loop].append(shape)
      elif len(shape) == 4 and spec == P(sharding.BATCH_AXES):
        found["batch"].append(shape)
    loop = in_loop or eqn.primitive.name in ("scan", "while")
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          _replicated_constraints(sub.jaxpr, loop, found)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          _replicated_constraints(sub, loop, found)
  return found


def test_per_layer_gather_is_placed_in_the_loop_and_the_whole_network_one_before_it():
  """Where the step asks for whole parameters (before XLA optimizes anything): per layer,
  inside the scanned stages' loop bodies and never on a stacked kernel outside them; per
  network, every stacked kernel whole before the loops and nothing inside them. Either
  way the network's activations are pinned to the batch split (`batch_layout`)."""
  found = {}
  for gather in sharding.GATHERS:
    c = _scanned_config("uda", 4, gather)
    nets = networks.build(c, data_lib.DataSpec(4, (16, 16, 3)), sharding.make_mesh(0, 4))
    abstract = jax.eval_shape(nets.init_fn, jax.random.key(0))
    kernels = {leaf.shape for path, leaf in jax.tree_util.tree_flatten_with_path(
        abstract.student.params)[0] if sharding.is_stacked(path) and leaf.ndim >= 4}
    batch = {"labeled_x": jax.ShapeDtypeStruct((8, 16, 16, 3), np.float32),
             "labeled_y": jax.ShapeDtypeStruct((8,), np.int32),
             "unlabeled_weak": jax.ShapeDtypeStruct((16, 16, 16, 3), np.float32),
             "unlabeled_strong": jax.ShapeDtypeStruct((16, 16, 16, 3), np.float32)}
    jaxpr = jax.make_jaxpr(nets.phase_at(0).step_fn)(abstract, batch, jax.random.key(1))
    constraints = _replicated_constraints(jaxpr.jaxpr)
    found[gather] = (len(constraints[True]), kernels & set(constraints[False]), kernels)
    # Activations (and their gradients) pinned to the batch split in every block: the
    # stem's output at 8x8 (16x16 inputs, stride 2) and the last stage's at 1x1.
    pinned = {shape[1:3] for shape in constraints["batch"]}
    assert {(16, 16), (8, 8), (1, 1)} <= pinned, (gather, pinned)
  (network_in_loops, network_stacked, kernels), (layer_in_loops, layer_stacked, _) = (
      found["network"], found["layer"])
  assert len(kernels) >= 5  # the scanned stages' convolution kernels (distinct shapes)
  assert network_in_loops == 0 and network_stacked == kernels
  assert layer_in_loops >= len(kernels) and not layer_stacked


def test_layer_gather_needs_a_model_that_supports_it(tmp_path):
  c = tiny_config("mpl")
  c.mesh.gather = "layer"
  with pytest.raises(config_checks.ConfigError, match=r"mesh.gather=layer .* 'mlp'"):
    train.train_and_evaluate(c, str(tmp_path / "w"))
  c.mesh.gather = "block"
  with pytest.raises(config_checks.ConfigError, match=r"mesh.gather"):
    config_checks.validate(c)
  assert not (tmp_path / "w").exists()
