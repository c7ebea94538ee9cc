"""Check the numba DWSA baseline of the benchmarks against the golden DWSA cases.

The benchmarks report speed-ups over this baseline, so it must compute the same loss and
gradient as the library. The golden cases in tests/data/dwsa_cases.json were computed by brute
force over all alignment paths.
"""

import importlib.util
import itertools
import json
import pathlib

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is needed for the benchmark baseline (the bench extra)")

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_baseline():
    # Loaded by path: benchmarks/ is a folder of scripts, not an installed package.
    path = REPO / "benchmarks" / "baselines" / "numba_dwsa.py"
    spec = importlib.util.spec_from_file_location("numba_dwsa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


numba_dwsa = _load_baseline()
CASES = json.loads((REPO / "tests" / "data" / "dwsa_cases.json").read_text())["cases"]
SOFT_CASES = [case for case in CASES if case["gamma"] > 0]


@pytest.mark.parametrize("case", SOFT_CASES, ids=[case["name"] for case in SOFT_CASES])
def test_numba_value_and_grad_match_golden(case):
    value, grad = numba_dwsa.dwsa_value_and_grad(np.array(case["cost"]), case["gamma"])

    np.testing.assert_allclose(value, case["value"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad, np.array(case["grad"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_numba_gamma_zero_gives_hard_value(case):
    cost = np.array(case["cost"])

    value, _, _ = numba_dwsa.dwsa_forward(cost, 0.0)

    np.testing.assert_allclose(value, case["hard_value"], rtol=0, atol=1e-9)


def _brute_force(cost, gamma):
    """Return the soft-min over all valid column sequences and each cell's visit probability."""
    num_rows, num_cols = cost.shape
    path_costs = []
    visits = []
    for path in itertools.product(range(num_cols), repeat=num_rows):
        # A step may stay on an empty slot (even column) but must move past a prototype.
        valid = all(
            later > earlier or (later == earlier and later % 2 == 0)
            for earlier, later in zip(path, path[1:])
        )
        if valid:
            path_costs.append(sum(cost[i, j] for i, j in enumerate(path)))
            visits.append(path)
    path_costs = np.array(path_costs)
    shifted = -(path_costs - path_costs.min()) / gamma
    value = path_costs.min() - gamma * np.log(np.exp(shifted).sum())
    weights = np.exp(shifted) / np.exp(shifted).sum()
    grad = np.zeros_like(cost)
    for weight, path in zip(weights, visits):
        for i, j in enumerate(path):
            grad[i, j] += weight
    return value, grad


@pytest.mark.parametrize("shape", [(3, 7), (4, 5), (5, 3)])
def test_numba_matches_brute_force_at_large_gamma(shape):
    cost = np.random.default_rng(sum(shape)).uniform(0.0, 2.0, size=shape)
    expected_value, expected_grad = _brute_force(cost, 0.3)

    value, grad = numba_dwsa.dwsa_value_and_grad(cost, 0.3)

    np.testing.assert_allclose(value, expected_value, rtol=0, atol=1e-10)
    np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=1e-10)


def test_numba_gradient_rows_sum_to_one():
    # Every path visits each row exactly once, so each row of G is a distribution. At
    # gamma = 1e-3 a scheme that factors exp(-d / gamma) out of the sum would overflow here.
    cost = np.random.default_rng(0).uniform(0.0, 2.0, size=(40, 61))

    value, grad = numba_dwsa.dwsa_value_and_grad(cost, 1e-3)

    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), np.ones(40), rtol=0, atol=1e-9)


def test_numba_rejects_even_column_count():
    with pytest.raises(ValueError, match="2 \\* q_text \\+ 1"):
        numba_dwsa.dwsa_value_and_grad(np.zeros((3, 4)))
