r"""A PyTorch MPL step, for speed comparisons only (not used for training).

An independent implementation of the step `mpl_jax.steps.mpl.mpl_step` computes with the
default estimator (docs/METHOD.md, section 2), built for the same work per step:

  teacher forward (train mode) on concat[x_l, u_w, u_s]; smoothed CE on x_l; UDA on the
  weak/strong pair; pseudo labels y_hat ~ softmax(t_s); the student's gradient g_u of
  smoothed CE(y_hat, S(u_s)) and its SGD-Nesterov update; the reward
  h = lr_S <grad L_l(theta_S'), g_u> from one forward+backward on x_l at the updated
  student (BatchNorm statistics of that pass are not kept, as in JAX); the teacher's
  loss sup + w_uda uda + sg(h) CE(y_hat, t_s), one backward, its SGD-Nesterov update;
  the student's EMA (parameters and BatchNorm statistics).

The network is WRN-depth-width as `mpl_jax/models/wide_resnet.py` builds it:
pre-activation blocks (BN, leaky ReLU 0.2, conv), the shortcut a 1x1 convolution of the
activated input where the shape changes, a 16k-channel stem, BN momentum 0.01 (Flax
decay 0.99) and epsilon 1e-3, dropout before the head. The optimizers are SGD with
Nesterov momentum 0.9, weight decay on convolution and dense kernels only, the paper's
CIFAR learning rates and warmup + cosine schedule. Nothing leaves the device during a
step (h stays a tensor).

  python -m benchmarks.torch_reference --labeled_batch=16 --mu=7 --runs=5
  python -m benchmarks.torch_reference --labeled_batch=128 --mu=7 --dtype=bfloat16  # AMP
"""

import argparse
import math
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import timing

# The paper's CIFAR-10 settings (docs/METHOD.md, section 6), as benchmarks/jax_case.py uses them.
NUM_CLASSES = 10
LABEL_SMOOTHING = 0.15
UDA_WEIGHT, UDA_RAMP, UDA_TEMPERATURE, UDA_THRESHOLD = 8.0, 5000, 0.7, 0.6
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
WARMUP_STEPS, TOTAL_STEPS = 5000, 300_000
EMA_DECAY = 0.995
DROPOUT = 0.2
BN_MOMENTUM, BN_EPSILON, LEAKY_SLOPE = 0.01, 1e-3, 0.2


class WideBlock(nn.Module):
  """BN-act-conv3x3(stride)-BN-act-conv3x3 plus the identity or a 1x1 projection."""

  def __init__(self, in_channels: int, channels: int, stride: int):
    super().__init__()
    self.bn_1 = nn.BatchNorm2d(in_channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
    self.conv_1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
    self.bn_2 = nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
    self.conv_2 = nn.Conv2d(channels, channels, 3, 1, padding=1, bias=False)
    self.shortcut = (nn.Conv2d(in_channels, channels, 1, stride, bias=False)
                     if stride != 1 or in_channels != channels else None)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    activated = F.leaky_relu(self.bn_1(x), LEAKY_SLOPE)
    y = self.conv_1(activated)
    y = self.conv_2(F.leaky_relu(self.bn_2(y), LEAKY_SLOPE))
    return y + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
  """WRN-depth-width for 32x32 inputs: groups at 16k, 32k, 64k channels."""

  def __init__(self, depth: int = 28, width: int = 2, num_classes: int = NUM_CLASSES,
               dropout: float = DROPOUT):
    super().__init__()
    if depth < 10 or (depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
    per_group = (depth - 4) // 6
    channels = [16 * width, 32 * width, 64 * width]
    self.stem = nn.Conv2d(3, channels[0], 3, 1, padding=1, bias=False)
    blocks, in_channels = [], channels[0]
    for out_channels, stride in zip(channels, (1, 2, 2)):
      for i in range(per_group):
        blocks.append(WideBlock(in_channels, out_channels, stride if i == 0 else 1))
        in_channels = out_channels
    self.blocks = nn.Sequential(*blocks)
    self.final_bn = nn.BatchNorm2d(in_channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
    self.dropout = nn.Dropout(dropout)
    self.head = nn.Linear(in_channels, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, nn.Linear):
        bound = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.zeros_(m.bias)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.blocks(self.stem(x))
    x = F.leaky_relu(self.final_bn(x), LEAKY_SLOPE)
    return self.head(self.dropout(x.mean(dim=(2, 3))))


def learning_rate(step: int) -> float:
  """Linear warmup, then cosine to 0 (the JAX side's `optim.learning_rate_schedule`)."""
  if step < WARMUP_STEPS:
    return LEARNING_RATE * (step + 1) / WARMUP_STEPS
  progress = min(1.0, (step - WARMUP_STEPS) / max(TOTAL_STEPS - WARMUP_STEPS, 1))
  return LEARNING_RATE * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module) -> torch.optim.SGD:
  """SGD-Nesterov with weight decay on kernels (ndim > 1) only."""
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  return torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY},
                          {"params": no_decay, "weight_decay": 0.0}],
                         lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True,
                         foreach=True)


def soft_cross_entropy(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
  """Mean over the batch of -sum_k q_k log_softmax(z)_k."""
  return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def smooth(targets: torch.Tensor, epsilon: float) -> torch.Tensor:
  return (1.0 - epsilon) * targets + epsilon / targets.shape[-1]


class TorchMpl:
  """Teacher, student, EMA, optimizers and one fixed batch; `step()` runs one MPL step."""

  def __init__(self, labeled_batch: int, mu: int, *, depth: int = 28, width: int = 2,
               dtype: str = "float32", device: str | None = None,
               channels_last: bool | None = None, seed: int = 0):
    torch.manual_seed(seed)
    self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    self.on_gpu = self.device.type == "cuda"
    if self.on_gpu:
      torch.backends.cudnn.benchmark = True
      # float32 on the tensor cores as tf32, as JAX does by default on these GPUs.
      torch.backends.cuda.matmul.allow_tf32 = True
      torch.backends.cudnn.allow_tf32 = True
    if dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype {dtype!r} is unknown; valid: ['float32', 'bfloat16']")
    self.amp = dtype == "bfloat16"
    self.channels_last = self.on_gpu if channels_last is None else channels_last
    fmt = torch.channels_last if self.channels_last else torch.contiguous_format
    self.labeled_batch, self.mu = labeled_batch, mu
    self.teacher = WideResNet(depth, width).to(self.device, memory_format=fmt).train()
    self.student = WideResNet(depth, width).to(self.device, memory_format=fmt).train()
    self.teacher_opt = make_optimizer(self.teacher)
    self.student_opt = make_optimizer(self.student)
    self.student_params = list(self.student.parameters())
    self.ema = [t.detach().clone() for t in self._ema_sources()]
    self.student_bns = [m for m in self.student.modules() if isinstance(m, nn.BatchNorm2d)]
    self.step_count = 0
    image = lambda n: torch.randn(n, 3, 32, 32, device=self.device).contiguous(
        memory_format=fmt)
    n_u = mu * labeled_batch
    self.x_l = image(labeled_batch)
    self.y_l = torch.randint(0, NUM_CLASSES, (labeled_batch,), device=self.device)
    self.u_w = image(n_u)
    self.u_s = (self.u_w + 0.5 * image(n_u)).contiguous(memory_format=fmt)

  def _ema_sources(self) -> list[torch.Tensor]:
    """Student parameters and floating BatchNorm statistics (not the step counters)."""
    buffers = [b for b in self.student.buffers() if b.is_floating_point()]
    return [p.detach() for p in self.student.parameters()] + buffers

  def _autocast(self):
    return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

  def step(self) -> dict[str, torch.Tensor]:
    """One MPL step; returns the losses and the reward as device tensors."""
    n_l, n_u = self.labeled_batch, self.mu * self.labeled_batch
    step = self.step_count
    lr = learning_rate(step)

    # 1. Teacher forward on all three views; supervised and UDA losses.
    with self._autocast():
      t_all = self.teacher(torch.cat([self.x_l, self.u_w, self.u_s])).float()
    t_l, t_w, t_s = t_all[:n_l], t_all[n_l:n_l + n_u], t_all[n_l + n_u:]
    y_onehot = F.one_hot(self.y_l, NUM_CLASSES).float()
    sup = soft_cross_entropy(smooth(y_onehot, LABEL_SMOOTHING), t_l)
    q = torch.softmax(t_w.detach() / UDA_TEMPERATURE, dim=-1)
    mask = (q.max(dim=-1).values >= UDA_THRESHOLD).float()
    uda = (mask * -(q * F.log_softmax(t_s, dim=-1)).sum(dim=-1)).mean()
    uda_weight = UDA_WEIGHT * min(1.0, step / UDA_RAMP)

    # 2. Pseudo labels sampled from the strong view; one y_hat for student and feedback.
    y_hat = torch.multinomial(torch.softmax(t_s.detach(), dim=-1), 1).squeeze(1)
    y_hat_onehot = F.one_hot(y_hat, NUM_CLASSES).float()

    # 3. The student's step on the pseudo labels.
    with self._autocast():
      s_u = self.student(self.u_s)
    student_loss = soft_cross_entropy(smooth(y_hat_onehot, LABEL_SMOOTHING), s_u)
    g_u = torch.autograd.grad(student_loss, self.student_params)
    for p, g in zip(self.student_params, g_u):
      p.grad = g
    for group in self.student_opt.param_groups:
      group["lr"] = lr
    self.student_opt.step()

    # 4. The reward h = lr <grad L_l(theta_S'), g_u>; this pass keeps no BN statistics.
    for bn in self.student_bns:
      bn.momentum = 0.0
    with self._autocast():
      s_l = self.student(self.x_l)
    for bn in self.student_bns:
      bn.momentum = BN_MOMENTUM
    labeled_loss = soft_cross_entropy(y_onehot, s_l)
    g_after = torch.autograd.grad(labeled_loss, self.student_params)
    products = torch._foreach_mul(g_after, g_u)
    reward = lr * torch.stack([product.sum() for product in products]).sum()

    # 5-6. The teacher: sup + UDA + sg(h) CE(y_hat, t_s), one backward, one update.
    feedback = reward.detach() * soft_cross_entropy(y_hat_onehot, t_s)
    teacher_loss = sup + uda_weight * uda + feedback
    self.teacher_opt.zero_grad(set_to_none=True)
    teacher_loss.backward()
    for group in self.teacher_opt.param_groups:
      group["lr"] = lr
    self.teacher_opt.step()

    # 7. EMA of the student's parameters and BatchNorm statistics.
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self._ema_sources(), 1.0 - EMA_DECAY)
    self.step_count += 1
    return {"teacher_loss": teacher_loss.detach(), "student_loss": student_loss.detach(),
            "reward": reward.detach()}

  def sync(self, _: Any = None) -> None:
    if self.on_gpu:
      torch.cuda.synchronize(self.device)

  def timed_step(self) -> float:
    seconds, _ = timing.time_call(self.step, self.sync)
    return seconds

  def device_name(self) -> str:
    if self.on_gpu:
      return torch.cuda.get_device_name(self.device)
    return timing.cpu_name()

  def describe(self) -> dict[str, Any]:
    return {"framework": "torch", "torch_version": torch.__version__,
            "device": self.device_name(), "amp_bf16": self.amp,
            "channels_last": self.channels_last, "torch_threads": torch.get_num_threads()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depth", type=int, default=28)
  p.add_argument("--width", type=int, default=2)
  p.add_argument("--labeled_batch", type=int, default=16)
  p.add_argument("--mu", type=int, default=7)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="bfloat16: autocast (AMP) with float32 parameters")
  p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
  p.add_argument("--channels_last", default=None, choices=("on", "off"),
                 help="memory format (default: on for GPUs, off for CPUs)")
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  timing.add_quiet_flags(p)
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  channels_last = None if args.channels_last is None else args.channels_last == "on"
  before = timing.wait_until_quiet(args)
  mpl = TorchMpl(args.labeled_batch, args.mu, depth=args.depth, width=args.width,
                 dtype=args.dtype, device=args.device, channels_last=channels_last)
  for _ in range(args.warmup):
    mpl.timed_step()
  times = [mpl.timed_step() for _ in range(args.runs)]
  images = args.labeled_batch * (1 + 2 * args.mu)
  step_time = timing.median(times)
  record = {"benchmark": "torch_reference", **mpl.describe(), "model": "wide_resnet",
            "depth": args.depth, "width": args.width, "labeled_batch": args.labeled_batch,
            "mu": args.mu, "estimator": "reinforce", "reward": "dot", "dtype": args.dtype,
            "runs": args.runs, "warmup": args.warmup, "step_time_s": step_time,
            "step_time_min_s": min(times), "step_times_s": times, "images_per_step": images,
            "images_per_s": images / step_time, **timing.machine_facts()}
  if mpl.on_gpu:
    record["device_peak_bytes"] = torch.cuda.max_memory_allocated(mpl.device)
  timing.emit(record, before)


if __name__ == "__main__":
  main(sys.argv[1:])
