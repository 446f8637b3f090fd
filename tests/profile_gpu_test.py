"""benchmarks/profile_gpu.py: what each GPU kernel's instruction is, and its FLOPs.

The classifier reads XLA:GPU's optimized HLO (no GPU here: a module written in its form,
operands named without their shapes as the compiled text prints them), and a tiny step
runs the whole script on the CPU, saving and summarizing again from what it saved.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import profile_gpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 3x3 convolution (N=8, 4x4, 16 -> 16 channels), its two gradients, a BatchNorm-like
# reduction, an activation, a transpose and a cuBLAS product, as XLA:GPU prints them.
GPU_HLO = """\
HloModule jit_step, entry_computation_layout={(bf16[8,4,4,16]{3,2,1,0})->f32[16]{0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.0 = f32[] add(%a, %b)
}

%fused_reduce (param_0.1: bf16[8,4,4,16]) -> f32[16] {
  %param_0.1 = bf16[8,4,4,16]{3,2,1,0} parameter(0)
  %convert.1 = f32[8,4,4,16]{3,2,1,0} convert(%param_0.1)
  %constant.1 = f32[] constant(0)
  ROOT %reduce.1 = f32[16]{0} reduce(%convert.1, %constant.1), dimensions={0,1,2}, to_apply=%add
}

%fused_relu (param_0.2: bf16[8,4,4,16]) -> bf16[8,4,4,16] {
  %param_0.2 = bf16[8,4,4,16]{3,2,1,0} parameter(0)
  %constant.2 = bf16[] constant(0)
  %broadcast.2 = bf16[8,4,4,16]{3,2,1,0} broadcast(%constant.2), dimensions={}
  ROOT %maximum.2 = bf16[8,4,4,16]{3,2,1,0} maximum(%param_0.2, %broadcast.2)
}

%fused_transpose (param_0.3: bf16[8,4,4,16]) -> bf16[16,4,4,8] {
  %param_0.3 = bf16[8,4,4,16]{3,2,1,0} parameter(0)
  ROOT %transpose.3 = bf16[16,4,4,8]{3,2,1,0} transpose(%param_0.3), dimensions={3,1,2,0}
}

%fused_six (param_0.6: bf16[8,4,4,16]) -> (f32[16], f32[16], f32[16], f32[16], f32[16], /*index=5*/f32[16]) {
  %param_0.6 = bf16[8,4,4,16]{3,2,1,0} parameter(0)
  %convert.6 = f32[8,4,4,16]{3,2,1,0} convert(%param_0.6)
  %constant.6 = f32[] constant(0)
  %reduce.6 = f32[16]{0} reduce(%convert.6, %constant.6), dimensions={0,1,2}, to_apply=%add
  ROOT %tuple.6 = (f32[16]{0}, f32[16]{0}, f32[16]{0}, f32[16]{0}, f32[16]{0}, /*index=5*/f32[16]{0}) tuple(%reduce.6, %reduce.6, %reduce.6, %reduce.6, %reduce.6, %reduce.6)
}

ENTRY %main (x: bf16[8,4,4,16], w: bf16[16,3,3,16], a: f32[8,32], b: f32[32,10]) -> f32[16] {
  %x = bf16[8,4,4,16]{3,2,1,0} parameter(0)
  %w = bf16[16,3,3,16]{3,2,1,0} parameter(1)
  %a = f32[8,32]{1,0} parameter(2)
  %b = f32[32,10]{1,0} parameter(3)
  %cudnn-conv.1 = (bf16[8,4,4,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="jit(step)/conv_general_dilated"}
  %get-tuple-element.1 = bf16[8,4,4,16]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
  %cudnn-conv-bw-input.1 = (bf16[8,4,4,16]{3,2,1,0}, u8[0]{0}) custom-call(%get-tuple-element.1, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  %cudnn-conv-bw-filter.1 = (bf16[16,3,3,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %get-tuple-element.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %input_reduce_fusion = f32[16]{0} fusion(%get-tuple-element.1), kind=kInput, calls=%fused_reduce
  %loop_maximum_fusion = bf16[8,4,4,16]{3,2,1,0} fusion(%get-tuple-element.1), kind=kLoop, calls=%fused_relu, metadata={op_name="jit(step)/transpose(jvp(Net))/relu"}
  %multi_reduce_fusion = (f32[16]{0}, f32[16]{0}, f32[16]{0}, f32[16]{0}, f32[16]{0}, /*index=5*/f32[16]{0}) fusion(%get-tuple-element.1), kind=kInput, calls=%fused_six
  %transpose_fusion = bf16[16,4,4,8]{3,2,1,0} fusion(%x), kind=kInput, calls=%fused_transpose
  %custom-call.5 = (f32[8,10]{1,0}, s8[4]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm"
  %cudnn-conv-bias-activation.2 = (bf16[8,4,4,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w, %a, %x), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBiasActivationForward", metadata={op_name="jit(step)/transpose(jvp(Net))/conv_general_dilated"}
  ROOT %copy.1 = f32[16]{0} copy(%input_reduce_fusion)
}
"""
# 2 N H W C_out kh kw C_in, the same for the forward and both gradients.
CONV_FLOPS = 2 * 8 * 4 * 4 * 16 * 3 * 3 * 16


def test_classify_names_each_kind_and_counts_convolution_flops():
  info = profile_gpu.classify(GPU_HLO)
  kinds = {name: info[name]["kind"] for name in (
      "cudnn-conv.1", "cudnn-conv-bw-input.1", "cudnn-conv-bw-filter.1",
      "input_reduce_fusion", "loop_maximum_fusion", "transpose_fusion", "custom-call.5",
      "copy.1", "cudnn-conv-bias-activation.2", "multi_reduce_fusion")}
  assert kinds == {"cudnn-conv.1": "conv_forward", "cudnn-conv-bw-input.1": "conv_input_grad",
                   "cudnn-conv-bw-filter.1": "conv_filter_grad",
                   "input_reduce_fusion": "reductions", "loop_maximum_fusion": "elementwise",
                   "transpose_fusion": "copies", "custom-call.5": "matmul", "copy.1": "copies",
                   # a forward call under autodiff's transpose: an input gradient
                   "cudnn-conv-bias-activation.2": "conv_input_grad",
                   # its computation's signature holds a /*index=5*/ comment
                   "multi_reduce_fusion": "reductions"}
  for name in ("cudnn-conv.1", "cudnn-conv-bw-input.1", "cudnn-conv-bw-filter.1",
               "cudnn-conv-bias-activation.2"):
    assert info[name]["flops"] == CONV_FLOPS, name
  # Output and operands once each: f32[16] out, one bf16[8,4,4,16] read.
  assert info["input_reduce_fusion"]["bytes"] == 16 * 4 + 8 * 4 * 4 * 16 * 2
  assert info["loop_maximum_fusion"]["bytes"] == 2 * (8 * 4 * 4 * 16 * 2)


def test_an_input_gradient_written_as_a_forward_convolution_counts_dy_taps():
  # The input gradient of a 1x1, stride-2 convolution (N=8, 4x4 -> 2x2, 16 -> 32
  # channels) as XLA:GPU writes it: a forward call from dy (8,2,2,32) to dx (8,4,4,16).
  text = GPU_HLO.replace("ENTRY %main (x: bf16[8,4,4,16], ", "ENTRY %main (dy: bf16[8,2,2,32], k: bf16[16,1,1,32], x: bf16[8,4,4,16], ").replace(
      "  %x = bf16[8,4,4,16]{3,2,1,0} parameter(0)\n", "  %x = bf16[8,4,4,16]{3,2,1,0} parameter(0)\n"
      "  %dy = bf16[8,2,2,32]{3,2,1,0} parameter(4)\n  %k = bf16[16,1,1,32]{3,2,1,0} parameter(5)\n"
      "  %cudnn-conv.9 = (bf16[8,4,4,16]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %k), window={size=1x1 lhs_dilate=2x2}, dim_labels=b01f_o01i->b01f, custom_call_target=\"__cudnn$convForward\", metadata={op_name=\"jit(step)/transpose(jvp(Net))/conv_general_dilated\"}\n")
  info = profile_gpu.classify(text)
  assert info["cudnn-conv.9"]["kind"] == "conv_input_grad"
  assert info["cudnn-conv.9"]["flops"] == 2 * 8 * 2 * 2 * 32 * 16  # 2 N Ho Wo C_out C_in


def test_a_strided_convolution_counts_its_smaller_output():
  strided = GPU_HLO.replace(
      "%cudnn-conv.1 = (bf16[8,4,4,16]", "%cudnn-conv.1 = (bf16[8,2,2,16]").replace(
      "%get-tuple-element.1 = bf16[8,4,4,16]", "%get-tuple-element.1 = bf16[8,2,2,16]")
  info = profile_gpu.classify(strided)
  for name in ("cudnn-conv.1", "cudnn-conv-bw-input.1", "cudnn-conv-bw-filter.1"):
    assert info[name]["flops"] == CONV_FLOPS // 4, name


def test_summary_per_step_rates_and_floor():
  steps = 3
  ops = {"cudnn-conv.1": 3e-6, "cudnn-conv-bw-input.1": 3e-6, "cudnn-conv-bw-filter.1": 6e-6,
         "input_reduce_fusion": 1.5e-6, "loop_maximum_fusion": 3e-7, "transpose_fusion": 6e-7,
         "<memset32>": 3e-7, "not-in-the-module": 3e-7}
  summary = profile_gpu.summarize(ops, GPU_HLO, steps, step_flops=4 * CONV_FLOPS)
  kinds = summary["kinds"]
  assert kinds["conv_forward"]["time_s"] == pytest.approx(1e-6)
  assert kinds["conv_filter_grad"]["tflop_per_s"] == pytest.approx(CONV_FLOPS / 2e-6 / 1e12)
  assert kinds["copies"]["time_s"] == pytest.approx(3e-7)  # the transpose and the memset
  assert kinds["other"]["time_s"] == pytest.approx(1e-7)
  assert summary["unmatched_time_s"] == pytest.approx(2e-7)
  assert summary["kernel_time_s"] == pytest.approx(sum(ops.values()) / steps)
  assert summary["conv_share_of_step_flops"] == pytest.approx(0.75)
  bound = profile_gpu.floor(summary, 4 * CONV_FLOPS, matmul_tflops=1.0, copy_tb_per_s=1.0,
                            peak=2e12)
  moved = sum(kinds[k]["bytes"] for k in profile_gpu.KINDS if not k.startswith("conv_"))
  assert bound["conv_s"] == pytest.approx(3 * CONV_FLOPS / 1e12)
  assert bound["memory_bound_s"] == pytest.approx(moved / 1e12)
  assert bound["mfu"] == pytest.approx(4 * CONV_FLOPS / bound["step_s"] / 2e12)


def test_the_script_profiles_a_tiny_step_and_summarizes_what_it_saved(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS="--xla_backend_optimization_level=0")
  args = [sys.executable, "-m", "benchmarks.profile_gpu", "--model=wide_resnet", "--depth=10",
          "--width=1", "--labeled_batch=2", "--mu=1", "--dtype=float32", "--steps=1",
          "--warmup=0", "--ceilings=off", "--on_busy=run", f"--save_dir={tmp_path}",
          "--name=tiny"]
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (record,) = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  kinds = record["summary"]["kinds"]
  # XLA:CPU runs its convolutions as plain `convolution` instructions: their kind, no FLOPs.
  assert kinds["conv_forward"]["instructions"] > 0 and kinds["conv_forward"]["time_s"] > 0
  assert kinds["elementwise"]["time_s"] > 0 and kinds["reductions"]["time_s"] > 0
  assert record["step_time_s"] > 0 and record["step_flops_hlo"] > 0
  assert os.path.exists(tmp_path / "tiny.hlo.txt.gz") and os.path.exists(tmp_path / "tiny.ops.json")
  again = subprocess.run([sys.executable, "-m", "benchmarks.profile_gpu",
                          f"--from_saved={tmp_path / 'tiny'}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
  assert again.returncode == 0, again.stderr[-3000:]
  (redone,) = [json.loads(line) for line in again.stdout.splitlines() if line.strip()]
  assert redone["summary"]["kinds"] == kinds


def test_kernels_of_a_cuda_graph_are_matched_by_name_once_per_launch():
  """XLA:GPU runs fusions inside command buffers (CUDA graphs): the kernels' hlo_op names
  the graph, the kernel's own name the fusion ('.' written '_'), launched once per
  identical fusion."""
  steps = 3
  ops = {"command_buffer_7": 9e-6, "cudnn-conv.1": 3e-6}
  kernels = {
      "command_buffer_7|loop_maximum_fusion": ["command_buffer_7", "loop_maximum_fusion", 6, 6e-6],
      "command_buffer_7|input_reduce_fusion": ["command_buffer_7", "input_reduce_fusion", 3, 3e-6],
      "cudnn-conv.1|sm90_xmma_fprop": ["cudnn-conv.1", "sm90_xmma_fprop", 3, 3e-6]}
  summary = profile_gpu.summarize(ops, GPU_HLO, steps, step_flops=CONV_FLOPS, kernels=kernels)
  kinds = summary["kinds"]
  assert kinds["elementwise"]["time_s"] == pytest.approx(2e-6)
  assert kinds["elementwise"]["instructions"] == pytest.approx(2)  # two launches a step
  assert kinds["elementwise"]["bytes"] == 2 * 2 * (8 * 4 * 4 * 16 * 2)
  assert kinds["reductions"]["time_s"] == pytest.approx(1e-6)
  assert kinds["conv_forward"]["flops"] == CONV_FLOPS
  assert kinds["other"]["time_s"] == 0 and summary["unmatched_time_s"] == pytest.approx(0)
  # The activation comes from the network's pass (jvp( in its op_name); the reduction
  # has no op_name, so it counts as outside the networks.
  assert summary["by_source"]["elementwise_network"]["time_s"] == pytest.approx(2e-6)
  assert summary["by_source"]["elementwise_rest"]["time_s"] == 0
  assert summary["by_source"]["reductions_rest"]["time_s"] == pytest.approx(1e-6)
  assert summary["by_source"]["reductions_network"]["time_s"] == 0


def test_older_traces_kernel_rows_keyed_by_name_are_matched_too():
  """Traces saved before kernels were keyed by (hlo_op, name) hold [hlo_op, launches,
  seconds] under the kernel's name, with the graph's kernels under the first graph."""
  steps = 3
  ops = {"command_buffer_7": 6e-6, "command_buffer_8": 3e-6, "cudnn-conv.1": 3e-6}
  kernels = {"loop_maximum_fusion": ["command_buffer_7", 6, 6e-6],
             "input_reduce_fusion": ["command_buffer_7", 3, 3e-6],
             "sm90_xmma_fprop": ["cudnn-conv.1", 3, 3e-6]}
  summary = profile_gpu.summarize(ops, GPU_HLO, steps, step_flops=CONV_FLOPS, kernels=kernels)
  assert summary["kinds"]["elementwise"]["time_s"] == pytest.approx(2e-6)
  assert summary["kinds"]["reductions"]["time_s"] == pytest.approx(1e-6)
  assert summary["kinds"]["conv_forward"]["flops"] == CONV_FLOPS
  assert summary["unmatched_time_s"] == pytest.approx(0)
  assert summary["kernel_time_s"] == pytest.approx(sum(ops.values()) / steps)
