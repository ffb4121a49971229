"""l2tl_jax: Learning to Transfer Learn (L2TL) in JAX."""

__version__ = "0.1.0"
