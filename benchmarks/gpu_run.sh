#!/usr/bin/env bash
# The GPU benchmarks in one run, for a machine with one NVIDIA GPU, JAX (CUDA), Flax,
# optax, ml_collections and PyTorch, and no TensorFlow. Run from the repository root:
#
#   OUT=/tmp/gpu_results bash benchmarks/gpu_run.sh
#
# It records, as JSON lines under $OUT (also echoed to stdout):
#   gpu.txt            nvidia-smi's card name, memory and driver; jax and torch versions
#   compare.jsonl      JAX bf16 vs PyTorch AMP (bf16 autocast), WRN-28-2, B=128, mu=7,
#                      alternating rounds in one process; then the same in float32 (tf32)
#   resnet50.jsonl     ResNet-50 MPL step in bf16 (B=128, mu=1, 224x224): time, FLOPs, MFU
#   wrn_parts.jsonl    WRN-28-2 bf16 step vs its parts timed alone (B=128, mu=7)
#   profile.jsonl      the ResNet-50 bf16 step under jax.profiler, per kind of work
#                      (benchmarks/profile_gpu.py), with its raw kernel times and optimized
#                      HLO (resnet50_*.ops.json, resnet50_*.hlo.txt.gz)
#   resnet50_sweep.jsonl  the ResNet-50 bf16 step at other per-chip batches (B=256, 64)
#   log.txt            every benchmark's stderr
# ONLY="profile compare" runs just those (default: compare resnet50 wrn_parts compare_fp32).
# Each benchmark has its own time limit, so one that hangs does not cost the others.
# TINY=1 runs the same logic at toy sizes on a CPU (to check the script, not the GPU).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_results}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

if [[ "${TINY:-0}" == "1" ]]; then
  WRN=(--depth=10 --width=1)
  # ResNet-50 takes many minutes to compile on a CPU: the tiny run uses the tiny WRN.
  B=2; MU=1; RN_B=2; RN_MU=1; RN=(--model=wide_resnet "${WRN[@]}")
  ROUNDS=(--rounds=2 --steps_per_round=1 --warmup=1); RUNS=(--runs=1 --warmup=1)
  L1=600; L2=600; L3=600; L4=600; L5=600; L6=600; SWEEP=2,4; PROFILE=(--ceilings=off)
else
  WRN=(--depth=28 --width=2)
  B=128; MU=7; RN_B=128; RN_MU=1; RN=(--model=resnet50)
  ROUNDS=(--rounds=5 --steps_per_round=5 --warmup=2); RUNS=(--runs=10 --warmup=2)
  L1=130; L2=150; L3=110; L4=70  # the default four: 460 s in all
  L5=200; L6=170; SWEEP=256,64; PROFILE=()  # profile, resnet50_sweep
fi
ONLY="${ONLY:-compare resnet50 wrn_parts compare_fp32}"
want() { [[ " $ONLY " == *" $1 "* ]]; }

# run NAME LIMIT_SECONDS COMMAND...: JSON lines to $OUT/NAME.jsonl, stderr to $OUT/log.txt
# (and its last lines here).
run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  local start=$SECONDS
  echo "== $name: $*" >>"$OUT/log.txt"
  timeout "$limit" "$@" >>"$OUT/$name.jsonl" 2> >(tee -a "$OUT/log.txt" | tail -n 15 >&2)
  local rc=$?
  tail -n 1 "$OUT/$name.jsonl" 2>/dev/null | cut -c1-2000
  [[ $rc -ne 0 ]] && echo "!! $name exited $rc"
  echo "== $name took $((SECONDS - start)) s"
}

# The benchmarks build their steps from the config files, which need ml_collections (pure
# Python; where pip cannot reach an index, bring its wheel and install it with --no-deps).
"$PY" -c "import ml_collections" 2>/dev/null || {
  echo "ml_collections is missing: pip install ml_collections==1.1.0 (pure Python)"; exit 2; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || echo "no nvidia-smi"
  "$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); \
print('torch', torch.__version__, torch.cuda.is_available())"
} >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# The GPU machine runs nothing else; its own start-up may still show in the load average.
QUIET=(--on_busy=run)
want profile && run profile "$L5" "$PY" -m benchmarks.profile_gpu "${RN[@]}" \
  --labeled_batch=$RN_B --mu=$RN_MU --dtype=bfloat16 --steps=3 --save_dir="$OUT" "${PROFILE[@]}" "${QUIET[@]}"
# JAX and PyTorch share the GPU in compare.py: JAX takes at most half of its memory.
want compare && XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 run compare "$L1" "$PY" -m benchmarks.compare \
  "${WRN[@]}" --labeled_batch=$B --mu=$MU --dtype=bfloat16 "${ROUNDS[@]}" "${QUIET[@]}"
want resnet50 && run resnet50 "$L2" "$PY" -m benchmarks.step_bench "${RN[@]}" \
  --labeled_batch=$RN_B --mu=$RN_MU --dtype=bfloat16 --no_parts "${RUNS[@]}" "${QUIET[@]}"
want resnet50_sweep && run resnet50_sweep "$L6" "$PY" -m benchmarks.step_bench "${RN[@]}" \
  --labeled_batch=$SWEEP --mu=$RN_MU --dtype=bfloat16 --no_parts "${RUNS[@]}" "${QUIET[@]}"
want wrn_parts && run wrn_parts "$L3" "$PY" -m benchmarks.step_bench "${WRN[@]}" \
  --labeled_batch=$B --mu=$MU --dtype=bfloat16 "${RUNS[@]}" "${QUIET[@]}"
want compare_fp32 && XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 run compare "$L4" "$PY" -m \
  benchmarks.compare "${WRN[@]}" --labeled_batch=$B --mu=$MU --dtype=float32 "${ROUNDS[@]}" \
  "${QUIET[@]}"

echo "== summary"
"$PY" - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
for name in ("compare", "resnet50", "resnet50_sweep", "wrn_parts", "profile"):
  path = os.path.join(out, name + ".jsonl")
  if not os.path.exists(path):
    continue
  for line in open(path):
    try:
      r = json.loads(line)
    except ValueError:
      continue
    keys = ("model", "labeled_batch", "mu", "dtype", "jax_over_torch_throughput",
            "jax_step_time_s", "torch_step_time_s", "step_time_s", "images_per_s",
            "time_ratio", "flops_ratio", "step_flops", "mfu", "device", "jax_device")
    print(name, {k: r[k] for k in keys if k in r})
    if name == "profile":
      s = r["summary"]
      for kind, k in s["kinds"].items():
        print(f"  {kind:18s} {k['time_s'] * 1e3:8.2f} ms  tflop/s {k['tflop_per_s']}  "
              f"tb/s {k['tb_per_s']}")
      print("  idle", s["idle_s"], "floor", s.get("floor"), "mfu", s.get("mfu"),
            "ceilings", r.get("ceilings"))
EOF
