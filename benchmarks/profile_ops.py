r"""The CPU step's kinds of work timed one by one, JAX against PyTorch, on WRN's shapes.

The convolutions and BatchNorms are read off the Flax WRN-depth-width traced on N images
(so the shapes are the ones that train); each kind of work is then timed alone in both
frameworks, interleaved round by round:

  conv_forward       every convolution's forward
  conv_input_grad    every convolution's gradient with respect to its input
  conv_filter_grad   every convolution's gradient with respect to its kernel
  batch_norm         every BatchNorm in train mode with its leaky ReLU, forward + backward
  update_and_ema     SGD-Nesterov with weight decay on all parameters, then the EMA
  network            the whole network's forward + backward in train mode, for reference

A kind's time is the sum over the network's layers of each distinct shape's median
(times the number of layers with that shape). PyTorch's convolutions are its own CPU
kernels, the gradients through `aten.convolution_backward` (what autograd calls) asked
for one gradient at a time; JAX's are `lax.conv_general_dilated` and its two
transposes, each jitted alone, under the process's XLA_FLAGS (`--cpu_convolutions`).

Each op alone allocates its output afresh, which a whole step avoids, so the sums exceed a
step's share of that work in both frameworks alike: compare the two columns of a kind,
not a kind with a step time. `benchmarks/profile_step.py` gives the shares inside steps.

  python -m benchmarks.profile_ops --images=240 --rounds=5 --cpu_convolutions=eigen
"""

import argparse
import collections
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import step_bench
from benchmarks import timing


def layer_shapes(depth: int, width: int, images: int):
  """The Flax WRN, its variables' shapes and Counters of its conv and BatchNorm shapes.

  Conv keys are (input shape NHWC, kernel size, output features, stride).
  """
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from mpl_jax.models import wide_resnet  # pylint: disable=import-outside-toplevel
  model = wide_resnet.WideResNet(num_classes=10, depth=depth, width=width)
  x = jax.ShapeDtypeStruct((images, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  convs, norms = collections.Counter(), collections.Counter()

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.BatchNorm)):
      shape = tuple(args[0].shape)
      if isinstance(module, nn.BatchNorm):
        norms[shape] += 1
      else:
        strides = module.strides or 1
        stride = strides if isinstance(strides, int) else strides[0]
        convs[(shape, module.kernel_size[0], module.features, stride)] += 1
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                            rngs={"dropout": jax.random.key(1)}),
                   variables, x)
  return model, variables, convs, norms


def _jax_timed(fn, *args) -> Callable[[], float]:
  compiled = jax.jit(fn).lower(*args).compile()
  return lambda: timing.time_call(lambda: compiled(*args), jax.block_until_ready)[0]


def _conv(x, w, stride):
  return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _flax_batch_norm(shape, normal) -> Callable[[], float]:
  """The model's BatchNorm (mpl_jax.models.layers) in train mode + leaky ReLU, fwd + bwd."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from mpl_jax.models import layers  # pylint: disable=import-outside-toplevel
  norm = layers.batch_norm(True, momentum=0.99, epsilon=1e-3, dtype=jnp.float32)()
  x, g = normal(shape), normal(shape)
  variables = norm.init(jax.random.key(0), x)

  def fwd_bwd(params, x, g):
    def apply(p, x):
      y, _ = norm.apply({"params": p, "batch_stats": variables["batch_stats"]}, x,
                        mutable=["batch_stats"])
      return nn.leaky_relu(y, 0.2)
    y, back = jax.vjp(apply, params, x)
    return y, back(g)
  return _jax_timed(fwd_bwd, variables["params"], x, g)


def jax_ops(convs, norms, model, variables, images) -> dict[tuple[str, Any], Callable]:
  """Timed callables of every kind of work in JAX, keyed by (kind, shape key)."""
  import optax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  normal = lambda shape: jnp.asarray(rng.standard_normal(shape, np.float32))
  ops = {}
  for key in convs:
    shape, kernel, features, stride = key
    x, w = normal(shape), normal((kernel, kernel, shape[-1], features))
    g = normal(jax.eval_shape(lambda x, w, s=stride: _conv(x, w, s), x, w).shape)
    ops[("conv_forward", key)] = _jax_timed(lambda x, w, s=stride: _conv(x, w, s), x, w)
    ops[("conv_input_grad", key)] = _jax_timed(
        lambda x, w, g, s=stride: jax.vjp(lambda x: _conv(x, w, s), x)[1](g), x, w, g)
    ops[("conv_filter_grad", key)] = _jax_timed(
        lambda x, w, g, s=stride: jax.vjp(lambda w: _conv(x, w, s), w)[1](g), x, w, g)

  for shape in norms:
    ops[("batch_norm", shape)] = _flax_batch_norm(shape, normal)

  params = jax.tree.map(lambda s: normal(s.shape) * 0.05, variables["params"])
  stats = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), variables["batch_stats"])
  xs, ys = normal((images, 32, 32, 3)), jnp.asarray(rng.integers(0, 10, images))

  def network(params, stats, x, y):
    def loss(p):
      logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    return jax.grad(loss, has_aux=True)(params)

  decay = jax.tree_util.tree_map_with_path(
      lambda path, _: "kernel" in jax.tree_util.keystr(path), params)
  tx = optax.chain(optax.add_decayed_weights(5e-4, decay),
                   optax.sgd(0.05, momentum=0.9, nesterov=True))

  def update(params, opt_state, ema, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, optax.incremental_update(params, ema, 0.005)
  ops[("network", None)] = _jax_timed(network, params, stats, xs, ys)
  ops[("update_and_ema", None)] = _jax_timed(update, params, tx.init(params), params,
                                             jax.tree.map(jnp.ones_like, params))
  return ops


def torch_ops(convs, norms, depth, width, images, channels_last) -> dict[tuple[str, Any], Callable]:
  """The same kinds of work in PyTorch, keyed alike."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  tensor = lambda *shape: torch.randn(*shape).contiguous(memory_format=fmt)
  timed = lambda fn: (lambda: timing.time_call(fn, lambda _: None)[0])
  ops = {}
  for key in convs:
    (n, h, w, c), kernel, features, stride = key
    x, k, pad = tensor(n, c, h, w), tensor(features, c, kernel, kernel), kernel // 2
    g = torch.randn_like(F.conv2d(x, k, stride=stride, padding=pad)).contiguous(
        memory_format=fmt)
    back = lambda mask, x=x, k=k, g=g, s=stride, p=pad: torch.ops.aten.convolution_backward(
        g, x, k, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)
    ops[("conv_forward", key)] = timed(
        lambda x=x, k=k, s=stride, p=pad: F.conv2d(x, k, stride=s, padding=p))
    ops[("conv_input_grad", key)] = timed(lambda b=back: b([True, False, False]))
    ops[("conv_filter_grad", key)] = timed(lambda b=back: b([False, True, False]))
  for shape in norms:
    n, h, w, c = shape
    x = tensor(n, c, h, w).requires_grad_()
    bn = torch.nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)
    g = tensor(n, c, h, w)
    params = [x, bn.weight, bn.bias]
    ops[("batch_norm", shape)] = timed(  # gradients returned, not added into .grad
        lambda x=x, bn=bn, g=g, p=params: torch.autograd.grad(F.leaky_relu(bn(x), 0.2), p, g))
  net = torch_reference.WideResNet(depth, width).to(memory_format=fmt).train()
  opt = torch_reference.make_optimizer(net)
  ema = [p.detach().clone() for p in net.parameters()]
  xs, ys = tensor(images, 3, 32, 32), torch.randint(0, 10, (images,))

  def network():
    F.cross_entropy(net(xs), ys).backward()

  def update():
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 0.005)
  network()
  ops[("network", None)] = timed(network)
  ops[("update_and_ema", None)] = timed(update)
  return ops


def profile(depth: int, width: int, images: int, rounds: int, warmup: int,
            channels_last: bool) -> dict[str, Any]:
  """Times every kind of work in both frameworks, interleaved; returns the JSON record."""
  model, variables, convs, norms = layer_shapes(depth, width, images)
  calls = {("jax", *k): fn for k, fn in jax_ops(convs, norms, model, variables, images).items()}
  calls.update({("torch", *k): fn for k, fn in
                torch_ops(convs, norms, depth, width, images, channels_last).items()})
  times: dict[tuple, list[float]] = collections.defaultdict(list)
  order = list(calls.items())
  for r in range(warmup + rounds):
    for name, fn in (order if r % 2 == 0 else order[::-1]):  # who goes first alternates
      seconds = fn()
      if r >= warmup:
        times[name].append(seconds)
  counts = {**convs, **norms, None: 1}
  kinds: dict[str, dict[str, float]] = collections.defaultdict(dict)
  for (framework, kind, key), values in times.items():
    kinds[kind][framework] = kinds[kind].get(framework, 0.0) + timing.median(values) * counts[key]
  for row in kinds.values():
    row["jax_over_torch_throughput"] = row["torch"] / row["jax"]
  return {"benchmark": "profile_ops", "model": "wide_resnet", "depth": depth, "width": width,
          "images": images, "rounds": rounds, "warmup": warmup,
          "torch_channels_last": channels_last, "kinds": dict(kinds),
          "conv_shapes": [[list(k[0]), k[1], k[2], k[3], n] for k, n in convs.items()],
          "jax_version": jax.__version__, **timing.machine_facts()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--depth", type=int, default=28)
  p.add_argument("--width", type=int, default=2)
  p.add_argument("--images", type=int, default=240,
                 help="N: 240 is the teacher's B(1 + 2 mu) at B=16, mu=7")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--channels_last", default="off", choices=("on", "off"),
                 help="PyTorch's memory format: NHWC (on) or NCHW (off, its CPU default)")
  step_bench.add_cpu_convolutions_flag(p)
  timing.add_quiet_flags(p)
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  before = step_bench.set_up(args)
  import torch  # pylint: disable=import-outside-toplevel
  record = profile(args.depth, args.width, args.images, args.rounds, args.warmup,
                   args.channels_last == "on")
  record.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads())
  timing.emit(record, before)


if __name__ == "__main__":
  main(sys.argv[1:])
