"""A run's files, on local disk or in a bucket: workdir paths and small JSON records.

Every file operation on a workdir goes through `etils.epath`, so `--workdir=gs://bucket/run`
writes into the bucket (epath needs `gcsfs` for gs://) rather than into a local folder
named `gs:`. Local paths keep the write-to-a-temp-file-then-rename that makes a kill leave
either the old file or the new one; an object store makes each upload visible whole.
"""

import json
import os
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """True for a URI (gs://, s3://, ...), False for a local path."""
  return "://" in os.fspath(path)


def path(location: PathLike) -> epath.Path:
  """`location` as an epath.Path: made absolute when local, kept as given when a URI."""
  if is_remote(location):
    return epath.Path(location)
  return epath.Path(os.path.abspath(os.fspath(location)))


def write_json(target: PathLike, payload: dict[str, Any]) -> None:
  """Writes `payload` as JSON; a reader never sees half a file."""
  target = epath.Path(target)
  text = json.dumps(payload, indent=2, sort_keys=True, default=str)
  if is_remote(target):
    target.write_text(text)
    return
  temp = target.with_name(target.name + ".tmp")
  temp.write_text(text)
  temp.replace(target)


def read_json(source: PathLike) -> dict[str, Any]:
  """The JSON object in `source`, or {} when there is no such file."""
  source = epath.Path(source)
  if not source.exists():
    return {}
  return json.loads(source.read_text())
