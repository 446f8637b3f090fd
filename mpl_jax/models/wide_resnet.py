"""WRN-28-k, the CIFAR/SVHN network of Meta Pseudo Labels.

Follows the official MPL code's layout: pre-activation residual blocks with BatchNorm
then leaky ReLU (slope 0.2), a projection shortcut taken from the pre-activated input
where the shape changes, a final BN + activation + global average pool, and dropout
only before the dense head. Convolutions have no bias; kernels are He-normal over
fan-out and the head is U(-1/sqrt(classes), 1/sqrt(classes)), as in that code.

Inputs are expected already normalized by the input pipeline; they are only cast to
the compute dtype here.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mpl_jax.models import layers
from mpl_jax.models.layers import CONV_INIT, DENSE_INIT

# He-normal over fan-out for convolutions; U(+-1/sqrt(fan_out)) for the head.


class WideBlock(nn.Module):
  """Pre-activation block: BN-act-conv3x3(stride)-BN-act-conv3x3, plus the shortcut.

  When stride or channel count changes, the shortcut is a 1x1 convolution of the
  activated input (the same BN + activation the main branch starts with); otherwise
  it is the raw input.
  """

  channels: int
  stride: int
  norm: Any
  activation: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = layers.conv(self.dtype)
    project = self.stride != 1 or x.shape[-1] != self.channels
    activated = self.activation(self.norm(name="bn_1")(x))
    shortcut = activated if project else x
    y = conv(self.channels, (3, 3), strides=self.stride, name="conv_1")(activated)
    y = self.activation(self.norm(name="bn_2")(y))
    y = conv(self.channels, (3, 3), name="conv_2")(y)
    if project:
      shortcut = conv(self.channels, (1, 1), strides=self.stride,
                      name="shortcut")(shortcut)
    return y + shortcut


class WideResNet(nn.Module):
  """WRN-depth-width: three groups of (depth - 4) / 6 blocks at 16k, 32k, 64k channels.

  Attributes:
    num_classes: size of the dense head.
    depth: 6n + 4 (28 gives 4 blocks per group).
    width: the widening factor k.
    dropout_rate: dropout on the pooled features, before the head (train mode only).
    bn_momentum: BatchNorm decay of the running averages (MPL: 0.99).
    bn_epsilon: BatchNorm epsilon (MPL: 1e-3).
    leaky_slope: negative slope of the leaky ReLU (MPL: 0.2).
    stem_channels: output channels of the first 3x3 convolution. None means
      16 * width, as the official MPL code builds it; 16 gives the original WRN.
    dtype: compute dtype; parameters and BatchNorm statistics stay float32.
  """

  num_classes: int
  depth: int = 28
  width: int = 2
  dropout_rate: float = 0.0
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  leaky_slope: float = 0.2
  stem_channels: int | None = None
  dtype: Any = jnp.float32

  def __post_init__(self):
    # At construction, so that building the module from a config checks it.
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f"model.depth={self.depth} must be 6n + 4 with n >= 1 (28 for "
                       "WRN-28-k)")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    blocks_per_group = (self.depth - 4) // 6
    norm = layers.batch_norm(train, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, dtype=self.dtype)
    activation = functools.partial(nn.leaky_relu, negative_slope=self.leaky_slope)

    x = x.astype(self.dtype)
    stem = self.stem_channels or 16 * self.width
    x = nn.Conv(stem, (3, 3), use_bias=False, kernel_init=CONV_INIT, dtype=self.dtype,
                name="stem")(x)
    for group, (channels, stride) in enumerate(
        zip((16 * self.width, 32 * self.width, 64 * self.width), (1, 2, 2))):
      for block in range(blocks_per_group):
        x = WideBlock(channels=channels, stride=stride if block == 0 else 1, norm=norm,
                      activation=activation, dtype=self.dtype,
                      name=f"group_{group + 1}_block_{block + 1}")(x)
    x = activation(norm(name="final_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, kernel_init=DENSE_INIT, dtype=self.dtype,
                 name="head")(x)
    return x.astype(jnp.float32)
