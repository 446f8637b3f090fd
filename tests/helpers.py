"""Shared test helpers: tiny configs, reading checkpoints, running main.py."""

import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from configs import twomoon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
