"""The pieces every step shares: an optimizer update, a supervised update, the supervised
+ UDA loss, and the end of a step (the step counter and the student's EMA)."""

import jax
import jax.numpy as jnp
import optax

from mpl_jax import accumulation
from mpl_jax import losses
from mpl_jax.state import ApplyFn, NetState, TrainState, ema_update, tree_norm
from mpl_jax.steps.settings import Network, StepDeps, UdaSettings

Metrics = dict[str, jax.Array]


def optimizer_step(net: NetState, grads, network: Network, model_state, step
                   ) -> tuple[NetState, object]:
  """One optimizer update at the learning rate of global step `step`: the new network
  and the optimizer's direction u at unit learning rate (theta' = theta + lr * u)."""
  direction, opt_state = network.tx.update(grads, net.opt_state, net.params)
  lr = network.learning_rate(step)
  updates = jax.tree.map(lambda u: lr * u, direction)
  return NetState(params=optax.apply_updates(net.params, updates),
                  model_state=model_state, opt_state=opt_state), direction


def apply_grads(net: NetState, grads, network: Network, model_state, step) -> NetState:
  """One optimizer update at the learning rate of global step `step`."""
  return optimizer_step(net, grads, network, model_state, step)[0]


def finish(state: TrainState, deps: StepDeps, *, student: NetState,
           teacher: NetState | None = None, baseline: jax.Array | None = None) -> TrainState:
  """Advances the step and the student's EMA."""
  return state.replace(
      step=state.step + 1,
      student=student,
      student_ema=ema_update(state.student_ema, student, deps.ema_decay),
      teacher=state.teacher if teacher is None else teacher,
      reward_baseline=state.reward_baseline if baseline is None else baseline)


def net_metrics(prefix: str, net: NetState, grads, lr: jax.Array) -> Metrics:
  return {f"{prefix}/grad_norm": tree_norm(grads), f"{prefix}/param_norm": tree_norm(net.params),
          f"{prefix}/learning_rate": lr}


def uda_weight(step: jax.Array, uda: UdaSettings) -> jax.Array:
  """lambda_uda * min(1, step / ramp_steps)."""
  ramp = jnp.minimum(1.0, step.astype(jnp.float32) / max(uda.ramp_steps, 1))
  return uda.weight * ramp


def smoothed_one_hot(labels: jax.Array, deps: StepDeps) -> jax.Array:
  """One-hot labels with the run's label smoothing."""
  return losses.smooth(losses.one_hot(labels, deps.num_classes), deps.label_smoothing)


def supervised_update(net: NetState, network: Network, x, y, rng, step, deps: StepDeps,
                      prefix: str) -> tuple[NetState, Metrics]:
  """One optimizer step on smoothed CE over a labeled batch."""

  def loss_fn(params, b, rng):
    targets = smoothed_one_hot(b["y"], deps)
    logits, model_state = network.apply(params, net.model_state, b["x"], train=True, rng=rng)
    return losses.mean_cross_entropy(targets, logits), (losses.accuracy(logits, b["y"]),
                                                        model_state)

  (loss, (accuracy, model_state)), grads = accumulation.value_and_grad(
      loss_fn, net.params, {"x": x, "y": y}, rng, deps.accum_steps)
  new_net = apply_grads(net, grads, network, model_state, step)
  metrics = {f"{prefix}/loss_labeled": loss, f"{prefix}/accuracy_labeled": accuracy,
             **net_metrics(prefix, new_net, grads, network.learning_rate(step))}
  return new_net, metrics


def split3(logits, n_labeled, n_unlabeled):
  """Rows [labeled, weak view, strong view] of logits over the concatenated views."""
  return (logits[:n_labeled], logits[n_labeled:n_labeled + n_unlabeled],
          logits[n_labeled + n_unlabeled:])


def sup_uda_loss(logits, y_onehot_smoothed, n_labeled, n_unlabeled, weight, uda: UdaSettings,
                 supervised_weight=1.0):
  """supervised_weight * CE on the labeled part + weight * UDA on the unlabeled parts."""
  t_l, t_w, t_s = split3(logits, n_labeled, n_unlabeled)
  sup = losses.mean_cross_entropy(y_onehot_smoothed, t_l)
  if uda.weight > 0:
    uda_loss, mask_rate = losses.uda_consistency(t_w, t_s, temperature=uda.temperature,
                                                 threshold=uda.threshold)
  else:
    uda_loss, mask_rate = jnp.zeros(()), jnp.zeros(())
  return supervised_weight * sup + weight * uda_loss, (sup, uda_loss, mask_rate)


def predict(apply: ApplyFn, params, model_state, inputs) -> jax.Array:
  """Eval-mode logits."""
  logits, _ = apply(params, model_state, inputs, train=False)
  return logits
