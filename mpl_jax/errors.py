"""Errors that carry a one-line message for the user (main.py prints them and exits 2)."""


class ConfigError(ValueError):
  """A config field has a value that cannot work."""


def one_of(field: str, value, valid) -> None:
  """Raises ConfigError unless `value` is among `valid`."""
  if value not in valid:
    raise ConfigError(f"{field}={value!r} is unknown; valid: {list(valid)}")


def positive(field: str, value, *, allow_zero: bool = False) -> None:
  """Raises ConfigError unless `value` > 0 (>= 0 with `allow_zero`)."""
  if value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"{field}={value} must be {'>= 0' if allow_zero else '> 0'}")
