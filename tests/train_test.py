"""The loop: sharding equivalence, resume, checkpoints, config errors, non-finite stops."""

import json
import os

import jax
import numpy as np
import pytest

from mpl_jax import checkpointing
from mpl_jax import config_checks
from mpl_jax import experiment
from mpl_jax import train
from tests.helpers import assert_close_on_scale, flat_params, read_checkpoint, tiny_config

# max|a - b| / max|b| (tests/helpers.py) of one training on 1 and on 8 devices: at least
# 10x the worst figure of tools/tolerance_survey.py over five XLA:CPU code paths
# (RELIABILITY.md, "Numerical tolerances"): 6.5e-7, each tensor.
TOL_DEVICES = 1e-5


def test_eight_devices_match_one_device(tmp_path):
  assert jax.device_count() == 8
  c0 = tiny_config("mpl")
  init = experiment.build(c0).init_fn(jax.random.split(jax.random.key(c0.seed))[0])
  results = {}
  for n in (1, 8):
    c = tiny_config("mpl")
    c.num_steps = 20
    c.mesh.num_devices = n
    results[n] = train.train_and_evaluate(c, str(tmp_path / f"d{n}")).state
  for net in ("student", "teacher"):
    one = jax.device_get(getattr(results[1], net).params)
    eight = jax.device_get(getattr(results[8], net).params)
    assert not np.allclose(flat_params(one), flat_params(getattr(init, net).params))  # trained
    assert_close_on_scale(eight, one, TOL_DEVICES, f"{net} parameters")


def test_rerun_resumes_instead_of_restarting(tmp_path, capsys):
  c = tiny_config("mpl")
  c.print_progress = True
  first = train.train_and_evaluate(c, str(tmp_path))
  capsys.readouterr()
  c.num_steps = 60  # ask for more steps: the rerun continues from step 40
  second = train.train_and_evaluate(c, str(tmp_path))
  out = capsys.readouterr().out
  assert "resumed from step 40" in out
  assert "step 50/60" in out and "step 10/60" not in out
  assert int(second.state.step) == 60 and int(first.state.step) == 40


def test_interrupted_run_equals_uninterrupted(tmp_path):
  """Stopping after 20 steps and resuming for 20 more gives the 40-step state, with every
  piece of state in play: momentum, a cosine schedule with warmup and wait, the EMA and
  the reward baseline."""
  c = tiny_config("mpl")
  for net in (c.teacher, c.student):
    net.momentum, net.nesterov, net.schedule, net.warmup_steps = 0.9, True, "cosine", 5
    net.learning_rate = 0.1
  c.student.wait_steps = 3
  c.student.ema_decay = 0.9
  c.mpl.baseline_decay = 0.9
  straight = train.train_and_evaluate(c, str(tmp_path / "straight")).state
  c.faults.preempt_at_step = 16  # stops after 17 steps, between checkpoints
  assert train.train_and_evaluate(c, str(tmp_path / "split")).preempted
  c.faults.preempt_at_step = -1
  resumed = train.train_and_evaluate(c, str(tmp_path / "split")).state
  for net in ("student", "teacher"):
    np.testing.assert_array_equal(flat_params(getattr(resumed, net).params),
                                  flat_params(getattr(straight, net).params))
    np.testing.assert_array_equal(flat_params(getattr(resumed, net).opt_state),
                                  flat_params(getattr(straight, net).opt_state))
  np.testing.assert_array_equal(flat_params(resumed.student_ema.params),
                                flat_params(straight.student_ema.params))
  assert float(resumed.reward_baseline) == float(straight.reward_baseline) != 0.0


def test_pseudo_labels_phases(tmp_path):
  """Phase 1 moves only the teacher; phase 2 only the student, from its first step."""
  c = tiny_config("pseudo_labels")
  c.num_steps = 1
  c.checkpoint.every_steps = 20  # = teacher_steps: a checkpoint at the end of phase 1
  result = train.train_and_evaluate(c, str(tmp_path))
  init = result.experiment.init_fn(jax.random.split(jax.random.key(c.seed))[0])
  after_teacher = read_checkpoint(str(tmp_path), 20)
  np.testing.assert_array_equal(flat_params(after_teacher["student"]["params"]),
                                flat_params(init.student.params))
  assert not np.allclose(flat_params(after_teacher["teacher"]["params"]),
                         flat_params(init.teacher.params))
  np.testing.assert_array_equal(flat_params(result.state.teacher.params),
                                flat_params(after_teacher["teacher"]["params"]))
  assert not np.allclose(flat_params(result.state.student.params),
                         flat_params(init.student.params))  # its learning rate is not 0


@pytest.mark.parametrize("field,value,expected", [
    ("method", "mixmatch",
     "valid: ['supervised', 'pseudo_labels', 'uda', 'fixmatch', 'mpl', 'reduced_mpl']"),
    ("mpl.estimator", "reinforce_v2", "valid: ['reinforce', 'meta', 'off']"),
    ("mpl.reward", "difference", "valid: ['dot', 'taylor']"),
    ("model.name", "resnet9000", "valid: ['efficientnet', 'mlp', 'resnet', 'resnet50', 'wide_resnet']"),
    ("data.name", "threemoons", "valid: ['cifar10', 'digits', 'image_folder', "
     "'imagenet2012', 'svhn_cropped', 'tfds', 'twomoon']"),
    ("uda.threshold", 1.5, "must be in [0, 1]"),
])
def test_bad_names_and_values_fail_before_compute(tmp_path, field, value, expected):
  c = tiny_config("mpl")
  section, _, key = field.rpartition(".")
  (c[section] if section else c)[key] = value
  with pytest.raises(config_checks.ConfigError) as err:
    train.train_and_evaluate(c, str(tmp_path))
  assert expected in str(err.value) and field in str(err.value)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_meta_with_hard_labels_says_what_to_set(tmp_path):
  c = tiny_config("mpl")
  c.mpl.estimator = "meta"
  c.mpl.labels = "sample"
  with pytest.raises(config_checks.ConfigError, match="--config.mpl.labels=soft"):
    train.train_and_evaluate(c, str(tmp_path))


def test_batch_that_does_not_divide_by_devices(tmp_path):
  c = tiny_config("mpl")
  c.data.labeled_batch_size = 6
  with pytest.raises(ValueError, match=r"data.labeled_batch_size=6 does not divide by the 8 "
                                       r"devices.*multiple of 8"):
    train.train_and_evaluate(c, str(tmp_path))


def test_workdir_of_another_model_is_refused_and_untouched(tmp_path):
  c = tiny_config("mpl")
  c.num_steps = 20
  train.train_and_evaluate(c, str(tmp_path))
  before = sorted(os.listdir(tmp_path / "checkpoints"))
  other = tiny_config("mpl")
  other.model.hidden = (16, 16)
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=r"different experiment \(student/params/Dense_0/bias: "
                           r"float32\[8\] there, float32\[16\] in the config\)"):
    train.train_and_evaluate(other, str(tmp_path))
  sup = tiny_config("supervised")
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="method 'mpl' there"):
    train.train_and_evaluate(sup, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_non_finite_loss_stops_with_the_step(tmp_path):
  c = tiny_config("supervised")
  c.student.learning_rate = 1e30
  c.log_every_steps = 1
  c.checkpoint.every_steps = 1
  with pytest.raises(train.NonFiniteError,
                     match=r"non-finite .*student/param_norm.* at step 1 .*stopped, no checkpoint"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints" / "1")  # the bad state was not saved


def test_outputs_written(tmp_path):
  c = tiny_config("uda")
  result = train.train_and_evaluate(c, str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["eval/student_accuracy"] == pytest.approx(
      result.eval_metrics["eval/student_accuracy"])
  assert json.loads((tmp_path / "config.json").read_text())["method"] == "uda"
  assert any(f.startswith("events.out") for f in os.listdir(tmp_path / "tensorboard"))
  assert "uda/mask_rate" in result.history and "student/loss_uda" in result.history


def test_finetune_phase_trains_only_the_student_and_reports_before_and_after(tmp_path):
  c = tiny_config("mpl")
  c.finetune.num_steps = 10
  c.finetune.learning_rate = 0.05  # not the student's 0.5
  result = train.train_and_evaluate(c, str(tmp_path / "ft"))
  assert [p.name for p in result.experiment.phases] == ["mpl", "finetune"]
  assert result.history["student/learning_rate"][-1] == pytest.approx(0.05)
  assert int(result.state.step) == 50
  c.finetune.num_steps = 0
  plain = train.train_and_evaluate(c, str(tmp_path / "plain")).state  # the same 40 MPL steps
  np.testing.assert_array_equal(flat_params(result.state.teacher.params),
                                flat_params(plain.teacher.params))
  assert not np.allclose(flat_params(result.state.student.params),
                         flat_params(plain.student.params))
  saved = json.loads((tmp_path / "ft" / "results.json").read_text())
  before = saved["phase_ends"]["mpl"]
  assert before["step"] == 40
  plain_results = json.loads((tmp_path / "plain" / "results.json").read_text())
  assert before["eval/student_accuracy"] == plain_results["eval/student_accuracy"]
  assert plain_results["phase_ends"] == {}
