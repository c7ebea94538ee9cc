"""Per-pair DWSA in float64 with numba: the naive O(q * N^2) reference for the benchmarks.

This is the baseline that ``benchmarks/bench_dwsa.py`` and the PyTorch training-step baseline
time against. It follows the recurrences of Shen, Wang and Elhamifar, "Learning to Segment
Actions from Visual and Language Instructions via Differentiable Weak Sequence Alignment"
(CVPR 2021), and their supplement's Algorithm 2 for the backward pass. Every cell reads its
whole prefix (forward) or suffix (backward) in an O(N) inner loop, as a direct transcription
of the formulas does. N = 2 * q_text + 1 is the number of columns.

Columns are 0-based: an even column is an empty slot (leaving the visual prototype unmatched)
and reads the inclusive prefix of the row above; an odd column j is text prototype j // 2 and
reads the exclusive prefix, so a text prototype is matched at most once.

The gradient is exact: unlike the authors' released code, no 1e-4 is added to the last row's
normaliser.
"""

import math

import numba
import numpy as np


@numba.njit
def _softmin(values, gamma):
    """Return -gamma * log(sum(exp(-values / gamma))), shifted by the minimum for stability."""
    smallest = np.inf
    for value in values:
        smallest = min(smallest, value)
    if gamma == 0.0 or not np.isfinite(smallest):
        return smallest
    total = 0.0
    for value in values:
        total += math.exp(-(value - smallest) / gamma)
    return smallest - gamma * math.log(total)


@numba.njit
def dwsa_forward(cost, gamma):
    """Fill the DWSA table row by row, each cell re-reading its prefix of the row above.

    Args:
      cost: (q, 2 * q_text + 1) float64 cost matrix, 0-based columns as in the module
        docstring.
      gamma: soft-min temperature, >= 0; 0 gives the hard minimum.

    Returns:
      (value, table, prefix): the DWSA loss (float), the table d of shape (q, N) and the
      prefix soft-minimum that each cell of rows 1.. read, prefix[i, j] = d[i, j] - cost[i, j]
      (row 0 is zero). The backward pass needs prefix; it is kept instead of recomputed as a
      difference so that large costs lose no precision.
    """
    num_rows, num_cols = cost.shape
    table = np.empty((num_rows, num_cols))
    prefix = np.zeros((num_rows, num_cols))
    table[0, :] = cost[0, :]
    for i in range(1, num_rows):
        for j in range(num_cols):
            # An even column (empty slot) reads the inclusive prefix, an odd one the exclusive.
            end = j + 1 if j % 2 == 0 else j
            prefix[i, j] = _softmin(table[i - 1, :end], gamma)
            table[i, j] = prefix[i, j] + cost[i, j]
    value = _softmin(table[num_rows - 1, :], gamma)
    return value, table, prefix


@numba.njit
def dwsa_backward(cost, gamma, value, table, prefix):
    """Return dL/dcost from the forward table (supplement Algorithm 2, naive suffix sums).

    G[i, j] is the probability that an alignment path visits cell (i, j). The last row is the
    soft-argmin of its cells. Each earlier cell sums G[i + 1, r] * exp((prefix[i + 1, r] -
    d[i, j]) / gamma) over the cells r of the next row that read it. Each exponent is <= 0
    because a soft-minimum is at most every value it reads, so no term overflows.

    Args:
      cost: (q, N) float64 cost matrix.
      gamma: soft-min temperature, > 0.
      value, table, prefix: the outputs of ``dwsa_forward`` for this cost and gamma.

    Returns:
      (q, N) float64 gradient of the DWSA loss with respect to cost.
    """
    if gamma <= 0.0:
        raise ValueError("dwsa_backward needs gamma > 0; the hard minimum has no unique gradient")
    num_rows, num_cols = cost.shape
    grad = np.zeros((num_rows, num_cols))
    last = num_rows - 1
    for j in range(num_cols):
        grad[last, j] = math.exp(-(table[last, j] - value) / gamma)
    for i in range(last - 1, -1, -1):
        for j in range(num_cols):
            total = 0.0
            for r in range(j, num_cols):
                # Cell (i + 1, r) reads (i, j) when r > j, or r == j and r is an empty slot.
                if r == j and r % 2 == 1:
                    continue
                weight = grad[i + 1, r]
                if weight == 0.0:
                    continue
                total += weight * math.exp((prefix[i + 1, r] - table[i, j]) / gamma)
            grad[i, j] = total
    return grad


def dwsa_value_and_grad(cost, gamma=1e-3):
    """Return (loss, dL/dcost) for one cost matrix, in float64.

    Args:
      cost: (q, 2 * q_text + 1) array-like cost matrix, 0-based columns (even = empty slot,
        odd j = text prototype j // 2).
      gamma: soft-min temperature, > 0.

    Returns:
      (value, grad): the DWSA loss as a float and its (q, N) float64 gradient.
    """
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] < 1 or cost.shape[1] % 2 != 1:
        raise ValueError(
            f"cost has shape {cost.shape}; expected (q, 2 * q_text + 1) with q >= 1"
        )
    value, table, prefix = dwsa_forward(cost, float(gamma))
    grad = dwsa_backward(cost, float(gamma), value, table, prefix)
    return value, grad
