"""`make demo`: TwoMoon, supervised vs pseudo labels vs MPL, one seed, with a figure."""

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", "demo_workdir", "Where runs and the PNG go.")
_SEED = flags.DEFINE_integer("seed", 0, "Data, labels and initialization seed.")
_STEPS = flags.DEFINE_integer("num_steps", None, "Override the steps per method.")


def main(argv):
  del argv
  from mpl_jax import xla_options  # pylint: disable=g-import-not-at-top
  xla_options.set_up_entry_point()  # as main.py: before JAX starts
  from mpl_jax import demo  # pylint: disable=g-import-not-at-top
  demo.run(_WORKDIR.value, seed=_SEED.value, num_steps=_STEPS.value)


if __name__ == "__main__":
  app.run(main)
