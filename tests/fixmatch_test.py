"""FixMatch: its loss against a reference written out here, its step's update, its runs
through main's entry point, and its learning-rate schedule."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags

from mpl_jax import losses
from mpl_jax import optim
from mpl_jax import plots
from mpl_jax.models import mlp
from mpl_jax.state import NetState, initial_state, make_apply
from mpl_jax.steps import baselines
from mpl_jax.steps import settings as step_settings
from tests.helpers import assert_close_on_scale, run_main, step_deps

# A float32 loss and gradient against the same sums written out in another order: at
# least 10x above float32 rounding of these few terms (about 1e-7 of their scale).
TOL = 1e-5


def _ce(logits: np.ndarray, label: int) -> float:
  """-log softmax(logits)[label], in float64."""
  logits = np.asarray(logits, np.float64)
  return float(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[label])


def test_loss_on_a_hand_made_batch():
  """Four unlabeled rows, two confident (softmax max >= 0.95 on the weak view) and two not:
  the loss is the CE of the confident rows' argmax on their strong view, divided by all
  four rows; the others add nothing; no gradient reaches the weak view."""
  weak = jnp.array([[0.0, 0.0, 5.0],     # p = 0.987 for class 2: kept
                    [1.0, 0.5, 0.0],     # p = 0.51: masked
                    [6.0, 1.0, 0.0],     # p = 0.991 for class 0: kept
                    [2.0, 2.0, -1.0]])   # p = 0.49: masked
  strong = jnp.array([[0.3, -0.2, 0.1], [2.0, 0.0, -3.0], [-1.0, 0.4, 0.7],
                      [0.0, 1.0, 0.0]])
  loss, mask, labels = losses.fixmatch_consistency(weak, strong, threshold=0.95)
  expected = (_ce(strong[0], 2) + _ce(strong[2], 0)) / 4  # the mean over all 4 rows
  assert float(loss) == pytest.approx(expected, rel=TOL)
  assert list(np.asarray(mask)) == [1.0, 0.0, 1.0, 0.0]
  assert list(np.asarray(labels)[[0, 2]]) == [2, 0]

  d_weak, d_strong = jax.grad(lambda w, s: losses.fixmatch_consistency(
      w, s, threshold=0.95)[0], argnums=(0, 1))(weak, strong)
  # The weak view only chooses labels and the mask. Its argmax and threshold carry no
  # gradient by themselves; this fails if its probabilities ever enter the loss (soft
  # targets, or a confidence weight) without the stop-gradient.
  np.testing.assert_array_equal(np.asarray(d_weak), 0.0)
  np.testing.assert_array_equal(np.asarray(d_strong)[[1, 3]], 0.0)  # masked rows add nothing
  for row, label in ((0, 2), (2, 0)):
    want = (np.asarray(jax.nn.softmax(strong[row])) - np.eye(3)[label]) / 4
    assert_close_on_scale(np.asarray(d_strong)[row], want, TOL, f"row {row}")
  # A threshold no row reaches: no unlabeled loss at all.
  assert float(losses.fixmatch_consistency(weak, strong, threshold=0.999)[0]) == 0.0


def test_step_updates_with_supervised_plus_weighted_unlabeled_gradient():
  """One FixMatch step of a linear network with plain SGD (lr 1): the update is minus the
  gradient of CE(labeled) + lambda_u * mean(mask * CE(y_hat, strong)), with the mask and
  y_hat taken as constants from the weak view (computed here beforehand)."""
  module = mlp.MLP(num_classes=3, hidden=(), init_scale=1.0)
  keys = jax.random.split(jax.random.key(0), 5)
  params = module.init(keys[0], jnp.zeros((1, 4)))["params"]
  weak = 2.0 * jax.random.normal(keys[1], (6, 4))
  batch = {"labeled_x": jax.random.normal(keys[2], (3, 4)),
           "labeled_y": jnp.array([0, 2, 1]), "unlabeled_weak": weak,
           "unlabeled_strong": weak + 0.3 * jax.random.normal(keys[3], (6, 4))}
  network = step_settings.Network(make_apply(module), optax.sgd(1.0),
                                  lambda step: jnp.asarray(1.0))
  deps = step_deps(network, None, 3, method="fixmatch",
                   **{"fixmatch.threshold": 0.7, "fixmatch.weight": 2.0})
  state = initial_state(NetState(params, {}, network.tx.init(params)), None)
  new_state, metrics = baselines.fixmatch_step(state, batch, jax.random.key(1), deps=deps)

  probs = np.asarray(jax.nn.softmax(module.apply({"params": params}, weak)))
  mask, labels = (probs.max(-1) >= 0.7).astype(np.float32), probs.argmax(-1)
  assert 0 < mask.sum() < len(mask), "the case must keep some rows and drop others"

  def reference(p):
    logits_l = module.apply({"params": p}, batch["labeled_x"])
    logits_s = module.apply({"params": p}, batch["unlabeled_strong"])
    sup = losses.mean_cross_entropy(losses.one_hot(batch["labeled_y"], 3), logits_l)
    unsup = jnp.mean(mask * losses.cross_entropy(losses.one_hot(labels, 3), logits_s))
    return sup + 2.0 * unsup

  grads = jax.grad(reference)(params)
  expected = jax.tree.map(lambda p, g: p - g, params, grads)
  assert_close_on_scale(jax.device_get(new_state.student.params), jax.device_get(expected),
                        TOL, "params")
  assert float(metrics["fixmatch/mask_rate"]) == pytest.approx(mask.mean())


def test_fixmatch_trains_through_main_on_digits(tmp_path):
  result = run_main(["--config=configs/digits.py:fixmatch,runlocal", f"--workdir={tmp_path}",
                     "--config.print_progress=False"])
  assert result.returncode == 0, result.stderr[-2000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["method"] == "fixmatch" and "test/student_ema_accuracy" in results
  logged = plots.read_scalars(str(tmp_path))
  for tag in ("fixmatch/mask_rate", "pseudo_labels/accuracy",
              "fixmatch/pseudo_label_accuracy_kept", "student/loss_unlabeled"):
    steps, values = logged[tag]
    assert len(steps) and np.isfinite(values).all(), tag
  assert 0.0 <= logged["pseudo_labels/accuracy"][1].min() <= 1.0


@pytest.mark.slow  # a mock CIFAR-10 builder through main (digits' run stays in make test)
def test_fixmatch_trains_through_main_on_mock_cifar10(tmp_path):
  """main's entry point in this process: tfds's mock data does not reach a subprocess."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import main  # pylint: disable=g-import-not-at-top
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["main.py", "--config=configs/cifar10_wrn28_2.py:fixmatch,runlocal",
               f"--workdir={tmp_path}"])
  try:
    with tfds.testing.mock_data(num_examples=200):
      main.main([])
  finally:
    flags.FLAGS.unparse_flags()
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["method"] == "fixmatch" and config["student"]["schedule"] == "fixmatch_cosine"
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["step"] == 4 and 0.0 <= results["test/student_ema_accuracy"] <= 1.0
  assert "fixmatch/mask_rate" in plots.read_scalars(str(tmp_path))


def test_fixmatch_cosine_schedule_at_0_half_and_end():
  """lr * cos(7 pi k / 16 K): lr at 0, lr cos(7 pi / 32) at K/2, lr cos(7 pi / 16) at K."""
  total = 1000
  schedule = optim.learning_rate_schedule(
      {"learning_rate": 0.03, "warmup_steps": 0, "schedule": "fixmatch_cosine"}, total)
  assert float(schedule(0)) == pytest.approx(0.03, rel=1e-6)
  assert float(schedule(total // 2)) == pytest.approx(0.03 * math.cos(7 * math.pi / 32),
                                                      rel=1e-6)
  assert float(schedule(total)) == pytest.approx(0.03 * math.cos(7 * math.pi / 16), rel=1e-6)
  assert float(schedule(total)) == pytest.approx(0.00585, abs=1e-5)  # 0.195 of lr, not 0
