"""dwsa-jax: Soft Ordered Prototype Learning and Differentiable Weak Sequence Alignment in JAX.

Reference: Y. Shen, L. Wang and E. Elhamifar, "Learning to Segment Actions from Visual and
Language Instructions via Differentiable Weak Sequence Alignment", CVPR 2021.
"""

from dwsa_jax.alignment import (
    DWSAResult,
    PaddedCosts,
    alignment_path,
    dwsa,
    dwsa_table,
    matched_text_mask,
    pad_cost_matrices,
    path_matches,
    soft_dtw,
)
from dwsa_jax.costs import cosine_cost_matrix, dwsa_cost_matrix, l2_normalize
from dwsa_jax.prototypes import (
    SOPLConfig,
    SOPLOutput,
    kmeans_plus_plus,
    segment_times,
    sopl,
)
from dwsa_jax.softmin import softmin

__version__ = "0.1.0"

__all__ = [
    "DWSAResult",
    "PaddedCosts",
    "SOPLConfig",
    "SOPLOutput",
    "alignment_path",
    "cosine_cost_matrix",
    "dwsa",
    "dwsa_cost_matrix",
    "dwsa_table",
    "kmeans_plus_plus",
    "l2_normalize",
    "matched_text_mask",
    "pad_cost_matrices",
    "path_matches",
    "segment_times",
    "soft_dtw",
    "softmin",
    "sopl",
]
