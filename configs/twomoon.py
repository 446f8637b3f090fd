"""TwoMoon (paper section 3.1, Figure 2): 2,000 points, 6 labeled, 2x8 sigmoid MLPs.

Run one method (the argument after ':' picks it; default mpl):
  python main.py --config=configs/twomoon.py:mpl --workdir=/tmp/twomoon_mpl
  python main.py --config=configs/twomoon.py:supervised --workdir=/tmp/twomoon_sup
  python main.py --config=configs/twomoon.py --config.mpl.estimator=meta --workdir=...
Expected: see RESULTS.md (TwoMoon) for mean +- std over seeds; `make demo` runs
supervised, pseudo labels and MPL for one seed and draws their decision boundaries.
CPU, seconds per method.
"""

from configs import common
from mpl_jax import methods

# The methods of the registry that can train on this data set.
METHODS = methods.for_data("twomoon")


def get_config(arg: str | None = None):
  method = arg or "mpl"
  runlocal = method.endswith(",runlocal") or method == "runlocal"
  method = method.split(",")[0]
  if method == "runlocal":
    method = "mpl"
  c = common.base_config()
  c.method = method
  c.num_steps = 5000
  c.log_every_steps = 500
  c.data = common.ml_collections.ConfigDict({
      "name": "twomoon",
      "num_points": 2000,          # 1,000 per moon
      "noise": 0.1,                # std of Gaussian noise on each coordinate
      "labeled_per_class": 3,      # 6 labeled points in all
      "labeled_selection": "random",  # random | tips | inner (where the labels sit)
      "labeled_batch_size": 0,     # 0 = all labeled points every step (full batch)
      "unlabeled_batch_size": 0,   # 0 = all 2,000 points every step (full batch)
      "strong_noise": 0.0,         # Gaussian noise of the strong view (UDA); 0 = none
  })
  c.model = common.ml_collections.ConfigDict({
      "name": "mlp",
      "hidden": (8, 8),            # two hidden layers of 8 units
      "activation": "sigmoid",
      "init_scale": 0.1,           # weights and biases ~ U(-0.1, 0.1)
  })
  c.teacher.learning_rate = 0.1    # plain SGD, as the paper
  c.student.learning_rate = 0.1
  c.mpl.log_grad_parts = True     # measure the feedback against the supervised gradient
  c.pseudo_labels.teacher_steps = 5000
  c.eval.every_steps = 1000
  c.eval.batch_size = 2000
  c.checkpoint.every_steps = 1000
  c.mesh.num_devices = 1           # 6 labeled points per step do not shard; one device
  if method == "uda":
    c.uda.weight = 1.0
    c.uda.threshold = 0.0
    c.uda.temperature = 0.5
    c.data.strong_noise = 0.1
  if runlocal:
    c.num_steps = 200
    c.pseudo_labels.teacher_steps = 200
    c.log_every_steps = 50
    c.eval.every_steps = 100
    c.checkpoint.every_steps = 100
  return c
