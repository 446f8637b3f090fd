"""The scale-aware comparison that every reordered-program test uses, and the survey that
measures what its tolerances must allow."""

import json
import os
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, TOLERANCE_LOG, assert_close_on_scale, scaled_error

sys.path.insert(0, os.path.join(ROOT, "tools"))
import tolerance_survey  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_a_small_entry_of_a_large_tensor_is_judged_on_the_tensors_scale():
  """The comparison that failed on another CPU: an entry of 0.0054 off by 2.1e-5 in a
  gradient whose largest entry is 20.9 is rounding (1e-6 of the scale), not an error."""
  desired = np.array([20.86191, -12.97422, 0.005421757])
  actual = np.array([20.86191, -12.97422, 0.005400419])
  with pytest.raises(AssertionError):  # element-wise, as before
    np.testing.assert_allclose(actual, desired, rtol=1e-4, atol=2e-5)
  assert scaled_error(actual, desired) == pytest.approx(2.1338e-5 / 20.86191, rel=1e-3)
  assert_close_on_scale(actual, desired, 1e-5)


def test_each_tensor_of_a_tree_has_its_own_scale():
  """A 1% error in a small tensor fails although it is tiny next to the tree's largest."""
  desired = {"kernel": np.full((3, 3), 80.0), "bias": np.array([0.2, -0.1])}
  actual = {"kernel": desired["kernel"], "bias": desired["bias"] * 1.01}
  assert scaled_error(actual, desired) == pytest.approx(0.01)
  with pytest.raises(AssertionError, match="bias|tensors"):
    assert_close_on_scale(actual, desired, 1e-3, "bias")


def test_a_tensor_that_is_zero_in_exact_arithmetic_is_judged_on_the_trees_scale():
  """A bias feeding BatchNorm: both programs give rounding of 1e-7 of the tree's scale;
  on its own (noise) scale it would be off by 100%, on the tree's by 7e-8. A real but small
  tensor (above 1e-5 of the tree's largest) keeps its own scale."""
  desired = {"kernel": np.array([84.0, -3.0]), "bias": np.array([3e-6, -1e-6]),
             "small": np.array([0.01, 0.002])}
  actual = {"kernel": desired["kernel"], "bias": np.array([-3e-6, 2e-6]),
            "small": desired["small"]}
  assert scaled_error(actual, desired, zero=0.0) == pytest.approx(2.0)
  assert scaled_error(actual, desired) == pytest.approx(6e-6 / 84.0)
  actual["small"] = desired["small"] * 1.001
  assert scaled_error(actual, desired) == pytest.approx(1e-3)


def test_non_finite_values_mismatched_trees_and_shapes_fail():
  assert scaled_error(np.array([1.0, np.nan]), np.array([1.0, 2.0])) == float("inf")
  with pytest.raises(AssertionError):
    assert_close_on_scale(np.array([1.0, np.inf]), np.array([1.0, 2.0]), 1.0)
  with pytest.raises(AssertionError):
    scaled_error({"a": np.zeros(2)}, {"a": np.zeros(2), "b": np.zeros(2)})
  with pytest.raises(AssertionError, match="trees differ"):  # same leaf count, other names
    scaled_error({"a": np.zeros(2)}, {"b": np.zeros(2)})
  with pytest.raises(AssertionError):  # no broadcasting
    scaled_error(np.zeros(3), np.zeros(1))
  assert scaled_error(np.zeros(3), np.zeros(3)) == 0.0  # equal zeros are equal
  assert scaled_error(np.array([0.0, 1e-9]), np.zeros(2)) == float("inf")  # nothing is 0


def test_the_measured_error_is_logged_for_the_survey(tmp_path, monkeypatch):
  log = tmp_path / "errors.jsonl"
  monkeypatch.setenv(TOLERANCE_LOG, str(log))
  assert_close_on_scale(np.array([2.0, 1.0]), np.array([2.0, 1.001]), 1e-3, "x")
  [record] = [json.loads(line) for line in log.read_text().splitlines()]
  assert record["name"] == "x" and record["tol"] == 1e-3
  assert record["error"] == pytest.approx(0.0005)
  assert record["test"].endswith("test_the_measured_error_is_logged_for_the_survey")


def test_the_survey_finds_every_test_that_compares_directly_or_through_a_helper():
  node_ids = tolerance_survey.tests_that_compare(tolerance_survey.ROOT / "tests")
  assert "tests/efficientnet_test.py::test_remat_gives_the_same_loss_and_gradients" in node_ids
  # accumulation_test's tests reach the helper through its _compare
  assert "tests/accumulation_test.py::test_micro_batches_equal_the_large_batch" in node_ids
  assert "tests/multihost_test.py::test_two_processes_match_one_and_share_checkpoints" in node_ids
  assert not any("tolerances_test" in n for n in node_ids)  # this file tests the helper
  assert not any("launch_test" in n for n in node_ids)


def test_survey_table_shows_the_worst_of_each_variant_and_the_margin():
  runs = [{"variant": "a", "returncode": 0, "summary": "", "records": [
              {"test": "tests/x_test.py::test_y", "name": "p", "error": 1e-7, "tol": 1e-5},
              {"test": "tests/x_test.py::test_y", "name": "q", "error": 2e-7, "tol": 1e-5}]},
          {"variant": "b", "returncode": 1, "summary": "1 failed", "records": [
              {"test": "tests/x_test.py::test_y", "name": "p", "error": 5e-7, "tol": 1e-5}]}]
  lines = tolerance_survey.table(runs).splitlines()
  assert lines[2] == "| x_test.py::test_y | 2.0e-07 | 5.0e-07 | 1e-05 | 20x |"
  assert lines[-1] == "- b: 1 failed"
