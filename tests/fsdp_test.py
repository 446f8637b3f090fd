"""The mesh's model axis: FSDP-style sharding of parameters, optimizer state and EMA."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mpl_jax import config_checks
from mpl_jax import experiment
from mpl_jax import sharding
from mpl_jax import train
from tests.helpers import flat_params, tiny_config


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
    dp = flat_params(getattr(results[1].state, net).params)
    fsdp = flat_params(getattr(results[4].state, net).params)
    assert not np.allclose(dp, flat_params(getattr(init, net).params))
    np.testing.assert_allclose(fsdp, dp, rtol=1e-5, atol=1e-6)
  for key, value in results[1].eval_metrics.items():
    assert results[4].eval_metrics[key] == pytest.approx(value, abs=1e-6), key


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
    np.testing.assert_allclose(flat_params(getattr(resumed, net).params),
                               flat_params(getattr(straight, net).params),
                               rtol=1e-5, atol=1e-6)


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
