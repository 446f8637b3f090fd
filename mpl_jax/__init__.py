"""mpl_jax: Meta Pseudo Labels in JAX/Flax."""

__version__ = "0.1.0"
