"""ResNet-50 v1, the ImageNet-10% network of Meta Pseudo Labels.

Post-activation bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion), BN after every
convolution, ReLU, a projection shortcut (1x1 conv + BN) where the shape changes. As
in the official MPL code the stride sits on the 3x3 convolution (the layout often
called v1.5; parameter count is the same) and dropout comes before the dense head.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mpl_jax.models import layers
from mpl_jax.models.layers import CONV_INIT, DENSE_INIT

# He-normal over fan-out for convolutions; U(+-1/sqrt(fan_out)) for the head.


class Bottleneck(nn.Module):
  """conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1(4x)-BN, add shortcut, ReLU."""

  channels: int  # bottleneck width; the block outputs 4 * channels
  stride: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = layers.conv(self.dtype)
    out_channels = 4 * self.channels
    y = nn.relu(self.norm(name="bn_1")(conv(self.channels, (1, 1), name="conv_1")(x)))
    y = conv(self.channels, (3, 3), strides=self.stride, name="conv_2")(y)
    y = nn.relu(self.norm(name="bn_2")(y))
    y = self.norm(name="bn_3")(conv(out_channels, (1, 1), name="conv_3")(y))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_channels:
      shortcut = conv(out_channels, (1, 1), strides=self.stride, name="shortcut")(x)
      shortcut = self.norm(name="shortcut_bn")(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """Bottleneck ResNet; the defaults are ResNet-50 (stages of 3, 4, 6, 3 blocks).

  Attributes:
    num_classes: size of the dense head.
    stage_sizes: blocks per stage; stages 2-4 halve the resolution.
    base_width: bottleneck width of the first stage (doubles every stage).
    dropout_rate: dropout on the pooled features, before the head (train mode only).
    bn_momentum: BatchNorm decay of the running averages (MPL: 0.99).
    bn_epsilon: BatchNorm epsilon (MPL: 1e-3).
    dtype: compute dtype; parameters and BatchNorm statistics stay float32.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_width: int = 64
  dropout_rate: float = 0.0
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = layers.batch_norm(train, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, dtype=self.dtype)
    x = x.astype(self.dtype)
    x = nn.Conv(self.base_width, (7, 7), strides=2, use_bias=False,
                kernel_init=CONV_INIT, dtype=self.dtype, name="stem")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = Bottleneck(channels=self.base_width * 2**stage, stride=stride, norm=norm,
                       dtype=self.dtype, name=f"stage_{stage + 1}_block_{block + 1}")(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, kernel_init=DENSE_INIT, dtype=self.dtype,
                 name="head")(x)
    return x.astype(jnp.float32)
