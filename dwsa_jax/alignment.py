"""Differentiable Weak Sequence Alignment (DWSA) and soft-DTW on one row-scan machinery.

DWSA aligns q time-ordered visual prototypes with q_text time-ordered linguistic prototypes
while letting visual prototypes stay unmatched. Its cost matrix has shape (q, 2 * q_text + 1).
Columns are 0-based throughout the project: an even column is an "empty slot" with the cost
delta_e of leaving a visual prototype unmatched, and an odd column j is linguistic prototype
j // 2. The recursion over rows i = 1 .. q - 1 is

    d[0, j]     = cost[0, j]
    d[i, j]     = softmin(d[i-1, 0 .. j])     + cost[i, j]    for even j (slot reusable)
    d[i, j]     = softmin(d[i-1, 0 .. j-1])   + cost[i, j]    for odd j (matched once)
    L           = softmin(d[q-1, :])

so L is the soft-min over all monotone column sequences of the summed cost, and dL/dcost[i, j]
is the probability that a path visits (i, j) under p(path) ~ exp(-cost(path) / gamma).

Both passes cost O(q * N) per pair, N = 2 * q_text + 1: the forward pass takes a running
(cumulative log-sum-exp) soft-min along each row, and the backward pass of the custom VJP is a
suffix log-sum-exp along each row. gamma == 0 selects hard mode: the plain minimum, with the
indicator of one optimal path as its gradient.

Reference: Y. Shen, L. Wang and E. Elhamifar, "Learning to Segment Actions from Visual and
Language Instructions via Differentiable Weak Sequence Alignment", CVPR 2021 (forward recursion
in the main paper; backtracking and backward pass as Algorithms 1 and 2 of its supplement).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dwsa_jax.softmin import Mode, gamma_mode, prefix_softmin, running_logsumexp, softmin, softmin2


class DWSAResult(NamedTuple):
    """Value and cumulative-cost table of one DWSA problem.

    Attributes:
        value: () the soft alignment value L.
        table: (q, N) the cumulative cost d; +inf outside the valid region of a padded matrix.
            The table carries no gradient.
    """

    value: jax.Array
    table: jax.Array


class PaddedCosts(NamedTuple):
    """A batch of ragged cost matrices padded at the end.

    Attributes:
        costs: (B, Q, N) matrices, zero in padded cells.
        num_rows: (B,) int32 valid rows of each matrix.
        num_valid: (B,) int32 count per matrix. For layout "dwsa" it is the number of
            linguistic prototypes q_text (valid columns 2 * q_text + 1). For layout
            "soft_dtw" it is the number of valid columns.
    """

    costs: jax.Array
    num_rows: jax.Array
    num_valid: jax.Array


# ---------------------------------------------------------------------------------------------
# Input checks and masking, shared by DWSA and soft-DTW.


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _float_dtype(x):
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _check_count(value, low: int, high: int, name: str, fix: str):
    if value is None or not _is_concrete(value):
        return
    array = np.asarray(value)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a scalar per matrix (use jax.vmap for batches); got shape {array.shape}")
    if not (low <= int(array) <= high):
        raise ValueError(f"{name}={int(array)} is out of range [{low}, {high}]; {fix}")


def _prepare(cost, num_rows, num_cols, *, layout: str):
    """Validate a cost matrix and zero its padded cells.

    Returns (cost, num_rows, num_cols, valid) where num_rows/num_cols are int32 scalars and
    valid is the (Q, N) boolean mask of real cells. Zeroing padded cells keeps any value found
    there (even NaN) out of the result and gives those cells exactly zero gradient.
    """
    cost = jnp.asarray(cost)
    cost = cost.astype(_float_dtype(cost))
    if cost.ndim != 2:
        raise ValueError(
            f"cost must be a 2-D matrix, got shape {cost.shape}; wrap the call in jax.vmap "
            "to process a batch of matrices"
        )
    q, n = cost.shape
    if q == 0 or n == 0:
        raise ValueError(f"cost has shape {cost.shape}; it needs at least one row and one column")
    if layout == "dwsa" and n % 2 == 0:
        raise ValueError(
            f"a DWSA cost matrix has 2 * q_text + 1 columns (odd), got {n}; build it with "
            "dwsa_jax.dwsa_cost_matrix"
        )
    _check_count(num_rows, 1, q, "num_rows", f"it must count the valid rows of the {q}-row matrix")
    _check_count(num_cols, 1, n, "num_cols", f"it must count the valid columns of the {n}-column matrix")

    num_rows = jnp.asarray(q if num_rows is None else num_rows, jnp.int32)
    num_cols = jnp.asarray(n if num_cols is None else num_cols, jnp.int32)
    valid = (jnp.arange(q)[:, None] < num_rows) & (jnp.arange(n)[None, :] < num_cols)

    if _is_concrete(cost) and _is_concrete(valid):
        bad = np.argwhere(np.asarray(valid & ~jnp.isfinite(cost)))
        if bad.size:
            i, j = bad[0]
            raise ValueError(
                f"cost has {len(bad)} non-finite entries in its valid region, the first at "
                f"row {i}, column {j} ({float(cost[i, j])}); check the features the costs come from"
            )
    return jnp.where(valid, cost, 0.0), num_rows, num_cols, valid


def _dwsa_num_cols(cost, num_text):
    if num_text is None:
        return None
    n = jnp.shape(cost)[-1]
    _check_count(num_text, 0, (n - 1) // 2, "num_text", f"a {n}-column matrix holds at most {(n - 1) // 2} linguistic prototypes")
    return 2 * jnp.asarray(num_text, jnp.int32) + 1


# ---------------------------------------------------------------------------------------------
# DWSA forward, backward and backtracking on a prepared (masked) matrix.


def _read_prefixes(d_row, gamma, mode):
    """Return, for every column j of the next row, the prefix soft-min it reads from `d_row`.

    Slot 2n reads d[0 .. 2n] and prototype 2n + 1 reads d[0 .. 2n], the same prefix. So only
    the prefixes that end on even columns are needed: fold the pairs (2n - 1, 2n) first, all at
    once, and run the sequential prefix over the m + 1 folded values. This halves the scan's
    length and leaves the arithmetic unchanged. (The same folding in the backward pass measured
    slower on CPU, so the backward pass scans all columns.)
    """
    n = d_row.shape[0]
    pairs = softmin2(d_row[1::2], d_row[2::2], gamma, mode=mode)
    even_prefixes = prefix_softmin(jnp.concatenate([d_row[:1], pairs]), gamma, mode=mode)
    return jnp.repeat(even_prefixes, 2)[:n]


def _forward_table(cost, gamma, mode: Mode, num_rows, num_cols):
    """Fill the cumulative-cost table row by row, each row shifted to a minimum of 0.

    Returns (table, shifts): table[i] = d[i] - sum(shifts[: i + 1]), so d[i, j] is the table
    entry plus the cumulative shift. Keeping every row near 0 bounds the magnitudes by the cost
    range instead of the path length, which keeps float32 accurate at gamma = 1e-3. Rows past
    num_rows repeat the last valid row with a shift of 0.
    """
    n = cost.shape[1]
    col_valid = jnp.arange(n) < num_cols

    def normalize(d):
        shift = jnp.min(jnp.where(col_valid, d, jnp.inf))
        return d - shift, shift

    def row(t_prev, inputs):
        cost_row, i = inputs
        t, shift = normalize(_read_prefixes(t_prev, gamma, mode) + cost_row)
        valid = i < num_rows
        t = jnp.where(valid, t, t_prev)
        shift = jnp.where(valid, shift, jnp.zeros_like(shift))
        return t, (t, shift)

    first, first_shift = normalize(cost[0])
    _, (rest, rest_shifts) = lax.scan(row, first, (cost[1:], jnp.arange(1, cost.shape[0])))
    table = jnp.concatenate([first[None], rest], axis=0)
    shifts = jnp.concatenate([first_shift[None], rest_shifts])
    return table, shifts


def _last_row(table, num_rows):
    return lax.dynamic_index_in_dim(table, num_rows - 1, axis=0, keepdims=False)


def _backtrack(table, num_rows, num_cols):
    """Backtrack a path through a table: (Q,) int32 columns, -1 on padded rows.

    At each row the predecessor is the smallest column that attains the minimum of the prefix
    that the next row's column read. That prefix is inclusive for a slot and exclusive for a
    prototype. The last row starts from the smallest minimising valid column.
    """
    q, n = table.shape
    columns = jnp.arange(n)
    last = jnp.argmin(jnp.where(columns < num_cols, _last_row(table, num_rows), jnp.inf)).astype(jnp.int32)

    def row(next_column, inputs):
        d_row, i = inputs
        limit = jnp.where(next_column % 2 == 0, next_column, next_column - 1)
        column = jnp.argmin(jnp.where(columns <= limit, d_row, jnp.inf)).astype(jnp.int32)
        inner = i < num_rows - 1
        out = jnp.where(inner, column, jnp.where(i == num_rows - 1, last, -1))
        return jnp.where(inner, column, next_column), out

    _, path = lax.scan(row, last, (table, jnp.arange(q)), reverse=True)
    return path


def _soft_gradient(cost, table, shifts, gamma, num_rows, num_cols):
    """dL/dcost by the backward recursion, in the log domain, O(Q * N).

    log g[i, j] = logsumexp over r in S(j) of (log g[i+1, r] + (s[i+1, r] - d[i, j]) / gamma),
    where s[i+1, r] = d[i+1, r] - cost[i+1, r] is the prefix soft-min that cell (i+1, r) read and
    S(j) = {r >= j} for a slot, {r > j} for a prototype. Each term is at most 1. In the shifted
    table the cumulative shifts cancel in s - d, so s[i+1, r] - d[i, j] equals
    table[i+1, r] + shifts[i+1] - cost[i+1, r] - table[i, j], a difference of small numbers.
    """
    q, n = cost.shape
    columns = jnp.arange(n)
    is_slot = columns % 2 == 0
    col_valid = columns < num_cols
    neg_inf = jnp.array(-jnp.inf, cost.dtype)

    t_last = _last_row(table, num_rows)
    logits = jnp.where(col_valid, -t_last / gamma, neg_inf)
    log_g_last = logits - jax.nn.logsumexp(logits, where=col_valid)
    log_g_last = jnp.where(col_valid, log_g_last, neg_inf)

    # s of row i + 1 relative to row i's shift, aligned with row i; the last row has no
    # successor and gets zeros.
    prefix_next = table[1:] + shifts[1:, None] - cost[1:]
    prefix_next = jnp.concatenate([prefix_next, jnp.zeros_like(cost[:1])], axis=0)

    def row(log_g_next, inputs):
        t_row, s_next, i = inputs
        terms = jnp.where(col_valid, log_g_next + s_next / gamma, neg_inf)
        suffix = running_logsumexp(terms, reverse=True)
        suffix_exclusive = jnp.concatenate([suffix[1:], neg_inf[None]])
        log_g = jnp.where(is_slot, suffix, suffix_exclusive) - t_row / gamma
        log_g = jnp.where(col_valid, log_g, neg_inf)
        # Every path visits each row once, so each row of the gradient sums to exactly 1.
        # Renormalizing removes the rounding drift that would otherwise compound over rows
        # (in float32 at gamma = 1e-3 it reaches tens of percent over 30 rows). The same
        # exponentials give the row's gradient, so each cell costs one exp here.
        peak = jnp.max(log_g)
        weights = jnp.exp(log_g - peak)
        total = jnp.sum(weights)
        log_g = log_g - peak - jnp.log(total)
        inner = i < num_rows - 1
        grad_row = jnp.where(inner, weights / total, jnp.where(i == num_rows - 1, grad_last, 0.0))
        return jnp.where(inner, log_g, log_g_next), grad_row

    grad_last = jnp.exp(log_g_last)
    _, grad = lax.scan(row, log_g_last, (table, prefix_next, jnp.arange(q)), reverse=True)
    return grad


def _hard_gradient(table, num_rows, num_cols):
    path = _backtrack(table, num_rows, num_cols)
    return jax.nn.one_hot(path, table.shape[1], dtype=table.dtype)  # -1 gives a zero row


def _value(table, shifts, gamma, mode, num_rows, num_cols):
    columns = jnp.arange(table.shape[1])
    last = softmin(_last_row(table, num_rows), gamma, where=columns < num_cols, mode=mode)
    return jnp.sum(shifts) + last


def _unshifted(table, shifts):
    return table + jnp.cumsum(shifts)[:, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _dwsa_core(mode: Mode, cost, gamma, num_rows, num_cols):
    table, shifts = _forward_table(cost, gamma, mode, num_rows, num_cols)
    return _value(table, shifts, gamma, mode, num_rows, num_cols), _unshifted(table, shifts)


def _dwsa_core_fwd(mode, cost, gamma, num_rows, num_cols):
    table, shifts = _forward_table(cost, gamma, mode, num_rows, num_cols)
    value = _value(table, shifts, gamma, mode, num_rows, num_cols)
    # The table is kept for the backward pass rather than recomputed: it has the size of the
    # cost matrix (and of its gradient), and recomputing it would repeat the forward scan.
    residuals = (cost, gamma, num_rows, num_cols, table, shifts, value)
    return (value, _unshifted(table, shifts)), residuals


def _dwsa_core_bwd(mode, residuals, cotangents):
    cost, gamma, num_rows, num_cols, table, shifts, value = residuals
    ct_value, _ = cotangents  # the table output is wrapped in stop_gradient by the callers
    gamma = jnp.asarray(gamma, cost.dtype)
    safe_gamma = jnp.where(gamma > 0, gamma, 1.0)

    if mode == "hard":
        grad = _hard_gradient(table, num_rows, num_cols)
    elif mode == "soft":
        grad = _soft_gradient(cost, table, shifts, gamma, num_rows, num_cols)
    else:
        # A traced gamma: the table was filled with the formula that gamma selects. Only the
        # branch of that kind is kept, and the other branch is discarded.
        grad = jnp.where(
            gamma > 0,
            _soft_gradient(cost, table, shifts, safe_gamma, num_rows, num_cols),
            _hard_gradient(table, num_rows, num_cols),
        )

    # dL/dgamma = (L - E[cost of path]) / gamma, and E[cost] = sum(grad * cost).
    expected_cost = jnp.sum(grad * cost)
    grad_gamma = jnp.where(gamma > 0, (value - expected_cost) / safe_gamma, 0.0)
    return ct_value * grad, ct_value * grad_gamma, None, None


_dwsa_core.defvjp(_dwsa_core_fwd, _dwsa_core_bwd)


# ---------------------------------------------------------------------------------------------
# Public DWSA API.


def dwsa_table(cost, gamma=1e-3, *, num_rows=None, num_text=None) -> DWSAResult:
    """Compute the DWSA value and its cumulative-cost table.

    Args:
        cost: (q, 2 * q_text + 1) cost matrix, 0-based columns (even = empty slot, odd j =
            linguistic prototype j // 2). Integer input is cast to float32; float32 and float64
            are kept.
        gamma: soft-min temperature >= 0 (paper default 1e-3); 0 gives the hard minimum. A Python
            number selects the formula at trace time; a traced scalar selects it at run time.
        num_rows: valid rows of a matrix padded at the end (default: all). May be traced, so a
            batch of ragged matrices runs under jax.vmap.
        num_text: valid linguistic prototypes of a padded matrix (valid columns
            2 * num_text + 1; default: all).

    Returns:
        DWSAResult(value, table). Only `value` is differentiable.

    Raises:
        ValueError: on a wrong shape, gamma < 0, an out-of-range count, or non-finite costs in
            the valid region (checked when the inputs are concrete).
    """
    mode = gamma_mode(gamma)
    cost, num_rows, num_cols, valid = _prepare(cost, num_rows, _dwsa_num_cols(cost, num_text), layout="dwsa")
    gamma = jnp.asarray(gamma, cost.dtype)
    value, table = _dwsa_core(mode, cost, gamma, num_rows, num_cols)
    table = jnp.where(valid, lax.stop_gradient(table), jnp.inf)
    return DWSAResult(value=value, table=table)


def dwsa(cost, gamma=1e-3, *, num_rows=None, num_text=None):
    """Compute the DWSA value L of a cost matrix; see `dwsa_table` for the arguments.

    The gradient with respect to `cost` is exact (the path-visit probabilities), computed by a
    custom VJP in O(q * N). Padded cells get exactly zero gradient. The gradient with respect to
    a traced `gamma` is (L - E[path cost]) / gamma, and 0 in hard mode.

    Example:
        >>> batched = jax.jit(jax.vmap(jax.value_and_grad(lambda c: dwsa(c, 1e-3))))
    """
    return dwsa_table(cost, gamma, num_rows=num_rows, num_text=num_text).value


def alignment_path(cost, gamma=0.0, *, num_rows=None, num_text=None):
    """Backtrack the DWSA alignment path.

    With gamma == 0 (default) the path is backtracked through the hard table and is an optimal
    path: its summed cost equals the hard minimum. Ties go to the smallest column at every row.
    With gamma > 0 it is backtracked through the soft table, which gives the path the soft
    recursion favours; that path can differ from the optimum when gamma is large or costs tie.

    Args:
        cost: (q, 2 * q_text + 1) cost matrix; see `dwsa_table`.
        gamma: temperature of the table to backtrack through.
        num_rows, num_text: valid sizes of a padded matrix.

    Returns:
        (q,) int32: the 0-based column of each row, -1 on padded rows. Read it with
        `path_matches`.
    """
    mode = gamma_mode(gamma)
    cost, num_rows, num_cols, _ = _prepare(cost, num_rows, _dwsa_num_cols(cost, num_text), layout="dwsa")
    # Backtracking compares entries within a row, so the per-row shifts do not matter.
    table, _ = _forward_table(cost, jnp.asarray(gamma, cost.dtype), mode, num_rows, num_cols)
    return _backtrack(lax.stop_gradient(table), num_rows, num_cols)


def path_matches(path):
    """Read a DWSA path as matches: (q,) int32 linguistic prototype per visual prototype.

    Row i on an odd column j means visual prototype i matches linguistic prototype j // 2; an
    even column (empty slot) or a padded row (-1) gives -1, "unmatched".
    """
    path = jnp.asarray(path)
    return jnp.where((path >= 0) & (path % 2 == 1), path // 2, -1).astype(jnp.int32)


def matched_text_mask(path, num_text: int):
    """(num_text,) bool: which linguistic prototypes some visual prototype matches."""
    matches = path_matches(path)
    return jnp.any(matches[:, None] == jnp.arange(num_text)[None, :], axis=0)


# ---------------------------------------------------------------------------------------------
# Soft-DTW on the same row scan.


def _dtw_row(prev_row, cost_row, gamma, mode):
    """One soft-DTW row: r[j] = cost[j] + softmin(r_prev[j], r_prev[j-1], r[j-1]), O(N) work.

    The two entries of the previous row are combined for all columns at once. The dependency
    on r[j-1] is a sequential scan over the columns, as in the DWSA row prefix.
    """
    above = jnp.concatenate([prev_row[:1], softmin2(prev_row[1:], prev_row[:-1], gamma, mode=mode)])

    def column(left, inputs):
        cost_cell, above_cell = inputs
        value = cost_cell + softmin2(above_cell, left, gamma, mode=mode)
        return value, value

    first = cost_row[0] + above[0]
    _, rest = lax.scan(column, first, (cost_row[1:], above[1:]))
    return jnp.concatenate([first[None], rest])


def soft_dtw(cost, gamma=1e-3, *, num_rows=None, num_cols=None):
    """Compute soft-DTW (Cuturi and Blondel, ICML 2017) of a (n, m) cost matrix.

    R[i, j] = cost[i, j] + softmin(R[i-1, j], R[i-1, j-1], R[i, j-1]), R[-1, -1] = 0, other
    borders +inf; the value is R[n-1, m-1]. It is the "SOPL + soft-DTW" baseline's alignment,
    which matches every visual prototype and cannot leave any unmatched. It runs on the same
    row scan and masking as DWSA; its gradient comes from automatic differentiation.

    Args:
        cost: (n, m) pairwise cost matrix, e.g. `cosine_cost_matrix(visual, text)`.
        gamma: temperature >= 0; 0 gives plain DTW.
        num_rows, num_cols: valid sizes of a matrix padded at the end (may be traced).

    Returns:
        () the soft-DTW value.
    """
    mode = gamma_mode(gamma)
    cost, num_rows, num_cols, _ = _prepare(cost, num_rows, num_cols, layout="soft_dtw")
    gamma = jnp.asarray(gamma, cost.dtype)

    def row(prev, inputs):
        cost_row, i = inputs
        new = _dtw_row(prev, cost_row, gamma, mode)
        new = jnp.where(i < num_rows, new, prev)
        return new, None

    first = jnp.cumsum(cost[0])
    last, _ = lax.scan(row, first, (cost[1:], jnp.arange(1, cost.shape[0])))
    return lax.dynamic_index_in_dim(last, num_cols - 1, keepdims=False)


# ---------------------------------------------------------------------------------------------
# Batching helper.


def pad_cost_matrices(costs: Sequence, *, layout: str = "dwsa", dtype=None) -> PaddedCosts:
    """Pad ragged cost matrices at the end into one batch for jax.vmap.

    Args:
        costs: sequence of 2-D matrices; for layout "dwsa" each has an odd number of columns.
        layout: "dwsa" (num_valid counts linguistic prototypes) or "soft_dtw" (num_valid counts
            columns).
        dtype: output dtype; default the promoted dtype of the inputs (at least float32).

    Returns:
        PaddedCosts(costs (B, Q, N), num_rows (B,), num_valid (B,)), ready for
        `jax.vmap(lambda c, r, t: dwsa(c, g, num_rows=r, num_text=t))`.
    """
    if layout not in ("dwsa", "soft_dtw"):
        raise ValueError(f"layout={layout!r} is unknown; use 'dwsa' or 'soft_dtw'")
    if len(costs) == 0:
        raise ValueError("pad_cost_matrices needs at least one cost matrix")
    arrays = [np.asarray(c) for c in costs]
    for index, array in enumerate(arrays):
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"cost matrix {index} has shape {array.shape}; each must be a non-empty 2-D matrix")
        if layout == "dwsa" and array.shape[1] % 2 == 0:
            raise ValueError(f"cost matrix {index} has {array.shape[1]} columns; a DWSA matrix needs 2 * q_text + 1")
    if dtype is None:
        dtype = np.result_type(np.float32, *[a.dtype for a in arrays])
    rows = max(a.shape[0] for a in arrays)
    cols = max(a.shape[1] for a in arrays)
    padded = np.zeros((len(arrays), rows, cols), dtype)
    for index, array in enumerate(arrays):
        padded[index, : array.shape[0], : array.shape[1]] = array
    num_rows = np.array([a.shape[0] for a in arrays], np.int32)
    num_cols = np.array([a.shape[1] for a in arrays], np.int32)
    num_valid = (num_cols - 1) // 2 if layout == "dwsa" else num_cols
    return PaddedCosts(jnp.asarray(padded), jnp.asarray(num_rows), jnp.asarray(num_valid))
