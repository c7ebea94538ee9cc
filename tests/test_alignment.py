"""DWSA and soft-DTW against brute-force path enumeration, golden cases and reference libraries."""

import itertools
import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from dwsa_jax import (
    alignment_path,
    cosine_cost_matrix,
    dwsa,
    dwsa_cost_matrix,
    dwsa_table,
    matched_text_mask,
    pad_cost_matrices,
    path_matches,
    soft_dtw,
)

CASES = json.loads((Path(__file__).parent / "data" / "dwsa_cases.json").read_text())["cases"]
SHAPES = [(q, q_text) for q in range(1, 5) for q_text in range(0, 4)]


# ---------------------------------------------------------------------------------------------
# Independent references.


def enumerate_paths(q, num_cols):
    """All column sequences allowed by DWSA: non-decreasing into an even (slot) column,
    strictly increasing into an odd (prototype) column."""
    paths = []
    for path in itertools.product(range(num_cols), repeat=q):
        if all(b > a if b % 2 == 1 else b >= a for a, b in zip(path, path[1:])):
            paths.append(path)
    return paths


def brute_force(cost, gamma):
    """Value and gradient of DWSA by enumerating every path (numpy, float64)."""
    cost = np.asarray(cost, np.float64)
    q, n = cost.shape
    paths = enumerate_paths(q, n)
    totals = np.array([sum(cost[i, j] for i, j in enumerate(p)) for p in paths])
    visits = np.zeros((len(paths), q, n))
    for k, p in enumerate(paths):
        visits[k, np.arange(q), p] = 1.0
    if gamma == 0:
        best = int(np.argmin(totals))
        return totals[best], visits[best], paths[best]
    value = -gamma * logsumexp(-totals / gamma)
    weights = np.exp(-(totals - value) / gamma)
    return value, np.tensordot(weights, visits, axes=1), paths[int(np.argmin(totals))]


def naive_dwsa(cost, gamma):
    """The O(q * N^2) recursion in plain jnp, differentiated by autodiff (no custom VJP)."""
    q, n = cost.shape
    d = cost[0]
    for i in range(1, q):
        cells = []
        for j in range(n):
            prefix = d[: j + 1] if j % 2 == 0 else d[:j]
            cells.append(-gamma * jax.nn.logsumexp(-prefix / gamma) + cost[i, j])
        d = jnp.stack(cells)
    return -gamma * jax.nn.logsumexp(-d / gamma)


def random_cost(rng, q, q_text, low=0.0, high=2.0):
    return rng.uniform(low, high, size=(q, 2 * q_text + 1))


# ---------------------------------------------------------------------------------------------
# Exactness.


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_case(case):
    cost = jnp.asarray(case["cost"], jnp.float64)
    gamma = case["gamma"]
    value, grad = jax.value_and_grad(lambda c: dwsa(c, gamma))(cost)
    np.testing.assert_allclose(value, case["value"], rtol=0, atol=1e-6)
    if case["grad"] is not None:
        np.testing.assert_allclose(grad, np.asarray(case["grad"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(dwsa(cost, 0.0), case["hard_value"], rtol=0, atol=1e-6)
    assert alignment_path(cost).tolist() == case["best_path_columns"]


@pytest.mark.parametrize("q,q_text", SHAPES)
@pytest.mark.parametrize("gamma", [1.0, 0.1, 0.01])
def test_soft_matches_brute_force(q, q_text, gamma):
    rng = np.random.default_rng(100 * q + 10 * q_text + int(1 / gamma))
    cost = random_cost(rng, q, q_text)
    expected_value, expected_grad, _ = brute_force(cost, gamma)
    value, grad = jax.value_and_grad(lambda c: dwsa(c, gamma))(jnp.asarray(cost))
    np.testing.assert_allclose(value, expected_value, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("q,q_text", SHAPES)
def test_hard_matches_brute_force(q, q_text):
    rng = np.random.default_rng(7 + 10 * q + q_text)
    cost = random_cost(rng, q, q_text)
    expected_value, expected_grad, expected_path = brute_force(cost, 0.0)
    value, grad = jax.value_and_grad(lambda c: dwsa(c, 0.0))(jnp.asarray(cost))
    np.testing.assert_allclose(value, expected_value, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(grad, expected_grad)
    assert alignment_path(cost).tolist() == list(expected_path)


def test_hard_ties_go_to_smallest_column():
    cost = jnp.ones((3, 7))
    path = alignment_path(cost)
    grad = jax.grad(lambda c: dwsa(c, 0.0))(cost)
    assert path.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(grad, jax.nn.one_hot(jnp.zeros(3, int), 7))


@pytest.mark.parametrize("q,q_text", [(1, 2), (3, 1), (4, 3), (5, 4)])
def test_custom_gradient_equals_autodiff(q, q_text):
    rng = np.random.default_rng(q * 31 + q_text)
    cost = jnp.asarray(random_cost(rng, q, q_text))
    for gamma in (0.5, 0.05):
        expected = jax.grad(lambda c: naive_dwsa(c, gamma))(cost)
        actual = jax.grad(lambda c: dwsa(c, gamma))(cost)
        np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


def test_gamma_gradient_matches_finite_difference():
    rng = np.random.default_rng(3)
    cost = jnp.asarray(random_cost(rng, 4, 3))
    gamma = 0.2
    grad_gamma = jax.grad(lambda g: dwsa(cost, g), argnums=0)(jnp.asarray(gamma))
    step = 1e-6
    numeric = (dwsa(cost, gamma + step) - dwsa(cost, gamma - step)) / (2 * step)
    np.testing.assert_allclose(grad_gamma, numeric, rtol=1e-6)


def test_traced_gamma_selects_mode_at_run_time():
    rng = np.random.default_rng(4)
    cost = jnp.asarray(random_cost(rng, 3, 2))
    by_gamma = jax.jit(jax.value_and_grad(dwsa))
    for gamma in (0.3, 0.0):
        value, grad = by_gamma(cost, jnp.asarray(gamma))
        expected_value, expected_grad = jax.value_and_grad(lambda c: dwsa(c, gamma))(cost)
        np.testing.assert_allclose(value, expected_value, rtol=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_value_tends_to_hard_minimum():
    rng = np.random.default_rng(5)
    cost = jnp.asarray(random_cost(rng, 4, 3))
    hard = dwsa(cost, 0.0)
    gaps = [float(hard - dwsa(cost, g)) for g in (1.0, 0.1, 0.01, 0.001)]
    assert all(gap >= -1e-12 for gap in gaps)  # soft-min is a lower bound of the minimum
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-2


# ---------------------------------------------------------------------------------------------
# Paths.


@pytest.mark.parametrize("q,q_text", [(2, 2), (3, 3), (4, 2), (4, 3)])
def test_soft_path_cost_is_minimum_for_small_gamma(q, q_text):
    rng = np.random.default_rng(11 * q + q_text)
    cost = random_cost(rng, q, q_text)
    expected_value, _, _ = brute_force(cost, 0.0)
    path = alignment_path(cost, 1e-4)
    path_cost = cost[np.arange(q), np.asarray(path)].sum()
    np.testing.assert_allclose(path_cost, expected_value, rtol=0, atol=1e-9)


def test_soft_path_can_differ_from_optimum():
    # At gamma = 1 the last row's soft table favours the final slot, which many paths reach,
    # over the cheaper prototype column 3; the hard table returns the optimum.
    cost = np.array([[0.6, 0.3, 0.0, 0.0, 0.8], [0.9, 0.6, 0.7, 0.5, 0.9]])
    hard_path = alignment_path(cost, 0.0)
    soft_path = alignment_path(cost, 1.0)
    assert hard_path.tolist() == [2, 3]
    assert soft_path.tolist() == [2, 4]
    np.testing.assert_allclose(cost[[0, 1], [2, 3]].sum(), brute_force(cost, 0.0)[0])


def test_path_matches_reads_columns():
    path = jnp.array([1, 2, 2, 5, -1])
    assert path_matches(path).tolist() == [0, -1, -1, 2, -1]
    assert matched_text_mask(path, 4).tolist() == [True, False, True, False]


# ---------------------------------------------------------------------------------------------
# Batching, padding and transformations.


def test_vmap_equals_loop():
    rng = np.random.default_rng(6)
    costs = jnp.asarray(rng.uniform(0, 2, size=(5, 4, 7)))
    values, grads = jax.vmap(jax.value_and_grad(lambda c: dwsa(c, 0.05)))(costs)
    for k in range(5):
        value, grad = jax.value_and_grad(lambda c: dwsa(c, 0.05))(costs[k])
        np.testing.assert_allclose(values[k], value, rtol=1e-12)
        np.testing.assert_allclose(grads[k], grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("gamma", [0.1, 1e-3, 0.0])
def test_padded_equals_unpadded(gamma):
    rng = np.random.default_rng(8)
    shapes = [(1, 0), (2, 3), (4, 1), (3, 2), (5, 4)]
    costs = [random_cost(rng, q, t) for q, t in shapes]
    padded = pad_cost_matrices(costs)
    assert padded.costs.shape == (5, 5, 9)
    # Garbage in padded cells must not leak into values or gradients.
    mask = np.zeros(padded.costs.shape, bool)
    for k, c in enumerate(costs):
        mask[k, : c.shape[0], : c.shape[1]] = True
    dirty = jnp.where(mask, padded.costs, jnp.nan)

    fn = jax.jit(jax.vmap(jax.value_and_grad(lambda c, r, t: dwsa(c, gamma, num_rows=r, num_text=t))))
    values, grads = fn(dirty, padded.num_rows, padded.num_valid)
    assert bool(jnp.all(jnp.isfinite(values)))
    assert bool(jnp.all(jnp.isfinite(grads)))
    assert bool(jnp.all(grads[~mask] == 0.0))
    for k, c in enumerate(costs):
        value, grad = jax.value_and_grad(lambda x: dwsa(x, gamma))(jnp.asarray(c))
        np.testing.assert_allclose(values[k], value, rtol=0, atol=1e-9)
        np.testing.assert_allclose(grads[k, : c.shape[0], : c.shape[1]], grad, rtol=0, atol=1e-9)


_padded_value_and_grad = jax.jit(
    jax.value_and_grad(lambda c, r, t: dwsa(c, 0.1, num_rows=r, num_text=t))
)
_value_and_grad = jax.jit(jax.value_and_grad(lambda c: dwsa(c, 0.1)))


@settings(max_examples=20, deadline=None)
@given(q=st.integers(1, 5), q_text=st.integers(0, 4), seed=st.integers(0, 10_000))
def test_padding_property(q, q_text, seed):
    # One padded shape for every example, so the padded function compiles once.
    rng = np.random.default_rng(seed)
    cost = random_cost(rng, q, q_text)
    big = rng.uniform(-5, 5, size=(6, 11))
    big[:q, : 2 * q_text + 1] = cost
    value, grad = _padded_value_and_grad(jnp.asarray(big), q, q_text)
    expected_value, expected_grad = _value_and_grad(jnp.asarray(cost))
    np.testing.assert_allclose(value, expected_value, rtol=0, atol=1e-9)
    np.testing.assert_allclose(grad[:q, : 2 * q_text + 1], expected_grad, rtol=0, atol=1e-9)
    outside = np.ones(big.shape, bool)
    outside[:q, : 2 * q_text + 1] = False
    assert bool(jnp.all(grad[outside] == 0.0))


def test_table_marks_padding_as_infinite():
    cost = np.ones((4, 7))
    result = dwsa_table(cost, 0.1, num_rows=2, num_text=1)
    assert bool(jnp.all(jnp.isfinite(result.table[:2, :3])))
    assert bool(jnp.all(jnp.isinf(result.table[2:])))
    assert bool(jnp.all(jnp.isinf(result.table[:, 3:])))


def test_transform_compositions_agree():
    rng = np.random.default_rng(9)
    costs = jnp.asarray(rng.uniform(0, 2, size=(3, 4, 7)))

    def loss(c):
        return dwsa(c, 0.05)

    reference = jnp.stack([jax.grad(loss)(c) for c in costs])
    variants = {
        "jit(vmap(grad))": jax.jit(jax.vmap(jax.grad(loss)))(costs),
        "vmap(jit(grad))": jax.vmap(jax.jit(jax.grad(loss)))(costs),
        "vmap(grad(jit))": jax.vmap(jax.grad(jax.jit(loss)))(costs),
        "grad(sum of vmap)": jax.grad(lambda c: jnp.sum(jax.vmap(loss)(c)))(costs),
        "jit(grad(sum of vmap))": jax.jit(jax.grad(lambda c: jnp.sum(jax.vmap(loss)(c))))(costs),
        "vmap(value_and_grad)[1]": jax.vmap(jax.value_and_grad(loss))(costs)[1],
        "jacrev of vmap": jnp.stack([jax.jacrev(lambda c: jax.vmap(loss)(c))(costs)[k, k] for k in range(3)]),
    }
    for name, value in variants.items():
        np.testing.assert_allclose(value, reference, rtol=1e-10, atol=1e-14, err_msg=name)


def test_gradient_through_cost_builder():
    rng = np.random.default_rng(10)
    visual = jnp.asarray(rng.normal(size=(4, 8)))
    text = jnp.asarray(rng.normal(size=(6, 8)))

    def loss(v, t):
        return dwsa(dwsa_cost_matrix(v, t), 0.01)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(visual, text)
    chex.assert_tree_all_finite(grads)
    step = 1e-6
    direction = jnp.asarray(rng.normal(size=visual.shape))
    numeric = (loss(visual + step * direction, text) - loss(visual - step * direction, text)) / (2 * step)
    np.testing.assert_allclose(jnp.sum(grads[0] * direction), numeric, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Precision and dtypes.


def test_float32_default_dtype():
    cost = np.random.default_rng(0).uniform(0, 2, size=(3, 5)).astype(np.float32)
    value, grad = jax.value_and_grad(lambda c: dwsa(c, 1e-3))(jnp.asarray(cost))
    assert value.dtype == jnp.float32
    assert grad.dtype == jnp.float32
    assert dwsa(np.ones((2, 3), np.int32), 0.1).dtype == jnp.float32


def test_float32_large_costs_small_gamma():
    rng = np.random.default_rng(12)
    for q, q_text in [(7, 17), (15, 25), (30, 10)]:
        cost64 = rng.uniform(0, 1000, size=(q, 2 * q_text + 1))
        cost32 = jnp.asarray(cost64, jnp.float32)
        value_and_grad = jax.jit(jax.value_and_grad(lambda c: dwsa(c, 1e-3)))
        value32, grad32 = value_and_grad(cost32)
        value64, grad64 = value_and_grad(jnp.asarray(cost64))
        assert bool(jnp.isfinite(value32))
        chex.assert_tree_all_finite(grad32)
        np.testing.assert_allclose(value32, value64, rtol=1e-4)
        # Gradients are path probabilities, so each row sums to 1. In float32 a cost of 1e3 is
        # only known to about 6e-5, 6% of gamma, so single probabilities carry errors of that
        # order. The rows are renormalized, so they sum to 1 to rounding.
        np.testing.assert_allclose(grad32.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(grad64.sum(axis=1), 1.0, atol=1e-9)
        np.testing.assert_allclose(grad32, grad64, atol=0.1)


def test_gradient_rows_are_probabilities():
    rng = np.random.default_rng(13)
    cost = jnp.asarray(random_cost(rng, 6, 5))
    grad = jax.grad(lambda c: dwsa(c, 0.3))(cost)
    assert bool(jnp.all(grad >= 0))
    np.testing.assert_allclose(grad.sum(axis=1), 1.0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Input errors.


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="odd"):
        dwsa(np.ones((2, 4)), 0.1)
    with pytest.raises(ValueError, match="gamma=-0.1"):
        dwsa(np.ones((2, 5)), -0.1)
    with pytest.raises(ValueError, match="num_rows=3"):
        dwsa(np.ones((2, 5)), 0.1, num_rows=3)
    with pytest.raises(ValueError, match="num_text=3"):
        dwsa(np.ones((2, 5)), 0.1, num_text=3)
    with pytest.raises(ValueError, match="jax.vmap"):
        dwsa(np.ones((2, 2, 5)), 0.1)
    bad = np.ones((2, 5))
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="row 1, column 3"):
        dwsa(bad, 0.1)
    with pytest.raises(ValueError, match="columns"):
        pad_cost_matrices([np.ones((2, 5)), np.ones((2, 4))])


# ---------------------------------------------------------------------------------------------
# Cost matrices.


def test_dwsa_cost_matrix_layout():
    visual = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    text = jnp.array([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    cost = dwsa_cost_matrix(visual, text, delta_e=0.7)
    half = 1.0 - np.sqrt(0.5)
    expected = np.array(
        [
            [0.7, 0.0, 0.7, half, 0.7, 1.0, 0.7],
            [0.7, 1.0, 0.7, half, 0.7, 2.0, 0.7],
        ]
    )
    np.testing.assert_allclose(cost, expected, atol=1e-12)
    softened = dwsa_cost_matrix(visual, text, row_softmax=True)
    np.testing.assert_allclose(softened.sum(axis=1), 1.0, atol=1e-12)


def test_zero_vector_has_finite_gradient():
    visual = jnp.zeros((2, 3))
    text = jnp.ones((2, 3))
    grad = jax.grad(lambda v: dwsa(dwsa_cost_matrix(v, text), 0.1))(visual)
    chex.assert_tree_all_finite(grad)


def test_cosine_cost_rejects_dimension_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        cosine_cost_matrix(np.ones((2, 3)), np.ones((2, 4)))


# ---------------------------------------------------------------------------------------------
# Soft-DTW.


@pytest.mark.parametrize("n,m", [(1, 1), (1, 4), (4, 1), (3, 5), (6, 6), (8, 3)])
@pytest.mark.parametrize("gamma", [1.0, 0.1, 0.001])
def test_soft_dtw_matches_tslearn(n, m, gamma):
    from tslearn.metrics import SoftDTW

    rng = np.random.default_rng(n * 10 + m)
    cost = rng.uniform(0, 2, size=(n, m))
    reference = SoftDTW(cost, gamma=gamma)
    expected_value = reference.compute()
    expected_grad = reference.grad()
    value, grad = jax.value_and_grad(lambda c: soft_dtw(c, gamma))(jnp.asarray(cost))
    np.testing.assert_allclose(value, expected_value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_soft_dtw_hard_mode_is_dtw():
    rng = np.random.default_rng(14)
    cost = rng.uniform(0, 2, size=(5, 7))
    table = np.full((6, 8), np.inf)
    table[0, 0] = 0.0
    for i in range(1, 6):
        for j in range(1, 8):
            table[i, j] = cost[i - 1, j - 1] + min(table[i - 1, j], table[i - 1, j - 1], table[i, j - 1])
    np.testing.assert_allclose(soft_dtw(cost, 0.0), table[5, 7], rtol=1e-12)


def test_soft_dtw_padded_batch():
    rng = np.random.default_rng(15)
    costs = [rng.uniform(0, 2, size=s) for s in [(2, 3), (5, 4), (1, 6), (4, 4)]]
    padded = pad_cost_matrices(costs, layout="soft_dtw")
    dirty = padded.costs.at[0, 3:, :].set(jnp.nan)
    fn = jax.vmap(jax.value_and_grad(lambda c, r, k: soft_dtw(c, 0.1, num_rows=r, num_cols=k)))
    values, grads = fn(dirty, padded.num_rows, padded.num_valid)
    chex.assert_tree_all_finite((values, grads))
    for k, c in enumerate(costs):
        value, grad = jax.value_and_grad(lambda x: soft_dtw(x, 0.1))(jnp.asarray(c))
        np.testing.assert_allclose(values[k], value, rtol=0, atol=1e-9)
        np.testing.assert_allclose(grads[k, : c.shape[0], : c.shape[1]], grad, rtol=0, atol=1e-9)
        outside = np.ones(grads[k].shape, bool)
        outside[: c.shape[0], : c.shape[1]] = False
        assert bool(jnp.all(grads[k][outside] == 0.0))


def test_soft_dtw_float32_large_costs():
    rng = np.random.default_rng(16)
    cost = rng.uniform(0, 1000, size=(15, 30))
    value32, grad32 = jax.value_and_grad(lambda c: soft_dtw(c, 1e-3))(jnp.asarray(cost, jnp.float32))
    value64 = soft_dtw(jnp.asarray(cost), 1e-3)
    chex.assert_tree_all_finite((value32, grad32))
    np.testing.assert_allclose(value32, value64, rtol=1e-4)
