"""The one place a step is compiled: for built networks and a mesh, the abstract inputs and
the jitted init, steps and evaluation that everything runs.

`mpl_jax.train` (the loop), `mpl_jax.multiseed` (seeds stacked under `jax.vmap`),
tools/aot_tpu.py (ahead of time, for a TPU topology) and benchmarks/ all take their
compiled step from `Compiled`, so what is compiled ahead of time or benchmarked is what
trains: the same step function, non-finite guard, shardings and donation.

- `abstract_state()` / `abstract_batch(labeled, unlabeled)` / `abstract_rng()`: shapes,
  dtypes and (with a mesh) shardings of the step's inputs, nothing allocated. The batch
  has the keys of every method: the images, and what the method's teacher reads besides
  (`methods.TeacherInput.batch_keys`).
- `init`: the jitted init, its state laid out as the mesh says (replicated, or FSDP).
- `step(phase)`: the phase's step, guarded (`guards.guard_step`), jitted with the state
  donated; `lower(phase, labeled, unlabeled)` lowers it on abstract inputs.
- `eval_counts(name)` / `real_counts(name)` / `predict(name)`: a network's evaluation
  (top-1 and top-5, ImageNet-ReaL, logits), with its own apply function
  (`networks.Networks.evaluated`).

Without a mesh (`mesh=None`) nothing is laid out: one device, as multiseed and the CPU
benchmarks run. With `seeds=S` the init, the steps and `predict` are vmapped over a
leading axis of S seeds.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mpl_jax import evaluate
from mpl_jax import guards
from mpl_jax import methods
from mpl_jax import networks
from mpl_jax import sharding
from mpl_jax.steps import common


@dataclasses.dataclass(frozen=True, eq=False)
class Compiled:
  """The compiled functions of one experiment's networks (`networks.Networks`).

  `mesh`: the device mesh the state and batch are laid out on (None: no layout);
  `skip_nonfinite`: the guard's choice (config.skip_nonfinite); `seeds`: vmap every
  function over this many stacked seeds (None: one run).
  """

  nets: networks.Networks
  mesh: jax.sharding.Mesh | None
  skip_nonfinite: bool
  seeds: int | None = None
  _jitted: dict = dataclasses.field(default_factory=dict, repr=False)

  def _once(self, key, make: Callable) -> Callable:
    """`make()`, jitted once per key and kept."""
    if key not in self._jitted:
      self._jitted[key] = make()
    return self._jitted[key]

  def _vmapped(self, fn: Callable) -> Callable:
    return fn if self.seeds is None else jax.vmap(fn)

  def _seeded(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if self.seeds is None else (self.seeds,) + shape

  # ---- Shardings. ----

  @functools.cached_property
  def state_sharding(self) -> Any:
    """The state's layout over the mesh (replicated, or FSDP over `model`); None without
    a mesh."""
    if self.mesh is None:
      return None
    abstract = jax.eval_shape(self.nets.init_fn, jax.random.key(0))
    return sharding.state_sharding(self.mesh, abstract)

  @property
  def batch_sharding(self):
    """Rows split over every device of the mesh; None without a mesh."""
    return None if self.mesh is None else sharding.batch_sharded(self.mesh)

  @property
  def replicated(self):
    return None if self.mesh is None else sharding.replicated(self.mesh)

  def _abstract(self, shape, dtype, layout) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=layout)

  # ---- Abstract inputs. ----

  def abstract_rng(self) -> jax.ShapeDtypeStruct:
    key = jax.eval_shape(lambda: jax.random.key(0))
    return self._abstract(self._seeded(key.shape), key.dtype, self.replicated)

  def abstract_state(self) -> Any:
    """The train state's shapes and dtypes, laid out as `init` makes it."""
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), self.seeds)
                          if self.seeds else jax.random.key(0))
    abstract = jax.eval_shape(self._vmapped(self.nets.init_fn), keys)
    if self.mesh is None:
      return abstract
    return jax.tree.map(lambda s, sh: self._abstract(s.shape, s.dtype, sh), abstract,
                        self.state_sharding)

  def abstract_batch(self, labeled: int, unlabeled: int, *, unlabeled_labels: bool = False
                     ) -> dict[str, jax.ShapeDtypeStruct]:
    """A global batch of `labeled` + `unlabeled` rows as the step reads it: normalized
    float32 images, int32 labels, and what the method's teacher reads besides the images;
    `unlabeled_labels` adds the true labels of the unlabeled rows (logged only)."""
    row = self.nets.spec.input_shape
    entries = {"labeled_x": ((labeled,) + row, jnp.float32),
               "labeled_y": ((labeled,), jnp.int32),
               "unlabeled_weak": ((unlabeled,) + row, jnp.float32),
               "unlabeled_strong": ((unlabeled,) + row, jnp.float32)}
    if unlabeled_labels:
      entries["unlabeled_y"] = ((unlabeled,), jnp.int32)
    teacher = self.nets.method.teacher or methods.IMAGES
    for name, (shape, dtype) in teacher.batch_keys(self.nets.spec).items():
      rows = labeled if name.startswith("teacher_labeled") else unlabeled
      entries[name] = ((rows,) + shape, dtype)
    return {name: self._abstract(self._seeded(shape), dtype, self.batch_sharding)
            for name, (shape, dtype) in entries.items()}

  # ---- Compiled functions. ----

  @functools.cached_property
  def init(self) -> Callable:
    """rng (one key, or one per seed) -> the initial train state, laid out."""
    if self.mesh is None:
      return jax.jit(self._vmapped(self.nets.init_fn))
    return jax.jit(self.nets.init_fn, out_shardings=self.state_sharding)

  def guarded(self, phase: methods.Phase) -> Callable:
    """The phase's step function inside the non-finite guard, not jitted."""
    return guards.guard_step(phase.step_fn, skip_nonfinite=self.skip_nonfinite)

  def step(self, phase: methods.Phase) -> Callable:
    """(state, batch, rng) -> (state, metrics), jitted once per phase, the state
    donated."""
    if self.mesh is None:
      make = lambda: jax.jit(self._vmapped(self.guarded(phase)), donate_argnums=(0,))
    else:
      make = lambda: jax.jit(
          self.guarded(phase),
          in_shardings=(self.state_sharding, self.batch_sharding, self.replicated),
          out_shardings=(self.state_sharding, self.replicated), donate_argnums=(0,))
    return self._once(("step", phase.name), make)

  def lower(self, phase: methods.Phase, labeled: int, unlabeled: int) -> Any:
    """The phase's step lowered on abstract inputs of a `labeled` + `unlabeled` batch."""
    return self.step(phase).lower(self.abstract_state(),
                                  self.abstract_batch(labeled, unlabeled), self.abstract_rng())

  def predict(self, name: str) -> Callable:
    """(params, model_state, inputs) -> eval-mode logits of network `name` (a TrainState
    field among `nets.evaluated`), with that network's apply function (one compile per
    apply function: networks of one architecture share it)."""
    apply = self.nets.evaluated[name]
    return self._once(("predict", apply), lambda: jax.jit(self._vmapped(
        functools.partial(common.predict, apply))))

  def real_counts(self, name: str) -> Callable:
    """(params, model_state, x, real, mask) -> ImageNet-ReaL (correct, counted) of
    network `name` (`evaluate.make_real_eval_fn`)."""
    apply = self.nets.evaluated[name]
    return self._once(("real", apply), lambda: evaluate.make_real_eval_fn(
        functools.partial(common.predict, apply)))

  def eval_counts(self, name: str) -> Callable:
    """(params, model_state, x, y, mask) -> (top-1, top-5, counted) of network `name`."""
    apply = self.nets.evaluated[name]
    return self._once(("eval", apply), lambda: evaluate.make_eval_fn(
        functools.partial(common.predict, apply)))
