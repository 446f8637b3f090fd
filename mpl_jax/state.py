"""Train state: the teacher, the student, the student's EMA and the step, as pytrees."""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

PyTree = Any
# (params, model_state, inputs, *, train, rng) -> (logits, new_model_state)
ApplyFn = Callable[..., tuple[jax.Array, PyTree]]


@flax.struct.dataclass
class NetState:
  """One network: parameters, mutable model state (e.g. BatchNorm stats), optimizer state."""

  params: PyTree
  model_state: PyTree
  opt_state: PyTree


@flax.struct.dataclass
class EmaState:
  """Exponential moving average of a network's parameters and model state."""

  params: PyTree
  model_state: PyTree


@flax.struct.dataclass
class TrainState:
  """Everything a run carries from step to step. `teacher` is None for one-network methods."""

  step: jax.Array
  student: NetState
  student_ema: EmaState
  teacher: NetState | None
  reward_baseline: jax.Array  # moving average of the MPL reward h (0 until used)
  skipped_steps: jax.Array  # updates skipped for non-finite values (skip_nonfinite)
  first_nonfinite_step: jax.Array  # first step with a non-finite metric; -1 if none


def initial_state(student: NetState, teacher: NetState | None) -> TrainState:
  """A run's state at step 0: the student's EMA starts as a copy of the student."""
  ema = EmaState(params=jax.tree.map(jnp.copy, student.params),
                 model_state=jax.tree.map(jnp.copy, student.model_state))
  return TrainState(step=jnp.zeros((), jnp.int32), student=student, student_ema=ema,
                    teacher=teacher, reward_baseline=jnp.zeros((), jnp.float32),
                    skipped_steps=jnp.zeros((), jnp.int32),
                    first_nonfinite_step=jnp.full((), -1, jnp.int32))


def make_apply(module: nn.Module) -> ApplyFn:
  """Wraps a Flax module as a pure (params, model_state, x) -> (logits, model_state) call.

  Non-parameter collections (BatchNorm statistics) are updated only in train mode; dropout
  draws from `rng`.
  """

  def apply(params, model_state, inputs, *, train: bool, rng: jax.Array | None = None):
    variables = {"params": params, **model_state}
    rngs = {"dropout": rng} if (train and rng is not None) else None
    if train and model_state:
      logits, new_state = module.apply(variables, inputs, train=True, rngs=rngs,
                                       mutable=list(model_state))
      return logits, dict(new_state)
    return module.apply(variables, inputs, train=train, rngs=rngs), model_state

  return apply


def init_net(module: nn.Module, tx: optax.GradientTransformation | None, rng: jax.Array,
             sample_input: jax.Array) -> NetState:
  """Initializes a network and its optimizer state."""
  variables = dict(module.init({"params": rng, "dropout": rng}, sample_input, train=False))
  params = variables.pop("params")
  opt_state = tx.init(params) if tx is not None else None
  return NetState(params=params, model_state=variables, opt_state=opt_state)


def ema_update(ema: EmaState, net: NetState, decay: float) -> EmaState:
  """ema <- decay * ema + (1 - decay) * current, for parameters and model state."""
  mix = lambda old, new: decay * old + (1.0 - decay) * new
  return EmaState(params=jax.tree.map(mix, ema.params, net.params),
                  model_state=jax.tree.map(mix, ema.model_state, net.model_state))


def tree_norm(tree: PyTree) -> jax.Array:
  """Global L2 norm of a pytree."""
  return optax.tree.norm(tree)


def tree_dot(a: PyTree, b: PyTree) -> jax.Array:
  """Sum of elementwise products of two pytrees of the same structure."""
  return optax.tree.vdot(a, b)
