"""Reduced MPL's teacher: a small network on top of a frozen large teacher's logits."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ReducedTeacher(nn.Module):
  """A residual MLP from the large teacher's logits to calibrated logits.

  logits -> logits + Dense(ReLU(Dense(...(logits)))). The last layer starts at zero, so at
  initialization the reduced teacher passes the large teacher's logits through unchanged
  and MPL's feedback then moves it away from that identity map.
  """

  num_classes: int
  hidden: Sequence[int] = (128,)

  @nn.compact
  def __call__(self, logits: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or BatchNorm
    x = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    h = x
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    correction = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                          bias_init=nn.initializers.zeros)(h)
    return x + correction
