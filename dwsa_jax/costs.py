"""Cost matrices between time-ordered visual and linguistic prototypes.

The DWSA cost of matching visual prototype i with linguistic prototype n is 1 - cos(v_i, l_n).
Leaving a visual prototype unmatched costs delta_e, placed in the even (0-based) "empty slot"
columns of a (q, 2 * q_text + 1) matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
    """Scale vectors to unit L2 norm; a zero vector stays zero and has a finite gradient."""
    squared = jnp.sum(x * x, axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def cosine_cost_matrix(a, b):
    """Pairwise cosine distance 1 - cos(a_i, b_n).

    Args:
        a: (q, D) vectors.
        b: (m, D) vectors of the same dimension.

    Returns:
        (q, m) costs in [0, 2].
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"cosine_cost_matrix needs (q, D) and (m, D) arrays of one dimension D, got shapes "
            f"{a.shape} and {b.shape}"
        )
    return 1.0 - l2_normalize(a) @ l2_normalize(b).T


def dwsa_cost_matrix(visual, text, *, delta_e: float = 1.0, row_softmax: bool = False):
    """Build the DWSA cost matrix of visual against linguistic prototypes.

    Args:
        visual: (q, D) visual prototypes in time order.
        text: (q_text, D) linguistic prototypes in time order.
        delta_e: cost of leaving a visual prototype unmatched (empty-slot cost); default 1.
        row_softmax: apply a softmax over each row, empty-slot columns included, as the
            authors' released training code does. Off by default, which is the paper's
            formulation: raw cosine distances keep delta_e on the same scale as the match
            costs, so delta_e = 1 means "unmatched costs as much as an orthogonal match".

    Returns:
        (q, 2 * q_text + 1) matrix: column 2n + 1 contains 1 - cos(v_i, l_n), even columns delta_e.
    """
    pair_costs = cosine_cost_matrix(visual, text)
    q, q_text = pair_costs.shape
    cost = jnp.full((q, 2 * q_text + 1), delta_e, dtype=pair_costs.dtype)
    cost = cost.at[:, 1::2].set(pair_costs)
    if row_softmax:
        cost = jax.nn.softmax(cost, axis=-1)
    return cost
