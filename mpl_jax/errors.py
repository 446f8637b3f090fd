"""Errors that carry a one-line message for the user (main.py prints them and exits 2)."""


class ConfigError(ValueError):
  """A config field has a value that cannot work."""
