"""Compiles a config's step ahead of time for a Cloud TPU topology, on a machine without TPUs.

Any method and phase of any config (`--config=FILE[:ARG]`, `--phase`; by default the
flagship's MPL step). libtpu's compiler runs here through `jax.experimental.topologies`:
the step `mpl_jax.compiled` gives the training loop is lowered with abstract inputs
(shapes, dtypes and shardings only, nothing allocated) and compiled for the chosen
topology. The compiled step's memory analysis gives what one chip must
hold; its cost analysis gives the FLOPs one chip runs per step. A step that does not fit
a chip's HBM fails to compile, and the compiler's message (how much it needed) is
reported instead.

Two layouts on a ('data', 'model') mesh:
- model_axis=1: data parallel only; every chip holds all parameters and optimizer state.
- model_axis=k: FSDP-style, as `--config.mesh.model_axis=k` trains (mpl_jax/sharding.py);
  parameters, optimizer state, the student's EMA and BatchNorm statistics are split k
  ways over 'model' (each array on its largest dimension that k divides); parameters are
  all-gathered where they run and gradients reduce-scattered back: each network whole
  (`--gather=network`) or each block as it runs (`--gather=layer`); EfficientNet's
  activations stay split over the batch (`sharding.batch_layout`).
The batch is split over all chips in both layouts, so each chip sees `labeled_per_chip` +
`unlabeled_per_chip` images.

Setup (a separate venv: libtpu must not go into the project's CPU venv):
  python3.11 -m venv .venv-tpu
  .venv-tpu/bin/pip install 'jax[tpu]==0.10.2' 'flax==0.12.8' 'optax==0.2.8' \
      'ml_collections==1.1.0'
Run (the paper's per-core batch, EfficientNet-L2 teacher and student at 512x512):
  .venv-tpu/bin/python tools/aot_tpu.py --topology=v4:4x4x2 --model_axis=1
  .venv-tpu/bin/python tools/aot_tpu.py --topology=v4:4x4x2 --model_axis=16 --gather=layer
  .venv-tpu/bin/python tools/aot_tpu.py --topology=v5p:4x4x2 --model_axis=16 --no-remat
  .venv-tpu/bin/python tools/aot_tpu.py --config=configs/imagenet_efficientnet_l2.py:uda
Every model, image and mesh setting not given on the command line is the config's (the
flagship's: L2, 512 px, bfloat16, remat, scanned stages, data parallel), so the step
compiled is the step the config trains. The last line printed is `RESULT {json}` for
scripts.

`--plan` lowers the step without compiling it (30 to 41 s for L2, not the compile's 15 to
40 minutes)
and prints what a run on the topology needs: the accum_steps that reach the config's
global batch from the per-chip batch, the FLOPs per chip per step (XLA's cost analysis
of the whole step lowered for the CPU, unsharded, divided by the chips) and the time per step
that makes at a stated MFU (`--mfu`, default 0.4) of the chip's peak bf16 rate. Memory
is known only from a compile: the plan quotes a compiled row of
benchmarks/results/aot_tpu.jsonl for the same step if there is one.
"""

import argparse
import json
import os
import re
import sys
import time

# A compile-only TPU client: JAX itself runs on the CPU, libtpu only compiles.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
# Compiling needs no exclusive hold on a TPU: let several compiles run side by side.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

from mpl_jax import compiled as compiled_lib  # pylint: disable=g-import-not-at-top
from mpl_jax import config_files  # pylint: disable=g-import-not-at-top
from mpl_jax import data as data_lib  # pylint: disable=g-import-not-at-top
from mpl_jax import networks  # pylint: disable=g-import-not-at-top
from mpl_jax import records  # pylint: disable=g-import-not-at-top
from mpl_jax import sharding  # pylint: disable=g-import-not-at-top
from mpl_jax import xla_options  # pylint: disable=g-import-not-at-top
from mpl_jax.models import efficientnet  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGSHIP = os.path.join(ROOT, "configs", "imagenet_efficientnet_l2.py")
GIB = 1024**3
# HBM per chip (device) as JAX sees it: v4 and v5p run as one megacore device per chip.
HBM_GIB = {"TPU v4": 32, "TPU v5": 95, "TPU v5 lite": 16, "TPU v6 lite": 32}
# Peak dense bf16 TFLOP/s per chip (Cloud TPU's published figures), for --plan's estimates.
PEAK_TFLOPS = {"TPU v4": 275, "TPU v5": 459, "TPU v5 lite": 197, "TPU v6 lite": 918}
MEGACORE = ("v4", "v5p")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "aot_tpu.jsonl")
# The fields of a compiled row that must match a planned step for its memory to apply.
SAME_STEP = ("config", "method", "phase", "variant", "device_kind", "chips", "mesh", "resolution",
             "labeled_per_chip", "unlabeled_per_chip", "dtype", "remat", "scan_blocks",
             "split_gradients", "gather")


def get_devices(topology: str) -> list:
  """Compile-only devices of a topology name such as 'v4:4x4x2' or 'v5p:2x2x1'."""
  kwargs = {}
  if topology.split(":")[0] in MEGACORE:
    kwargs = {"chip_config_name": "megacore", "chips_per_host_bounds": (2, 2, 1),
              "num_slices": 1}
  return list(topologies.get_topology_desc(topology, "tpu", **kwargs).devices)


def flagship_config(config: str = FLAGSHIP, *, variant: str | None = None,
                    resolution: int | None = None, global_batch: tuple[int, int] | None = None,
                    model_axis: int | None = None, dtype: str | None = None,
                    remat: bool | None = None,
                    scan_blocks: bool | None = None, width: float | None = None,
                    depth: float | None = None, gather: str | None = None):
  """The config a run of `config` (a file[:arg]) trains, with what the compile varies
  written over it: the model's variant, size, dtype and remat, the image size, the global
  (labeled, unlabeled) batch and the mesh's model axis."""
  c = config_files.load(config)
  if model_axis is not None:
    c.mesh.model_axis = model_axis
  if gather is not None:
    c.mesh.gather = gather
  for field, value in (("variant", variant), ("dtype", dtype), ("remat", remat),
                       ("scan_blocks", scan_blocks), ("width", width), ("depth", depth)):
    if value is not None:
      c.model[field] = value
  if resolution is not None:
    c.data.image_size = resolution
  if global_batch is not None:
    c.data.labeled_batch_size, c.data.unlabeled_batch_size = global_batch
  return c


def build_run(config, mesh, num_classes: int | None = None,
              split_gradients: bool = True) -> compiled_lib.Compiled:
  """What `mpl_jax.train` compiles for `config` on `mesh`: its networks (with a 'model'
  axis, parameters gathered where each network runs or, with `mesh.gather=layer`, where
  each block runs: FSDP, `mpl_jax.sharding`) and their compiled steps. `num_classes`
  overrides the data set's."""
  spec = data_lib.spec(config.data)
  if num_classes is not None:
    spec = data_lib.DataSpec(num_classes, spec.input_shape)
  nets = networks.build(config, spec, mesh, split_gradients=split_gradients)
  return compiled_lib.Compiled(nets, mesh, skip_nonfinite=config.skip_nonfinite)


def find_phase(run: compiled_lib.Compiled, name: str | None):
  """The phase called `name` of the run (None: its first)."""
  if name is None:
    return run.nets.phases[0]
  by_name = {p.name: p for p in run.nets.phases}
  if name not in by_name:
    raise ValueError(f"--phase={name} is not a phase of method "
                     f"{run.nets.method.name}; valid: {list(by_name)}")
  return by_name[name]


def accumulation(target: tuple[int, int], per_micro_step: tuple[int, int]) -> int | None:
  """The accum_steps k with k micro-batches of `per_micro_step` (labeled, unlabeled)
  images making the `target` global batch; None if no whole k does for both."""
  ks = {t // m for t, m in zip(target, per_micro_step) if m and t % m == 0}
  exact = all(m and t % m == 0 for t, m in zip(target, per_micro_step))
  return ks.pop() if exact and len(ks) == 1 else None


def step_time_s(flops_per_chip: float, accum_steps: int, peak_tflops: float,
                mfu: float) -> float:
  """Seconds per optimizer step: accum_steps micro-steps of `flops_per_chip` each, run at
  `mfu` of the chip's peak."""
  return accum_steps * flops_per_chip / (mfu * peak_tflops * 1e12)


def compiled_rows(result: dict, path: str = RESULTS) -> list[dict]:
  """The compiled rows of `path` for the same step as `result` (memory comes from them)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if "fits" in r and not r.get("plan")
          and all(r.get(k) == result.get(k) for k in SAME_STEP)]


def _oom_message(error: Exception) -> str:
  """The compiler's out-of-memory summary, e.g. 'Used 45.1G of 31.25G hbm.'"""
  text = str(error)
  match = re.search(r"Used [^\n]*?hbm[^\n]*", text)
  return match.group(0) if match else text.splitlines()[0][:300]


def settings_of(c) -> dict:
  """What a compile reports of the config it compiled: the model, image size and mesh."""
  return {"variant": c.model.get("variant"), "resolution": int(c.data.image_size),
          "dtype": c.model.get("dtype", "float32"), "remat": bool(c.model.get("remat", False)),
          "scan_blocks": bool(c.model.get("scan_blocks", False)),
          "model_axis": int(c.mesh.model_axis), "gather": c.mesh.gather}


def compile_step(*, topology: str, labeled_per_chip: int, unlabeled_per_chip: int,
                     variant: str | None = None, model_axis: int | None = None,
                     resolution: int | None = None, num_classes: int | None = None,
                     dtype: str | None = None, remat: bool | None = None,
                     scan_blocks: bool | None = None, width: float | None = None,
                     depth: float | None = None, split_gradients: bool = True,
                 gather: str | None = None, config: str = FLAGSHIP, phase: str | None = None,
                 plan: bool = False, mfu: float = 0.4) -> dict:
  """Lowers and compiles one step of `config` (the phase named `phase`, default its
  first) for `topology`; returns sizes, memory and FLOPs. With `plan`, lowers only and
  returns the plan (see the module docstring). Each setting left None is the config's."""
  devices = get_devices(topology)
  n = len(devices)
  n_l, n_u = labeled_per_chip * n, unlabeled_per_chip * n
  train_config = flagship_config(
      config, variant=variant, resolution=resolution, global_batch=(n_l, n_u),
      model_axis=model_axis, dtype=dtype, remat=remat, scan_blocks=scan_blocks, width=width,
      depth=depth, gather=gather)
  settings = settings_of(train_config)
  variant, resolution, dtype, remat, scan_blocks, gather, model_axis = (
      settings[k] for k in ("variant", "resolution", "dtype", "remat", "scan_blocks",
                            "gather", "model_axis"))
  if n % model_axis:
    raise ValueError(f"--model_axis={model_axis} does not divide the {n} chips of {topology}")
  mesh = topologies.make_mesh(topologies.TopologyDescription(devices),
                              (n // model_axis, model_axis), ("data", "model"))
  run = build_run(train_config, mesh, num_classes, split_gradients=split_gradients)
  step = find_phase(run, phase)
  abstract_state = run.abstract_state()

  params = sum(x.size for x in jax.tree.leaves(abstract_state.student.params))
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
  result = {"config": os.path.relpath(config.partition(":")[0], ROOT),
            "method": train_config.method, "phase": step.name, "variant": variant,
            "topology": topology, "chips": n,
            "device_kind": devices[0].device_kind, "mesh": f"{n // model_axis}x{model_axis}",
            "resolution": resolution, "labeled_per_chip": labeled_per_chip,
            "unlabeled_per_chip": unlabeled_per_chip, "global_batch": [n_l, n_u],
            "dtype": dtype, "remat": remat, "scan_blocks": scan_blocks,
            "split_gradients": split_gradients, "gather": gather,
            "networks": 1 if abstract_state.teacher is None else 2,
            "params_per_network": int(params),
            "train_state_gib_total": state_bytes / GIB,
            "hbm_gib": HBM_GIB.get(devices[0].device_kind), "commit": records.commit()}

  if plan:  # FLOPs of the whole step, unsharded, from its CPU lowering (no TPU compile)
    whole_config = flagship_config(
        config, variant=variant, resolution=resolution, global_batch=(n_l, n_u),
        dtype=dtype, remat=remat, scan_blocks=scan_blocks, width=width, depth=depth)
    whole = build_run(whole_config, sharding.make_mesh(1, 1), num_classes)
    start = time.time()
    lowered = whole.lower(find_phase(whole, phase), n_l, n_u)
    result["lower_s"] = time.time() - start
    return _plan(result, lowered, config, mfu)
  start = time.time()
  lowered = run.lower(step, n_l, n_u)
  result["lower_s"] = time.time() - start
  start = time.time()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    result["compile_s"] = time.time() - start
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    result.update(fits=False, compiler_message=_oom_message(e))
    return result
  result["compile_s"] = time.time() - start

  memory = compiled.memory_analysis()
  per_chip = (memory.argument_size_in_bytes + memory.output_size_in_bytes
              - memory.alias_size_in_bytes + memory.temp_size_in_bytes
              + memory.generated_code_size_in_bytes)
  cost = xla_options.cost_analysis(compiled)
  result.update(
      fits=result["hbm_gib"] is None or per_chip <= result["hbm_gib"] * GIB,
      argument_gib=memory.argument_size_in_bytes / GIB,
      output_gib=memory.output_size_in_bytes / GIB,
      alias_gib=memory.alias_size_in_bytes / GIB,
      temp_gib=memory.temp_size_in_bytes / GIB,
      peak_gib_per_chip=per_chip / GIB,
      flops_per_chip=float(cost.get("flops", float("nan"))),
      bytes_accessed_per_chip=float(cost.get("bytes accessed", float("nan"))))
  return result


def _plan(result: dict, lowered, config: str, mfu: float) -> dict:
  """The plan of a lowered step: accumulation, FLOPs, time at `mfu`, memory if known."""
  cost = xla_options.cost_analysis(lowered)
  data = config_files.load(config).data
  target = (data.labeled_batch_size, data.unlabeled_batch_size)
  accum = accumulation(target, tuple(result["global_batch"]))
  flops = float(cost["flops"]) / result["chips"]
  peak = PEAK_TFLOPS.get(result["device_kind"])
  result.update(plan=True, target_global_batch=list(target), accum_steps=accum,
                lowered_flops_per_chip=flops, mfu=mfu, peak_tflops_per_chip=peak,
                step_s_at_mfu=(step_time_s(flops, accum, peak, mfu)
                               if accum and peak else None))
  rows = compiled_rows(result)
  if rows:
    row = rows[-1]
    result.update(compiled_commit=row.get("commit"),
                  compiled_peak_gib_per_chip=row.get("peak_gib_per_chip"),
                  compiled_fits=row["fits"], compiled_flops_per_chip=row.get("flops_per_chip"),
                  compiled_message=row.get("compiler_message"))
  return result


def _print_plan(r: dict) -> None:
  print(f"{r['variant']} x2, {r['resolution']}px, {r['labeled_per_chip']}+"
        f"{r['unlabeled_per_chip']} images/chip on {r['topology']} ({r['chips']} x "
        f"{r['device_kind']}, HBM {r['hbm_gib']} GiB), mesh data x model = {r['mesh']}")
  per_step = r["global_batch"]
  if r["accum_steps"]:
    print(f"global batch {r['target_global_batch'][0]}+{r['target_global_batch'][1]}: "
          f"--config.accum_steps={r['accum_steps']} micro-batches of "
          f"{per_step[0]}+{per_step[1]}")
  else:
    print(f"global batch {r['target_global_batch'][0]}+{r['target_global_batch'][1]} is no "
          f"whole number of micro-batches of {per_step[0]}+{per_step[1]}: change the "
          f"per-chip batch or the config's batch")
  print(f"{r['lowered_flops_per_chip'] / 1e12:.2f} TFLOP per chip per micro-step (XLA's "
        f"count for the whole lowered step / {r['chips']} chips)")
  if r["step_s_at_mfu"] is not None:
    print(f"about {r['step_s_at_mfu']:.2f} s per step at {r['mfu']:.0%} MFU of "
          f"{r['peak_tflops_per_chip']} TFLOP/s per chip")
  if "compiled_fits" in r:
    fits = "fits" if r["compiled_fits"] else "does NOT fit"
    size = r["compiled_peak_gib_per_chip"]
    print(f"memory (compiled row in {os.path.relpath(RESULTS, ROOT)}, code of commit "
          f"{(r['compiled_commit'] or 'unknown')[:10]}): "
          f"{f'{size:.2f} GiB per chip, ' if size else ''}{fits}")
  else:
    print("memory: not known without a compile (run again without --plan)")


def parse_args(argv=None) -> argparse.Namespace:
  """The flags; each model, image or mesh setting left out is the config's."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variant", default=None, choices=sorted(efficientnet.VARIANTS),
                      help="default: the config's")
  parser.add_argument("--topology", default="v4:4x4x2")
  parser.add_argument("--model_axis", type=int, default=None,
                      help="chips per parameter shard group (1 = data parallel only); "
                           "default: the config's mesh.model_axis")
  parser.add_argument("--resolution", type=int, default=None, help="default: the config's")
  parser.add_argument("--labeled_per_chip", type=int, default=1,
                      help="paper: 2,048 labeled over 2,048 cores")
  parser.add_argument("--unlabeled_per_chip", type=int, default=8,
                      help="paper: 16,384 unlabeled over 2,048 cores")
  parser.add_argument("--config", default=FLAGSHIP,
                      help="the config file[:arg] whose step is compiled (the method is the "
                           "config's, e.g. configs/imagenet_efficientnet_l2.py:uda)")
  parser.add_argument("--phase", default=None,
                      help="the phase of the config's method to compile (e.g. teacher or "
                           "pseudo_labels for pseudo_labels); default: its first")
  parser.add_argument("--num_classes", type=int, default=None,
                      help="override the data set's (ImageNet: 1000)")
  parser.add_argument("--dtype", default=None, choices=("bfloat16", "float32"),
                      help="default: the config's")
  parser.add_argument("--remat", action=argparse.BooleanOptionalAction, default=None,
                      help="rematerialize every block (default: the config's)")
  parser.add_argument("--scan_blocks", action=argparse.BooleanOptionalAction, default=None,
                      help="scan over each stage's repeated blocks, which compiles much "
                           "faster (default: the config's)")
  parser.add_argument("--split_gradients", action=argparse.BooleanOptionalAction, default=True,
                      help="FSDP: constrain gradients back to the split layout (as training)")
  parser.add_argument("--gather", default=None, choices=sharding.GATHERS,
                      help="FSDP: gather each network whole or each block as it runs "
                           "(default: the config's mesh.gather)")
  parser.add_argument("--width", type=float, default=None, help="override the variant's")
  parser.add_argument("--depth", type=float, default=None, help="override the variant's")
  parser.add_argument("--plan", action="store_true",
                      help="lower only: accum_steps, FLOPs and time per step, no compile")
  parser.add_argument("--mfu", type=float, default=0.4,
                      help="--plan: the model FLOPs utilization the time estimate assumes")
  args = parser.parse_args(argv)
  if not 0 < args.mfu <= 1:
    parser.error(f"--mfu={args.mfu} must be in (0, 1]")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  result = compile_step(
      variant=args.variant, topology=args.topology, model_axis=args.model_axis,
      resolution=args.resolution, labeled_per_chip=args.labeled_per_chip,
      unlabeled_per_chip=args.unlabeled_per_chip, num_classes=args.num_classes,
      dtype=args.dtype, remat=args.remat, scan_blocks=args.scan_blocks, width=args.width,
      depth=args.depth, split_gradients=args.split_gradients, gather=args.gather,
      config=args.config, phase=args.phase, plan=args.plan, mfu=args.mfu)
  r = result
  if args.plan:
    _print_plan(r)
    print("RESULT " + json.dumps(result))
    return
  nets = "x2 (teacher + student)" if r["networks"] == 2 else "(one network)"
  print(f"{r['variant'] or r['method']} {nets}, {r['params_per_network'] / 1e6:.1f}M params "
        f"each, {r['resolution']}px, {r['labeled_per_chip']}+{r['unlabeled_per_chip']} "
        f"images/chip, {r['dtype']}{', remat' if r['remat'] else ''}")
  print(f"{r['topology']} ({r['chips']} x {r['device_kind']}, HBM {r['hbm_gib']} GiB), "
        f"mesh data x model = {r['mesh']}; lower {r['lower_s']:.0f}s, "
        f"compile {r['compile_s']:.0f}s")
  if "peak_gib_per_chip" in r:
    print(f"per chip: arguments {r['argument_gib']:.2f} GiB, temporaries "
          f"{r['temp_gib']:.2f} GiB, total {r['peak_gib_per_chip']:.2f} GiB -> "
          f"{'fits' if r['fits'] else 'does NOT fit'}; "
          f"{r['flops_per_chip'] / 1e12:.2f} TFLOP per chip per step")
  else:
    print(f"does NOT fit: {r['compiler_message']}")
  print("RESULT " + json.dumps(result))


if __name__ == "__main__":
  main()
