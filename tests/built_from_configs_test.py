"""The benchmark's step and the TPU compile take their settings from the config files:
edit a field in a copy of a config file and the built step carries the new value."""

import dataclasses
import importlib.util
import os

import jax
import numpy as np

from benchmarks import jax_case
from mpl_jax import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _edited_copy(tmp_path, name: str, *replacements: tuple[str, str]) -> str:
  with open(os.path.join(ROOT, "configs", name)) as f:
    source = f.read()
  for old, new in replacements:
    assert source.count(old) == 1, f"{name} no longer has {old!r}"
    source = source.replace(old, new)
  path = tmp_path / name
  path.write_text(source)
  return str(path)


def test_benchmark_step_runs_what_the_config_file_says(tmp_path):
  edited = _edited_copy(tmp_path, "cifar10_wrn28_2.py",
                        ("c.label_smoothing = 0.15", "c.label_smoothing = 0.4"),
                        ("c.uda.temperature = 0.7", "c.uda.temperature = 0.35"))
  base = jax_case.Case(depth=10, width=1, labeled_batch=2, mu=1, image_size=8)
  cases = {"file": base, "edited": dataclasses.replace(base, config=edited + ":mpl")}
  runs = {name: jax_case.build_run(case) for name, case in cases.items()}
  deps = {name: run.nets.deps for name, run in runs.items()}
  assert (deps["file"].label_smoothing, deps["file"].uda.temperature) == (0.15, 0.7)
  assert (deps["edited"].label_smoothing, deps["edited"].uda.temperature) == (0.4, 0.35)
  # The benchmark's compiled step computes with them: the same state and batch give another
  # supervised loss of the teacher (its targets are smoothed by label_smoothing).
  losses = {}
  for name, case in cases.items():
    run = runs[name]
    state = jax_case.init_state(run)
    _, metrics = jax_case.step(run)(state, jax_case.make_batch(case, run), jax.random.key(0))
    losses[name] = float(metrics["teacher/loss_labeled"])
  assert np.isfinite(list(losses.values())).all()
  assert abs(losses["file"] - losses["edited"]) > 1e-3, losses


def _aot_tpu():
  spec = importlib.util.spec_from_file_location("aot_tpu", os.path.join(ROOT, "tools",
                                                                         "aot_tpu.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_tpu_compile_builds_the_flagship_config(tmp_path):
  aot = _aot_tpu()
  edited = _edited_copy(tmp_path, "imagenet_efficientnet_l2.py",
                        ("c.uda.temperature = 0.5", "c.uda.temperature = 0.25"),
                        ("c.model.width = 0.25", "c.model.width = 0.5"))
  mesh = sharding.make_mesh(num_devices=1, model_axis=1)
  sizes, temperatures = {}, {}
  for name, path in (("file", aot.FLAGSHIP), ("edited", edited)):
    config = aot.flagship_config(path + ":runlocal", resolution=32)
    run = aot.build_run(config, mesh)
    temperatures[name] = run.nets.deps.uda.temperature
    sizes[name] = sum(x.size for x in jax.tree.leaves(run.abstract_state().student.params))
    assert aot.find_phase(run, None).name == "mpl" and run.nets.deps.num_classes == 1000
  assert temperatures == {"file": 0.5, "edited": 0.25}
  assert sizes["edited"] > 1.5 * sizes["file"], sizes  # a wider network
