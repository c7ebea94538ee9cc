"""dwsa-jax: Soft Ordered Prototype Learning and Differentiable Weak Sequence Alignment in JAX.

Reference: Y. Shen, L. Wang and E. Elhamifar, "Learning to Segment Actions from Visual and
Language Instructions via Differentiable Weak Sequence Alignment", CVPR 2021.
"""

__version__ = "0.1.0"
