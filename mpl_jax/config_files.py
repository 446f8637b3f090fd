"""Experiment config files read by path, as main.py's --config reads them.

`load("configs/digits.py:mpl")` imports the file and returns `get_config("mpl")`
(`get_config(None)` without ':'). Benchmarks and ahead-of-time compilation build their
steps from these files, so they measure and compile what trains.
"""

import importlib.util
import os


def load(spec: str, overrides: dict | None = None):
  """The config of `path[:arg]`, with `overrides` ({"section.field": value}) applied."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  name = "config_file_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for field, value in (overrides or {}).items():
    *sections, key = field.split(".")
    node = config
    for section in sections:
      node = node[section]
    if key not in node:
      raise KeyError(f"{spec} has no field {field!r}")
    node[key] = value
  return config
