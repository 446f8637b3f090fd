"""What the image networks share: the official MPL code's initializers, BatchNorm and
bias-free convolutions in the compute dtype."""

import functools
from typing import Any

import flax.linen as nn

CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
DENSE_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


def batch_norm(train: bool, *, momentum: float, epsilon: float, dtype: Any,
               module: type[nn.Module] = nn.BatchNorm):
  """BatchNorm with batch statistics in train mode, running averages otherwise."""
  return functools.partial(module, use_running_average=not train, momentum=momentum,
                           epsilon=epsilon, dtype=dtype)


def conv(dtype: Any):
  """A bias-free convolution with the networks' He (fan-out) initializer."""
  return functools.partial(nn.Conv, use_bias=False, kernel_init=CONV_INIT, dtype=dtype)
