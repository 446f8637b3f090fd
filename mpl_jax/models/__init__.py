"""Model registry: config names -> Flax modules built from a model config section."""

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp

from mpl_jax.models import efficientnet
from mpl_jax.models import mlp
from mpl_jax.models import resnet
from mpl_jax.models import wide_resnet

# Compute dtypes a config may name; parameters always stay float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _check_fields(cfg: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
  """Fails on missing or unknown fields of a model section, naming the valid ones."""
  name = cfg["name"]
  present = set(cfg.keys()) - {"name"}
  missing = required - present
  if missing:
    raise ValueError(f"model {name!r} needs fields {sorted(missing)}; it takes "
                     f"{sorted(required)} and optionally {sorted(optional)}")
  unknown = present - required - optional
  if unknown:
    raise ValueError(f"model {name!r} has unknown fields {sorted(unknown)}; valid: "
                     f"{sorted(required | optional)}")


def _dtype(cfg: Mapping[str, Any]) -> Any:
  name = cfg.get("dtype", "float32")
  if name not in DTYPES:
    raise ValueError(f"model.dtype={name!r} is unknown; valid: {sorted(DTYPES)}")
  return DTYPES[name]


def _check_rates(cfg: Mapping[str, Any]) -> None:
  if not 0.0 <= cfg["dropout_rate"] < 1.0:
    raise ValueError(f"model.dropout_rate={cfg['dropout_rate']} must be in [0, 1)")
  if not 0.0 <= cfg["bn_momentum"] < 1.0:
    raise ValueError(f"model.bn_momentum={cfg['bn_momentum']} must be in [0, 1) "
                     "(it is the decay of the running averages; MPL uses 0.99)")


def _build_mlp(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  if cfg["activation"] not in mlp.ACTIVATIONS:
    raise ValueError(f"model.activation={cfg['activation']!r} is unknown; valid: "
                     f"{sorted(mlp.ACTIVATIONS)}")
  return mlp.MLP(num_classes=num_classes, hidden=tuple(cfg["hidden"]),
                 activation=cfg["activation"], init_scale=cfg["init_scale"])


def _build_wide_resnet(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  _check_fields(cfg, {"depth", "width", "dropout_rate", "bn_momentum"}, {"dtype"})
  depth, width = cfg["depth"], cfg["width"]
  if width < 1 or int(width) != width:
    raise ValueError(f"model.width={width} must be a positive integer")
  _check_rates(cfg)
  return wide_resnet.WideResNet(
      num_classes=num_classes, depth=int(depth), width=int(width),
      dropout_rate=float(cfg["dropout_rate"]), bn_momentum=float(cfg["bn_momentum"]),
      dtype=_dtype(cfg))


def _build_resnet50(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  _check_fields(cfg, {"dropout_rate", "bn_momentum"}, {"dtype"})
  _check_rates(cfg)
  return resnet.ResNet(
      num_classes=num_classes, stage_sizes=(3, 4, 6, 3),
      dropout_rate=float(cfg["dropout_rate"]), bn_momentum=float(cfg["bn_momentum"]),
      dtype=_dtype(cfg))


def _build_resnet(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  """A bottleneck ResNet v1 of any depth (small ones for tests and :runlocal configs)."""
  _check_fields(cfg, {"stage_sizes", "width", "dropout_rate", "bn_momentum"}, {"dtype"})
  stages = tuple(int(n) for n in cfg["stage_sizes"])
  if not stages or min(stages) < 1:
    raise ValueError(f"model.stage_sizes={cfg['stage_sizes']} must be blocks per stage, "
                     "each >= 1 (ResNet-50: (3, 4, 6, 3))")
  if int(cfg["width"]) < 1:
    raise ValueError(f"model.width={cfg['width']} must be >= 1 (ResNet-50: 64)")
  _check_rates(cfg)
  return resnet.ResNet(
      num_classes=num_classes, stage_sizes=stages, base_width=int(cfg["width"]),
      dropout_rate=float(cfg["dropout_rate"]), bn_momentum=float(cfg["bn_momentum"]),
      dtype=_dtype(cfg))


def _build_efficientnet(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  """EfficientNet `variant` (b0..b7, l2, b6_wide); width/depth override its coefficients."""
  _check_fields(cfg, {"variant", "dropout_rate", "bn_momentum"},
                {"dtype", "drop_connect_rate", "remat", "scan_blocks", "width", "depth"})
  if cfg["variant"] not in efficientnet.VARIANTS:
    raise ValueError(f"model.variant={cfg['variant']!r} is unknown; valid: "
                     f"{sorted(efficientnet.VARIANTS)}")
  _check_rates(cfg)
  if not 0.0 <= cfg.get("drop_connect_rate", 0.0) < 1.0:
    raise ValueError(f"model.drop_connect_rate={cfg['drop_connect_rate']} must be in [0, 1)")
  overrides = {}
  for field in ("width", "depth"):
    if field in cfg:
      if not cfg[field] > 0:
        raise ValueError(f"model.{field}={cfg[field]} must be > 0")
      overrides[field] = float(cfg[field])
  return efficientnet.from_variant(
      cfg["variant"], num_classes, dropout_rate=float(cfg["dropout_rate"]),
      bn_momentum=float(cfg["bn_momentum"]),
      drop_connect_rate=float(cfg.get("drop_connect_rate", 0.0)),
      remat=bool(cfg.get("remat", False)), scan_blocks=bool(cfg.get("scan_blocks", False)),
      dtype=_dtype(cfg), **overrides)


MODELS: dict[str, Callable[[Mapping[str, Any], int], nn.Module]] = {
    "mlp": _build_mlp,
    "wide_resnet": _build_wide_resnet,
    "resnet50": _build_resnet50,
    "resnet": _build_resnet,
    "efficientnet": _build_efficientnet,
}


# Models that gather each block's parameters where it runs (FSDP per layer): they take a
# `param_gather` attribute (mpl_jax.sharding.layer_gather).
LAYER_GATHER = ("efficientnet",)


def build(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  """Builds the model a config section names; unknown names list the valid ones."""
  name = cfg["name"]
  if name not in MODELS:
    raise ValueError(f"model name {name!r} is unknown; valid: {sorted(MODELS)}")
  return MODELS[name](cfg, num_classes)
