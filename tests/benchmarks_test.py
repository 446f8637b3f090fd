"""Smoke tests of the benchmark scripts: each runs one tiny case and prints good JSON.

They check that the scripts run and report what they promise, never a speed: the
benchmarks themselves are run by hand (BENCHMARKS.md). The subprocesses share a JAX
compilation cache and compile at XLA's lowest optimization level, to stay quick.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_WRN = ["--depth=10", "--width=1", "--labeled_batch=2", "--mu=1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = tmp_path_factory.mktemp("jax_cache")
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
              XLA_FLAGS="--xla_backend_optimization_level=0",
              JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _run(env, *args, timeout=600) -> list[dict]:
  """Runs `python -m args... --on_busy=run` in the repo root; returns its JSON lines.

  A smoke test must not wait for a quiet machine; its records then say they were not
  taken on one, which `_check_load` reads.
  """
  proc = subprocess.run([sys.executable, "-m", *args, "--on_busy=run"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [line for line in proc.stdout.splitlines() if line.strip()]
  assert lines, f"no output; stderr: {proc.stderr[-2000:]}"
  return [json.loads(line) for line in lines]  # every stdout line is one JSON record


def _check_load(record):
  """Every timed record carries the machine's load before and after the run."""
  load = record["load"]
  for when in ("before", "after"):
    assert len(load[when]["load_average"]) == 3
    assert isinstance(load[when]["busy_processes"], list)
  assert load["quiet"] == (load["before"]["quiet"] and not load["after"]["busy_processes"]
                           and not load["during"]["busy_processes"])


def test_step_bench_imports_no_tensorflow(env):
  # compare.py needs torch (the `bench` extra); without it only step_bench is checked.
  # Building a case reads its config file, which needs ml_collections (pure Python, so a
  # GPU machine without TensorFlow can have it); TensorFlow, tfds and clu stay out.
  modules = "benchmarks.step_bench" + (
      ", benchmarks.compare" if importlib.util.find_spec("torch") else "")
  code = (f"import sys, {modules}; from benchmarks import jax_case; "
          "jax_case.build_run(jax_case.Case(depth=10, width=1, labeled_batch=2, mu=1)); "
          "bad = sorted({m.split('.')[0] for m in sys.modules} & "
          "{'tensorflow', 'clu', 'tensorflow_datasets'}); "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)


def test_step_bench_reports_step_parts_and_ratios(env):
  (record,) = _run(env, "benchmarks.step_bench", *TINY_WRN, "--runs=1",
                   "--warmup=0")
  assert record["framework"] == "jax" and record["estimator"] == "reinforce"
  assert record["images_per_step"] == 2 * (1 + 2 * 1)
  assert set(record["parts"]) == {"teacher_forward_backward", "pseudo_labels",
                                  "student_and_feedback", "teacher_update_and_ema"}
  for key in ("step_time_s", "images_per_s", "step_flops", "parts_flops", "parts_time_s",
              "peak_memory_bytes"):
    assert record[key] > 0, key
  # The step does the parts' work and little else (a loose bound: this is a smoke test).
  assert 0.9 < record["flops_ratio"] < 1.2
  assert record["time_ratio"] > 0
  assert record["mfu"] is None  # no known peak for a CPU
  assert len(record["step_times_s"]) == record["runs"] == 1
  _check_load(record)


def test_torch_reference_runs_one_step(env):
  pytest.importorskip("torch")
  (record,) = _run(env, "benchmarks.torch_reference", *TINY_WRN, "--runs=1", "--warmup=0")
  assert record["framework"] == "torch" and record["device"]
  assert record["step_time_s"] > 0 and record["images_per_s"] > 0
  assert record["images_per_step"] == 6
  _check_load(record)


def test_torch_network_is_the_flax_network():
  """Same WRN-28-2: the same parameter count, tensor by tensor size."""
  torch = pytest.importorskip("torch")
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  from mpl_jax.models import wide_resnet  # pylint: disable=g-import-not-at-top

  module = wide_resnet.WideResNet(num_classes=10, depth=28, width=2)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  flax_sizes = sorted(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  net = torch_reference.WideResNet(28, 2)
  torch_sizes = sorted(p.numel() for p in net.parameters())
  assert torch_sizes == flax_sizes
  assert 1.4e6 < sum(torch_sizes) < 1.6e6  # WRN-28-2 with its 32-channel stem
  out = net.eval()(torch.zeros(2, 3, 32, 32))
  assert tuple(out.shape) == (2, 10)


def test_compare_prints_the_throughput_ratio(env):
  pytest.importorskip("torch")
  (record,) = _run(env, "benchmarks.compare", *TINY_WRN, "--rounds=2", "--warmup=0")
  assert len(record["round_ratios"]) == 2
  assert record["jax_over_torch_throughput"] > 0
  assert record["jax_step_time_s"] > 0 and record["torch_step_time_s"] > 0
  _check_load(record)


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, "mpl_jax", "data", "pipeline.py")),
                    reason="mpl_jax.data.pipeline is not there")
def test_pipeline_bench_both_sizes(env):
  records = _run(env, "benchmarks.pipeline_bench", "--size=cifar,imagenet",
                 "--labeled_batch=2", "--mu=1", "--batches=1", "--warmup=1", "--pool=4")
  assert [r["image_size"] for r in records] == [32, 224]
  for r in records:
    assert r["images_per_batch"] == 6 and r["images_per_s_per_core"] > 0
    assert r["keys"] == ["labeled_x", "labeled_y", "unlabeled_strong", "unlabeled_weak"]
    _check_load(r)


def test_gpu_script_parses():
  subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", "gpu_run.sh")], check=True)


def test_cpu_backend_flop_count_is_the_lowered_count():
  """The count `hlo_flops` falls back to off the CPU (a GPU's default backend counted 0)
  is the CPU's own count of the same lowered module."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import step_bench  # pylint: disable=g-import-not-at-top

  def loss(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()

  traced = jax.jit(jax.grad(loss)).trace(jnp.ones((4, 8, 8, 3)), jnp.ones((3, 3, 3, 5)))
  lowered = traced.lower(lowering_platforms=("cpu",))
  count = step_bench.flops(lowered)
  assert count > 0
  assert step_bench.cpu_flops(lowered) == count
  assert step_bench.hlo_flops(traced) == count


def test_profile_step_tells_the_three_convolutions_apart():
  """The JAX profile's classifier, on a strided convolution and both its gradients as
  XLA:CPU compiles them (with this suite's XLA options, those of main.py)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks import profile_gpu  # pylint: disable=g-import-not-at-top
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (2, 2), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def forward_and_back(x, k):
    y, back = jax.vjp(conv, x, k)
    return y, back(jnp.ones_like(y))

  text = jax.jit(forward_and_back).lower(jnp.ones((4, 8, 8, 3)), jnp.ones((3, 3, 3, 5))
                                         ).compile().as_text()
  kinds = profile_step.classify_hlo(text)
  convs = sorted(v for v in kinds.values() if v.startswith("conv_"))
  assert convs == ["conv_filter_grad", "conv_forward", "conv_input_grad"], kinds
  assert profile_gpu.conv_kind(
      "%c = f32[16,3,3,32]{3,2,1,0} convolution(%a, %b), window={size=32x32 pad=1_1x1_1}"
  ) == "conv_filter_grad"


def test_profile_step_and_ops_run_both_frameworks(env):
  pytest.importorskip("torch")
  (step,) = _run(env, "benchmarks.profile_step", *TINY_WRN, "--steps=1", "--warmup=0")
  assert step["jax"]["events_matched"] > 0 and step["jax"]["step_time_s"] > 0
  convs = step["jax"]["convolutions"]  # instructions of the compiled step, by kind
  assert set(convs) == {"conv_forward", "conv_input_grad", "conv_filter_grad"}, convs
  assert step["jax"]["kinds_thread_s"]["batch_norm_and_elementwise"] > 0
  assert step["torch"]["kinds_s"]["conv_forward"] > 0
  assert step["torch"]["kinds_s"]["conv_backward"] > 0
  _check_load(step)
  (ops,) = _run(env, "benchmarks.profile_ops", "--depth=10", "--width=1", "--images=2",
                "--rounds=1", "--warmup=0")
  # WRN-10-1: a stem, three blocks (two 3x3 convolutions each) and two 1x1 projections.
  assert sum(n for *_, n in ops["conv_shapes"]) == 1 + 3 * 2 + 2
  for kind in ("conv_forward", "conv_input_grad", "conv_filter_grad", "batch_norm",
               "update_and_ema", "network"):
    row = ops["kinds"][kind]
    assert row["jax"] > 0 and row["torch"] > 0 and row["jax_over_torch_throughput"] > 0
  _check_load(ops)


def test_run_times_counts_the_tests_of_both_pytest_parts():
  """`make test` prints two pytest summaries (the two workers' part, the serial part):
  the record sums their counts, leaves out 'deselected' and keeps each part's seconds."""
  from benchmarks import run_times  # pylint: disable=g-import-not-at-top
  output = ("bringing up nodes...\n.....s [100%]\n"
            "SKIPPED [1] tests/x_test.py:87: could not import 'torch'\n"
            "578 passed, 4 skipped, 1 warning in 407.94s (0:06:47)\n"
            "............ [100%]\n12 passed, 608 deselected in 100.70s (0:01:40)\n"
            "==== 1 failed, 2 passed, 3 warnings in 5.00s ====\n")
  assert run_times.pytest_summary(output) == {
      "tests": {"passed": 592, "skipped": 4, "warnings": 4, "failed": 1},
      "pytest_s": [407.94, 100.70, 5.0]}


@pytest.mark.slow  # two TwoMoon runs through main.py in fresh processes
def test_run_times_times_each_run_of_a_case(env):
  (record,) = _run(env, "benchmarks.run_times", "--cases=twomoon_mpl", "--runs=2",
                   "--main_args=--config.num_steps=10 --config.data.num_points=400")
  assert record["case"] == "twomoon_mpl" and len(record["wall_s"]) == 2
  assert min(record["wall_s"]) <= record["median_s"] <= max(record["wall_s"])
  assert "--config.num_steps=10" in record["command"]
  _check_load(record)


@pytest.mark.slow  # the notebook, start to end, in a fresh kernel
def test_notebook_times_records_each_cell(env):
  (record,) = _run(env, "benchmarks.notebook_times", "--setting=smoke", "--runs=1")
  assert record["setting"] == "smoke" and len(record["cell_s"]) == 1
  assert len(record["cell_s"][0]) >= 10 and all(s >= 0 for s in record["cell_s"][0])
  assert record["plots"] >= 5 and record["same_plots"]
  _check_load(record)
