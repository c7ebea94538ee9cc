"""Test setup: float64 is enabled so that exactness tests can run in double precision.

Tests that check the float32 default pass float32 inputs explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
