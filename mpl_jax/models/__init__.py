"""Model registry: config names -> Flax modules built from a model config section."""

from typing import Any, Callable, Mapping

import flax.linen as nn

from mpl_jax.models import mlp


def _build_mlp(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  if cfg["activation"] not in mlp.ACTIVATIONS:
    raise ValueError(f"model.activation={cfg['activation']!r} is unknown; valid: "
                     f"{sorted(mlp.ACTIVATIONS)}")
  return mlp.MLP(num_classes=num_classes, hidden=tuple(cfg["hidden"]),
                 activation=cfg["activation"], init_scale=cfg["init_scale"])


MODELS: dict[str, Callable[[Mapping[str, Any], int], nn.Module]] = {
    "mlp": _build_mlp,
}


def build(cfg: Mapping[str, Any], num_classes: int) -> nn.Module:
  """Builds the model a config section names; unknown names list the valid ones."""
  name = cfg["name"]
  if name not in MODELS:
    raise ValueError(f"model name {name!r} is unknown; valid: {sorted(MODELS)}")
  return MODELS[name](cfg, num_classes)
