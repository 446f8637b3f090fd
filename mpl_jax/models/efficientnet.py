"""EfficientNet B0-B7, L2 and B6-Wide: the ImageNet networks of Meta Pseudo Labels.

MBConv blocks (1x1 expansion, depthwise k x k, squeeze-and-excite, 1x1 projection, each
convolution followed by BatchNorm, swish activations, an identity shortcut with optional
stochastic depth where the shape is kept), a 3x3 stride-2 stem, a 1x1 head convolution,
global average pooling, dropout and a dense classifier (Tan & Le, 2019).

Compound scaling: channel counts are the B0 counts times `width`, rounded to a multiple
of 8 (never more than 10% below the product); each stage repeats ceil(depth * repeats)
blocks. The published coefficients are in `VARIANTS`:

  variant   width  depth  resolution  dropout   parameters (1,000 classes)
  b0        1.0    1.0    224         0.2       5.3M
  b7        2.0    3.1    600         0.5       66M
  l2        4.3    5.3    800         0.5       480M  (Noisy Student; MPL trains at 512)
  b6_wide   5.0    2.6    528         0.5       317M  (see below)

B6-Wide is the MPL paper's second large network, "EfficientNet-B6 with the width factor
increased to 5.0", trained with L2's hyper-parameters. We take B6's depth (2.6) and
resolution with width 5.0; that counts 317M parameters, while leaderboards list the MPL
B6-Wide at 390M, so the paper's network differs in some detail it does not give (width
5.0 with depth 3.1 would count 398M). Treat `b6_wide` as our reading, not a replica.

Parameters and BatchNorm statistics are float32; `dtype` is the compute dtype. `remat`
recomputes each block's activations in the backward pass instead of storing them
(`nn.remat`), trading about one extra forward pass for memory. `scan_blocks` runs each
stage's repeated blocks as one `nn.scan`, so XLA compiles 14 distinct blocks instead of
L2's 88 (compile times: BENCHMARKS.md).

`param_gather` is FSDP per layer (`mpl_jax.sharding.layer_gather`): a function applied
to each block's parameters (and the stem's and head's) right before they are used, which
all-gathers them where the parameters arrive split over the mesh's model axis. Each such
block is rematerialized with a policy that saves everything but the gathered copies, so
the backward pass gathers them again instead of keeping every block's whole parameters
alive (with `remat` the whole block is recomputed, the gather included). `batch_layout`
(`mpl_jax.sharding.batch_layout`) pins every block's input, its convolutions' outputs
and the head's to the batch split, so XLA keeps each device on its own images instead of
following the split parameters into a split over channels.
"""

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mpl_jax import sharding
from mpl_jax.models import layers
from mpl_jax.models.layers import CONV_INIT, DENSE_INIT

# He-normal over fan-out for convolutions (the EfficientNet reference initializer);
# U(+-1/sqrt(fan_out)) for the dense layers.


def _depthwise_init(key, shape, dtype=jnp.float32):
  """N(0, 2 / (k * k)) for a (k, k, 1, C) depthwise kernel: fan-out of one channel."""
  fan_out = shape[0] * shape[1]
  return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / fan_out)


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One stage of B0: `repeats` MBConv blocks, the first with `stride`."""

  kernel: int
  stride: int
  expand_ratio: int
  channels: int
  repeats: int


# The B0 stages (stem 32 channels, head 1280); every variant scales these.
B0_STAGES = (
    StageSpec(kernel=3, stride=1, expand_ratio=1, channels=16, repeats=1),
    StageSpec(kernel=3, stride=2, expand_ratio=6, channels=24, repeats=2),
    StageSpec(kernel=5, stride=2, expand_ratio=6, channels=40, repeats=2),
    StageSpec(kernel=3, stride=2, expand_ratio=6, channels=80, repeats=3),
    StageSpec(kernel=5, stride=1, expand_ratio=6, channels=112, repeats=3),
    StageSpec(kernel=5, stride=2, expand_ratio=6, channels=192, repeats=4),
    StageSpec(kernel=3, stride=1, expand_ratio=6, channels=320, repeats=1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
SE_RATIO = 0.25  # squeeze width relative to the block's input channels


@dataclasses.dataclass(frozen=True)
class Variant:
  """Compound-scaling coefficients of one named network."""

  width: float
  depth: float
  resolution: int
  dropout_rate: float


VARIANTS = {
    "b0": Variant(1.0, 1.0, 224, 0.2),
    "b1": Variant(1.0, 1.1, 240, 0.2),
    "b2": Variant(1.1, 1.2, 260, 0.3),
    "b3": Variant(1.2, 1.4, 300, 0.3),
    "b4": Variant(1.4, 1.8, 380, 0.4),
    "b5": Variant(1.6, 2.2, 456, 0.4),
    "b6": Variant(1.8, 2.6, 528, 0.5),
    "b7": Variant(2.0, 3.1, 600, 0.5),
    "l2": Variant(4.3, 5.3, 800, 0.5),
    "b6_wide": Variant(5.0, 2.6, 528, 0.5),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
  """channels * width rounded to a multiple of `divisor`, at most 10% below the product."""
  scaled = channels * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
  return int(math.ceil(depth * repeats))


def swish(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(x)


class SqueezeExcite(nn.Module):
  """Channel gates from the pooled features: dense-swish-dense-sigmoid, times the input."""

  squeeze_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.Dense(self.squeeze_channels, kernel_init=CONV_INIT, dtype=self.dtype,
                 name="reduce")(pooled)
    s = nn.Dense(x.shape[-1], kernel_init=CONV_INIT, dtype=self.dtype,
                 name="expand")(swish(s))
    return x * jax.nn.sigmoid(s)


class MBConv(nn.Module):
  """Inverted residual: [1x1 expand-BN-swish], depthwise-BN-swish, SE, 1x1 project-BN.

  The shortcut is added when stride is 1 and channels are kept; in train mode with
  `stochastic_depth`, the residual branch is then dropped per example with probability
  `drop_rate` (a call argument, so that scanned blocks can each have their own) and
  rescaled by 1 / (1 - drop_rate) when kept.
  """

  out_channels: int
  kernel: int
  stride: int
  expand_ratio: int
  stochastic_depth: bool
  train: bool
  bn_momentum: float
  bn_epsilon: float
  dtype: Any = jnp.float32
  batch_layout: Callable[[jax.Array], jax.Array] | None = None  # see the module docstring

  @nn.compact
  def __call__(self, x: jax.Array, drop_rate: float | jax.Array = 0.0) -> jax.Array:
    norm = layers.batch_norm(self.train, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon, dtype=self.dtype)
    conv = layers.conv(self.dtype)
    pin = self.batch_layout or (lambda a: a)
    in_channels = x.shape[-1]
    hidden = in_channels * self.expand_ratio
    x = y = pin(x)
    if self.expand_ratio != 1:
      y = swish(norm(name="expand_bn")(pin(conv(hidden, (1, 1), name="expand_conv")(y))))
    y = pin(nn.Conv(hidden, (self.kernel, self.kernel), strides=self.stride,
                    feature_group_count=hidden, use_bias=False, kernel_init=_depthwise_init,
                    dtype=self.dtype, name="depthwise_conv")(y))
    y = swish(norm(name="depthwise_bn")(y))
    y = SqueezeExcite(max(1, int(in_channels * SE_RATIO)), dtype=self.dtype, name="se")(y)
    y = norm(name="project_bn")(pin(conv(self.out_channels, (1, 1), name="project_conv")(y)))
    if self.stride != 1 or in_channels != self.out_channels:
      return y
    if self.train and self.stochastic_depth:
      keep = 1.0 - drop_rate
      mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1, 1))
      y = y * mask.astype(y.dtype) / jnp.asarray(keep, y.dtype)
    return x + y


class _ScannedMBConv(MBConv):
  """MBConv with the (carry, per-block input) -> (carry, output) signature of nn.scan."""

  def __call__(self, x: jax.Array, drop_rate: jax.Array) -> tuple[jax.Array, None]:
    return super().__call__(x, drop_rate), None


class EfficientNet(nn.Module):
  """EfficientNet with compound scaling; the defaults are B0.

  Attributes:
    num_classes: size of the dense head.
    width: channel multiplier (B0: 1.0, B7: 2.0, L2: 4.3).
    depth: block-count multiplier (B0: 1.0, B7: 3.1, L2: 5.3).
    dropout_rate: dropout on the pooled features, before the head (train mode only).
    drop_connect_rate: stochastic depth rate of the last block; block i of n uses
      rate * i / n (0 turns it off).
    bn_momentum: BatchNorm decay of the running averages (MPL: 0.99).
    bn_epsilon: BatchNorm epsilon (1e-3).
    remat: recompute each block's activations in the backward pass (saves memory).
    scan_blocks: run the identical blocks of each stage (all but its first) as one
      `nn.scan` over stacked parameters. Same function and parameter count; compile time
      then grows with the number of stages, not blocks (L2 has 88 blocks in 7 stages).
      Parameters are named `stage_<s>_first` / `stage_<s>_rest` instead of `block_<i>`.
    dtype: compute dtype; parameters and BatchNorm statistics stay float32.
    param_gather: None, or FSDP's per-layer gather (see the module docstring).
    batch_layout: None, or FSDP's pin of activations to the batch split (the same).
  """

  num_classes: int
  width: float = 1.0
  depth: float = 1.0
  dropout_rate: float = 0.0
  drop_connect_rate: float = 0.0
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  remat: bool = False
  scan_blocks: bool = False
  dtype: Any = jnp.float32
  param_gather: Callable[[Any], Any] | None = None
  batch_layout: Callable[[jax.Array], jax.Array] | None = None

  def block_layout(self) -> list[tuple[int, StageSpec]]:
    """(output channels, stage spec) of every block in order."""
    return [(round_channels(s.channels, self.width), s)
            for s in B0_STAGES for _ in range(round_repeats(s.repeats, self.depth))]

  def _gathered(self, cls):
    """`cls` reading its parameters through `param_gather` (when there is one to apply)."""
    if self.param_gather is None or self.is_initializing():
      return cls
    return nn.map_variables(cls, "params", trans_in_fn=self.param_gather)

  def _block(self, cls, scanned: bool):
    """A block class: gathered, then rematerialized whole (`remat`) or, when gathered,
    with only its gathered parameters recomputed. Inside a scan, remat needs no CSE
    barrier: the loop already keeps XLA from merging the recomputation with the forward
    pass."""
    gathered = self._gathered(cls)
    if self.remat:
      return nn.remat(gathered, prevent_cse=not scanned)
    if gathered is cls:
      return cls
    return nn.remat(gathered, prevent_cse=not scanned,
                    policy=jax.checkpoint_policies.save_anything_except_these_names(
                        sharding.GATHERED))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    norm = layers.batch_norm(train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                             dtype=self.dtype, module=self._gathered(nn.BatchNorm))
    pin = self.batch_layout or (lambda a: a)
    x = pin(x.astype(self.dtype))
    x = self._gathered(nn.Conv)(
        round_channels(STEM_CHANNELS, self.width), (3, 3), strides=2, use_bias=False,
        kernel_init=CONV_INIT, dtype=self.dtype, name="stem")(x)
    x = swish(norm(name="stem_bn")(pin(x)))
    num_blocks = len(self.block_layout())
    block_cls = self._block(MBConv, scanned=False)
    index = 0  # blocks so far; block i drops its branch at rate drop_connect_rate * i / n
    for stage, spec in enumerate(B0_STAGES):
      channels = round_channels(spec.channels, self.width)
      repeats = round_repeats(spec.repeats, self.depth)
      kwargs = dict(out_channels=channels, kernel=spec.kernel,
                    expand_ratio=spec.expand_ratio,
                    stochastic_depth=self.drop_connect_rate > 0, train=train,
                    bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                    dtype=self.dtype, batch_layout=self.batch_layout)
      rates = [self.drop_connect_rate * (index + i) / num_blocks for i in range(repeats)]
      index += repeats
      if not self.scan_blocks:
        for i in range(repeats):
          x = block_cls(stride=spec.stride if i == 0 else 1,
                        name=f"block_{index - repeats + i + 1}", **kwargs)(x, rates[i])
        continue
      x = block_cls(stride=spec.stride, name=f"stage_{stage + 1}_first", **kwargs)(
          x, rates[0])
      if repeats > 1:
        scanned = nn.scan(self._block(_ScannedMBConv, scanned=True),
                          variable_axes={"params": 0, "batch_stats": 0},
                          split_rngs={"params": True, "dropout": True},
                          in_axes=0, length=repeats - 1)
        x, _ = scanned(stride=1, name=f"stage_{stage + 1}{sharding.STACKED_SUFFIX}",
                       **kwargs)(x, jnp.asarray(rates[1:], jnp.float32))
    x = self._gathered(nn.Conv)(
        round_channels(HEAD_CHANNELS, self.width), (1, 1), use_bias=False,
        kernel_init=CONV_INIT, dtype=self.dtype, name="head_conv")(x)
    x = swish(norm(name="head_bn")(pin(x)))
    x = pin(jnp.mean(x, axis=(1, 2)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = self._gathered(nn.Dense)(self.num_classes, kernel_init=DENSE_INIT, dtype=self.dtype,
                                 name="head")(x)
    return pin(x).astype(jnp.float32)


def from_variant(name: str, num_classes: int, **overrides: Any) -> EfficientNet:
  """The named variant's width, depth and dropout; `overrides` set any other field."""
  if name not in VARIANTS:
    raise ValueError(f"EfficientNet variant {name!r} is unknown; valid: {sorted(VARIANTS)}")
  v = VARIANTS[name]
  fields = {"width": v.width, "depth": v.depth, "dropout_rate": v.dropout_rate}
  fields.update(overrides)
  return EfficientNet(num_classes=num_classes, **fields)
