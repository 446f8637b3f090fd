"""Workdir files go through etils.epath: local paths and gs:// URIs alike."""

import json
import os

from etils import epath
from etils.epath import gpath
from etils.epath import testing as epath_testing

from mpl_jax import files


def test_local_json_is_written_through_a_temp_file_and_a_rename(tmp_path):
  renames = []

  def replace(original, path, dst):
    renames.append((os.fspath(path), os.fspath(dst)))
    return original(path, dst)

  target = tmp_path / "results.json"
  with epath_testing.mock_epath(replace=replace):
    files.write_json(target, {"b": 1, "a": [2]})
    files.write_json(target, {"b": 3})  # replaces the old file whole
  assert renames == [(f"{target}.tmp", str(target))] * 2
  assert json.loads(target.read_text()) == {"b": 3}
  assert sorted(os.listdir(tmp_path)) == ["results.json"]
  assert files.read_json(tmp_path / "missing.json") == {}


def test_gs_workdir_goes_to_the_bucket_not_a_local_gs_folder(tmp_path, monkeypatch):
  bucket = tmp_path / "bucket"
  monkeypatch.chdir(tmp_path)
  # gs:// goes to tf.io.gfile where TensorFlow is installed; here to the mockable backend.
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)

  def local(path):  # gs://bucket/... -> <tmp>/bucket/...
    assert os.fspath(path).startswith("gs://bucket/"), path
    return os.fspath(path).replace("gs://bucket", os.fspath(bucket), 1)

  def makedirs(original, path, **kwargs):
    return original(local(path), **kwargs)

  def open_(original, path, mode):
    return original(local(path), mode)

  def exists(original, path):
    return original(local(path))

  def no_rename(original, path, dst):
    raise AssertionError(f"an object store needs no rename: {path} -> {dst}")

  root = files.path("gs://bucket/run")
  assert isinstance(root, epath.Path) and os.fspath(root / "config.json") == (
      "gs://bucket/run/config.json")
  with epath_testing.mock_epath(makedirs=makedirs, open=open_, exists=exists,
                                replace=no_rename, rename=no_rename):
    root.mkdir(parents=True, exist_ok=True)
    files.write_json(root / "config.json", {"method": "mpl"})
    assert files.read_json(root / "config.json") == {"method": "mpl"}
    assert files.read_json(root / "results.json") == {}
  assert json.loads((bucket / "run" / "config.json").read_text()) == {"method": "mpl"}
  assert not (tmp_path / "gs:").exists()


def test_local_paths_are_made_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(files.path("run")) == os.path.join(os.fspath(tmp_path), "run")
  assert not files.is_remote("run") and files.is_remote("gs://bucket/run")
