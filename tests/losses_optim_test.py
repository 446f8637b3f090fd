"""Losses, UDA, label smoothing, EMA and learning-rate schedules, checked against formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mpl_jax import losses
from mpl_jax import optim
from mpl_jax.state import EmaState, NetState, ema_update


def test_label_smoothing_formula():
  targets = losses.one_hot(jnp.array([2]), 4)
  np.testing.assert_allclose(losses.smooth(targets, 0.2), [[0.05, 0.05, 0.85, 0.05]], rtol=1e-6)


def test_cross_entropy_matches_its_definition():
  logits = jnp.array([[1.0, 2.0, 0.5]])
  q = jnp.array([[0.2, 0.5, 0.3]])
  expected = -np.sum(np.asarray(q) * np.log(np.asarray(jax.nn.softmax(logits))))
  assert float(losses.mean_cross_entropy(q, logits)) == pytest.approx(expected, rel=1e-6)


def test_uda_masks_unconfident_examples_and_stops_the_target_gradient():
  weak = jnp.array([[4.0, 0.0], [0.1, 0.0]])    # confident, unconfident
  strong = jnp.array([[0.0, 1.0], [0.0, 1.0]])
  loss, mask_rate = losses.uda_consistency(weak, strong, temperature=0.5, threshold=0.9)
  target = jax.nn.softmax(weak[0] / 0.5)
  expected = -np.sum(np.asarray(target) * np.asarray(jax.nn.log_softmax(strong[0]))) / 2
  assert float(mask_rate) == 0.5
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  grad_weak = jax.grad(lambda w: losses.uda_consistency(w, strong, temperature=0.5,
                                                        threshold=0.9)[0])(weak)
  np.testing.assert_array_equal(grad_weak, 0.0)


def test_ema_update_weights_old_by_decay():
  ema = EmaState(params={"w": jnp.array(1.0)}, model_state={})
  net = NetState(params={"w": jnp.array(3.0)}, model_state={}, opt_state=None)
  assert float(ema_update(ema, net, 0.9).params["w"]) == pytest.approx(1.2)


def test_schedule_waits_warms_up_and_decays_to_zero():
  cfg = {"learning_rate": 0.4, "wait_steps": 10, "warmup_steps": 10, "schedule": "cosine"}
  lr = optim.learning_rate_schedule(cfg, total_steps=120)
  values = [float(lr(s)) for s in (0, 9, 10, 14, 19, 20, 70, 119)]
  assert values[:2] == [0.0, 0.0]                     # waiting
  assert values[2] == pytest.approx(0.04)             # warmup: (s + 1) / 10 of the peak
  assert values[3] == pytest.approx(0.2)
  assert values[4] == pytest.approx(0.4)
  assert values[5] == pytest.approx(0.4)              # cosine starts at the peak
  assert values[6] == pytest.approx(0.2, rel=1e-4)    # halfway through the decay
  assert values[7] < 1e-3                             # ends near 0
  constant = optim.learning_rate_schedule({**cfg, "schedule": "constant"}, 120)
  assert float(constant(119)) == pytest.approx(0.4)


def test_weight_decay_skips_biases_and_clipping_applies():
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  tx, _ = optim.make_optimizer({"learning_rate": 1.0, "warmup_steps": 0,
                                "schedule": "constant", "weight_decay": 0.5,
                                "grad_clip_norm": 0.0}, 10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.5)  # unit-rate SGD step on 0.5 * w
  np.testing.assert_allclose(updates["bias"], 0.0)
  clip, _ = optim.make_optimizer({"learning_rate": 1.0, "warmup_steps": 0,
                                  "schedule": "constant", "grad_clip_norm": 1.0}, 10)
  big = jax.tree.map(lambda p: 10.0 * p, params)
  updates, _ = clip.update(big, clip.init(params), params)
  assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-5)
