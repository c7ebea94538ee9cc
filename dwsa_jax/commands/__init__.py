"""Command-line commands; see `dwsa_jax.cli`."""
