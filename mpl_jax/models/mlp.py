"""The TwoMoon networks of the paper: small MLPs with sigmoid units (paper section 3.1)."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "sigmoid": nn.sigmoid,
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
}


def symmetric_uniform(scale: float):
  """Initializer drawing from U(-scale, scale) (the paper's TwoMoon init is U(-0.1, 0.1))."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-scale, maxval=scale)

  return init


class MLP(nn.Module):
  """Dense layers with one activation, then a linear head producing logits."""

  num_classes: int
  hidden: Sequence[int] = (8, 8)
  activation: str = "sigmoid"
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # No dropout or BatchNorm in these networks.
    init = symmetric_uniform(self.init_scale)
    act = ACTIVATIONS[self.activation]
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    for width in self.hidden:
      x = act(nn.Dense(width, kernel_init=init, bias_init=init)(x))
    return nn.Dense(self.num_classes, kernel_init=init, bias_init=init)(x)
