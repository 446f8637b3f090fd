"""The vmapped multi-seed runner matches single runs; the demo writes its table and PNG."""

import jax
import numpy as np

from mpl_jax import demo
from mpl_jax import multiseed
from mpl_jax import train
from tests.helpers import assert_close_on_scale, tiny_config

# max|a - b| / max|b| (tests/helpers.py) of a vmapped seed against its single run: at least
# 10x the worst figure of tools/tolerance_survey.py over five XLA:CPU code paths
# (RELIABILITY.md, "Numerical tolerances"): 4.8e-7, each tensor.
TOL_VMAP = 1e-5


def test_multiseed_matches_single_runs(tmp_path):
  c = tiny_config("mpl")
  c.mesh.num_devices = 1
  result = multiseed.train_seeds(c, [3, 4])
  for i, seed in enumerate([3, 4]):
    c.seed = seed
    single = train.train_and_evaluate(c, str(tmp_path / str(seed)))
    seed_teacher = jax.tree.map(lambda x, i=i: x[i], result.states.teacher.params)
    assert_close_on_scale(jax.device_get(seed_teacher),
                          jax.device_get(single.state.teacher.params), TOL_VMAP,
                          f"seed {seed} teacher")
    assert abs(result.eval_metrics["eval/student_accuracy"][i] -
               single.eval_metrics["eval/student_accuracy"]) < 0.01
  assert result.history["mpl/reward"].shape == (4, 2)
  np.testing.assert_array_equal(result.eval_metrics["train/first_nonfinite_step"], [-1, -1])


def test_demo_prints_table_and_writes_png(tmp_path, capsys):
  results = demo.run(str(tmp_path), num_steps=30)
  out = capsys.readouterr().out
  for method in ("supervised", "pseudo_labels", "mpl"):
    assert method in out
  assert "feedback / supervised" in out and "median" in out
  png = tmp_path / "twomoon.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
  assert set(results) == {"supervised", "pseudo_labels", "mpl"}
