"""tools/aot_tpu.py's --plan arithmetic (the compiles themselves need libtpu: slow tests in
efficientnet_test.py)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(name="aot", scope="module")
def _aot():
  spec = importlib.util.spec_from_file_location("aot_tpu",
                                                os.path.join(ROOT, "tools", "aot_tpu.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_accumulation_reaches_the_global_batch_or_says_it_cannot(aot):
  # The paper's 2,048 + 16,384 on a v4-64 (32 chips at 1+8): 64 micro-batches.
  assert aot.accumulation((2048, 16384), (32, 256)) == 64
  assert aot.accumulation((2048, 16384), (2048, 16384)) == 1
  assert aot.accumulation((2048, 16384), (96, 768)) is None  # 2048/96 is not whole
  assert aot.accumulation((2048, 16384), (32, 128)) is None  # the two disagree (64 vs 128)


def test_step_time_is_the_micro_steps_flops_at_the_stated_mfu(aot):
  assert aot.step_time_s(6.6e12, 64, 275, 0.4) == pytest.approx(64 * 6.6e12 / 110e12)
  assert aot.step_time_s(1e12, 1, 100, 0.5) == pytest.approx(0.02)


def test_plan_quotes_only_compiled_rows_of_the_same_step(aot, tmp_path):
  step = {"config": "configs/imagenet_efficientnet_l2.py", "method": "mpl", "phase": "mpl",
          "variant": "l2",
          "device_kind": "TPU v4", "chips": 32, "mesh": "2x16", "resolution": 512,
          "labeled_per_chip": 1, "unlabeled_per_chip": 8, "dtype": "bfloat16",
          "remat": True, "scan_blocks": True, "split_gradients": True, "gather": "layer"}
  rows = [dict(step, fits=False, peak_gib_per_chip=43.1),
          dict(step, gather="network", fits=False, peak_gib_per_chip=42.9),
          dict(step, unlabeled_per_chip=4, fits=True, peak_gib_per_chip=25.0),
          dict(step, plan=True, fits=True),  # a plan row: no memory in it
          dict(step, peak_gib_per_chip=20.0)]  # no "fits": not a compile result
  path = tmp_path / "rows.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert [r["peak_gib_per_chip"] for r in aot.compiled_rows(step, str(path))] == [43.1]
  # Another method or phase of the same config is another step.
  for other in (dict(step, method="uda", phase="uda"), dict(step, phase="teacher")):
    path.write_text(json.dumps(dict(other, fits=True, peak_gib_per_chip=9.0)) + "\n")
    assert aot.compiled_rows(step, str(path)) == []
    assert len(aot.compiled_rows(other, str(path))) == 1


def test_settings_left_out_are_the_configs(aot, tmp_path):
  """The tool compiles the step the config trains: flags it is not given take the
  config's values (the flagship trains L2 with remat), and flags it is given win."""
  args = aot.parse_args(["--topology=v4:4x4x2"])
  for flag in ("variant", "resolution", "dtype", "remat", "scan_blocks", "gather",
               "model_axis"):
    assert getattr(args, flag) is None, flag
  flagship = aot.settings_of(aot.flagship_config(
      variant=args.variant, resolution=args.resolution, dtype=args.dtype, remat=args.remat,
      scan_blocks=args.scan_blocks, gather=args.gather))
  assert flagship == {"variant": "l2", "resolution": 512, "dtype": "bfloat16", "remat": True,
                      "scan_blocks": True, "model_axis": 1, "gather": "network"}
  # A config that trains with FSDP: the tool compiles it so unless told otherwise.
  path = tmp_path / "fsdp.py"
  path.write_text(f"from configs.imagenet_efficientnet_l2 import get_config as base\n\n"
                  f"def get_config(arg=None):\n"
                  f"  c = base(arg)\n  c.mesh.model_axis = 16\n  c.mesh.gather = 'layer'\n"
                  f"  return c\n")
  fsdp = aot.settings_of(aot.flagship_config(str(path), model_axis=args.model_axis,
                                             gather=args.gather))
  assert (fsdp["model_axis"], fsdp["gather"]) == (16, "layer")
  assert aot.settings_of(aot.flagship_config(str(path), model_axis=1))["model_axis"] == 1
  args = aot.parse_args(["--no-remat", "--resolution=256", "--gather=layer"])
  given = aot.settings_of(aot.flagship_config(remat=args.remat, resolution=args.resolution,
                                              gather=args.gather))
  assert (given["remat"], given["resolution"], given["gather"]) == (False, 256, "layer")
