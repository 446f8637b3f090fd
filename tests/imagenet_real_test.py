"""ImageNet-ReaL: an image counts as correct when the prediction is among its real labels,
and images without a real label are left out."""

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import imagenet10_resnet50
from mpl_jax import evaluate
from mpl_jax import train
from mpl_jax.data import imagenet_stream


def test_real_accuracy_counts_by_hand_and_differs_from_top1():
  # Five classes; the last row is padding. Predictions: 2, 0, 4, 1, (3).
  logits = jnp.array([[0, 0, 9, 0, 0], [9, 0, 0, 0, 0], [0, 0, 0, 0, 9], [0, 9, 0, 0, 0],
                      [0, 0, 0, 9, 0]], jnp.float32)
  real = np.zeros((5, 5), np.uint8)
  real[0, [2, 3]] = 1  # predicted 2: correct
  real[1, [1]] = 1     # predicted 0, the original label, not a real one: wrong
  #    row 2 has no real label: left out
  real[3, [1, 4]] = 1  # predicted 1: correct
  real[4, [3]] = 1     # padding: left out
  original = np.array([2, 0, 4, 3, 3])
  mask = np.array([True, True, True, True, False])
  counts = evaluate.make_real_eval_fn(lambda p, ms, x: x)
  correct, counted = counts(None, None, logits, real, mask)
  assert (int(correct), int(counted)) == (2, 3)
  assert evaluate.real_accuracy(counts, None, None, [(logits, real, mask)]) == 2 / 3
  top1 = evaluate.accuracy(evaluate.make_eval_fn(lambda p, ms, x: x), None, None,
                           [(logits, original, mask)])["top1"]
  assert top1 == 3 / 4  # the original labels score this batch otherwise


@pytest.mark.slow
def test_imagenet_run_reports_real_accuracy_equal_to_a_count_by_hand(tmp_path):
  config = imagenet10_resnet50.get_config("mpl,runlocal")
  config.num_steps, config.finetune.num_steps = 2, 0
  config.print_progress = False
  with tfds.testing.mock_data(num_examples=64):
    result = train.train_and_evaluate(config, str(tmp_path))
    exp, state = result.experiment, result.state
    correct = counted = 0
    for x, real, mask in exp.dataset.eval_batches("real", 16):
      predicted = train.predict_numpy(exp, state.student.params, state.student.model_state,
                                      x).argmax(-1)
      keep = mask & real.any(axis=-1)
      correct += int(np.sum(keep & (real[np.arange(len(x)), predicted] > 0)))
      counted += int(np.sum(keep))
  assert counted > 0
  assert result.eval_metrics["test/student_real_accuracy"] == correct / counted
  assert "test/student_ema_real_accuracy" in result.eval_metrics


def test_real_labels_missing_is_one_warning_line(tmp_path, capsys):
  assert imagenet_stream.real_batches(str(tmp_path), 32, 1000) is None
  lines = [l for l in capsys.readouterr().out.splitlines() if l]
  assert len(lines) == 1 and lines[0].startswith("warning: ImageNet-ReaL accuracy skipped")
  assert "tfds build imagenet2012_real" in lines[0]
