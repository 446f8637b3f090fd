"""The project as a user installs it: a wheel that carries mpl_jax and configs, no torch.

The wheel is built from a copy of the package sources (the checkout stays untouched) and
installed, without dependencies, into a fresh folder that a subprocess puts first on its
path, from a working directory outside the checkout: what it imports comes from the
wheel, not from the checkout or its editable install.
"""

import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("mpl_jax", "configs", "setup.cfg", "pyproject.toml", "README.md")


def _config_modules() -> list[str]:
  return sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "configs"))
                if name.endswith(".py") and name not in ("__init__.py", "common.py"))


def test_wheel_ships_configs_and_runs_the_demo_outside_the_checkout(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for name in SOURCES:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(path, src / name)
  wheels = tmp_path / "wheels"
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                  "--no-build-isolation", "-w", str(wheels), str(src)],
                 check=True, capture_output=True, timeout=300)
  (wheel,) = wheels.glob("mpl_jax-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  assert {"mpl_jax/demo.py", "mpl_jax/train.py", "configs/__init__.py",
          "configs/common.py"} <= names
  assert {f"configs/{m}.py" for m in _config_modules()} <= names
  assert not any(n.startswith(("tests/", "benchmarks/", "experiments/")) for n in names)

  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                  str(site), str(wheel)], check=True, capture_output=True, timeout=300)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  code = f"""
import importlib, os
import configs, mpl_jax
from mpl_jax import demo
site = {str(site)!r}
for module in (configs, mpl_jax, demo):
  assert module.__file__.startswith(site), module.__file__
for name in {_config_modules()!r}:
  config = importlib.import_module("configs." + name).get_config()
  assert config.method, name
results = demo.run(os.path.join(os.getcwd(), "demo"), num_steps=4, methods=("mpl",))
assert 0 <= results["mpl"].eval_metrics["eval/student_accuracy"] <= 1
assert os.path.getsize("demo/twomoon.png") > 10000
print("installed package ok")
"""
  env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "installed package ok" in proc.stdout


def test_training_environment_installs_no_torch():
  """torch is the benchmarks' extra only: neither the lock of `make test`/`make demo` (and
  of launch/setup.sh) nor the package's requirements name it."""
  with open(os.path.join(ROOT, "requirements.lock")) as f:
    pinned = [line.split("==")[0].strip().lower() for line in f
              if line.strip() and not line.startswith("#")]
  assert "jax" in pinned and "torch" not in pinned
  with open(os.path.join(ROOT, "requirements-bench.lock")) as f:
    assert any(line.startswith("torch==") for line in f)
  with open(os.path.join(ROOT, "setup.cfg")) as f:
    text = f.read()
  install_requires = text.split("install_requires =")[1].split("\n\n")[0]
  assert "jax" in install_requires and "torch" not in install_requires


def _pins(name: str) -> dict[str, str]:
  with open(os.path.join(ROOT, name)) as f:
    return dict(line.strip().lower().replace("_", "-").split("==") for line in f
                if line.strip() and not line.startswith("#"))


def test_gpu_lock_pins_what_the_cpu_lock_pins_plus_cuda_wheels():
  """requirements-gpu.lock (`make venv-gpu`) is requirements.lock with JAX's CUDA plugin
  and NVIDIA's wheels added, at the same JAX: no package pinned differently."""
  cpu, gpu = _pins("requirements.lock"), _pins("requirements-gpu.lock")
  assert {name: gpu.get(name) for name in cpu} == cpu
  added = set(gpu) - set(cpu)
  assert added and all(n.startswith(("nvidia-", "jax-cuda")) for n in added), sorted(added)
  assert gpu["jax-cuda13-plugin"] == gpu["jax-cuda13-pjrt"] == cpu["jax"] == cpu["jaxlib"]
