"""Shared test helpers: tiny configs, reading checkpoints, running main.py, comparing two
float32 programs on the scale of their tensors."""

import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from configs import common
from configs import twomoon
from mpl_jax import methods
from mpl_jax import networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step_deps(student, teacher, num_classes: int, method: str = "mpl", **fields):
  """The StepDeps a run of `method` builds (`networks.step_deps`) for these networks, from
  the configs' defaults (configs/common.py) with `fields` written over them, by dotted
  name: step_deps(s, t, 3, **{"mpl.estimator": "meta", "label_smoothing": 0.1})."""
  config = common.base_config()
  config.method = method
  for field, value in fields.items():
    *sections, key = field.split(".")
    node = config
    for section in sections:
      node = node[section]
    assert key in node, f"the config has no field {field!r}"
    node[key] = value
  return networks.step_deps(config, methods.get(method), student, teacher, num_classes)


def tiny_config(method: str = "mpl"):
  """TwoMoon with few points and steps; batches divisible by 8 devices."""
  c = twomoon.get_config(method)
  c.num_steps = 40
  c.pseudo_labels.teacher_steps = 20
  c.log_every_steps = 10
  c.eval.every_steps = 20
  c.eval.batch_size = 400
  c.checkpoint.every_steps = 20
  c.print_progress = False
  c.data.num_points = 400
  c.data.labeled_batch_size = 8
  c.data.unlabeled_batch_size = 64
  c.mesh.num_devices = 0  # all 8 test devices
  c.teacher.learning_rate = 0.5
  c.student.learning_rate = 0.5
  return c


def flat_params(tree) -> np.ndarray:
  import jax  # pylint: disable=g-import-not-at-top
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def flat_tree(tree):
  """Every leaf of a pytree, raveled into one vector."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def cos_and_rel_error(a, b) -> tuple[float, float]:
  """Cosine of two pytrees as vectors, and |a - b| / |b|."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a, b = flat_tree(a), flat_tree(b)
  cos = float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
  return cos, float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


# Set by tools/tolerance_survey.py: every assert_close_on_scale appends what it measured.
TOLERANCE_LOG = "MPL_TOLERANCE_LOG"


def scaled_error(actual, desired, zero: float = 1e-5) -> float:
  """The worst over the leaves of two pytrees (or two arrays) of max|a - d| / scale.

  Each tensor's error is measured on its own scale, its largest |entry|: the rounding of a
  float32 sum is bounded by the size of its terms, not of its result, so a small entry of a
  large tensor may carry an error far above its own size. A tensor whose largest entry is
  below `zero` times the tree's largest is 0 in exact arithmetic and holds rounding only
  (the gradient of a bias that feeds training-mode BatchNorm: 1e-7 of the EfficientNet
  test's largest gradient, whose smallest real one is 2e-3 of it); it is measured on the
  tree's scale. The two trees must have the same structure and shapes.
  """
  import jax  # pylint: disable=g-import-not-at-top
  actual_flat, actual_tree = jax.tree_util.tree_flatten_with_path(actual)
  desired_flat, desired_tree = jax.tree_util.tree_flatten_with_path(desired)
  assert actual_tree == desired_tree, f"the trees differ: {actual_tree} and {desired_tree}"
  assert desired_flat, "nothing to compare"
  pairs = [(np.asarray(a, np.float64), np.asarray(d, np.float64))
           for (_, a), (_, d) in zip(actual_flat, desired_flat)]
  tree_scale = max(float(np.max(np.abs(d), initial=0.0)) for _, d in pairs)
  worst = 0.0
  for a, d in pairs:
    assert a.shape == d.shape, (a.shape, d.shape)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(d))):
      return float("inf")
    error = float(np.max(np.abs(a - d), initial=0.0))
    scale = float(np.max(np.abs(d), initial=0.0))
    if scale < zero * tree_scale:
      scale = tree_scale
    if error > 0.0:
      worst = max(worst, error / scale if scale > 0.0 else float("inf"))
  return worst


def assert_close_on_scale(actual, desired, tol: float, name: str = "") -> float:
  """Asserts scaled_error(actual, desired) <= tol; returns the measured error.

  For two float32 programs that compute one function with their operations in another order
  (remat, scan, sharding, micro-batches, processes, another CPU's vector width or
  convolution code): an element-wise rtol/atol pair fails on whichever small entry one
  machine's rounding happened to hit. Pass pytrees, not one raveled vector, so that each
  tensor is judged on its own scale. With MPL_TOLERANCE_LOG set, the measured error is
  also appended there, with the test and `name`, for tools/tolerance_survey.py.
  """
  error = scaled_error(actual, desired)
  log = os.environ.get(TOLERANCE_LOG)
  if log:
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    with open(log, "a", encoding="utf-8") as f:
      f.write(json.dumps({"test": test, "name": name, "error": error, "tol": tol}) + "\n")
  assert error <= tol, (f"{name or 'tensors'}: max|a - d| / max|d| = {error:.3g} "
                        f"exceeds {tol:.3g}")
  return error


def checkpoint_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return []
  return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def read_checkpoint(workdir: str, step: int | None = None):
  """The raw saved state (nested dicts of arrays) of a checkpoint, newest by default.

  Read onto this process's first device, whatever devices and processes wrote it.
  """
  import jax  # pylint: disable=g-import-not-at-top
  step = checkpoint_steps(workdir)[-1] if step is None else step
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path).item_metadata.tree)
  return checkpointer.restore(path, target)


def run_main(args, **kwargs) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300, **kwargs)
