"""Tests of SOPL and k-means++ against NumPy re-implementations and hand-worked values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwsa_jax.prototypes import (
    SOPLConfig,
    kmeans_plus_plus,
    kmeans_plus_plus_indices,
    segment_times,
    sopl,
)


def _normalised_points(seed, n, d, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _blobs(seed, num_clusters, per_cluster, d, spread):
    """Points around `num_clusters` random unit centres, each with a block of times."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, per_cluster, axis=0) + spread * rng.normal(size=(num_clusters * per_cluster, d))
    times = np.asarray(segment_times(num_clusters * per_cluster, dtype=np.float64))
    return x, times


def _augment(x, times, time_weight):
    return np.concatenate([x, np.sqrt(time_weight) * times[:, None]], axis=1)


def _lloyd_steps(augmented, centres, num_steps):
    """Run hard k-means steps in NumPy and return the centres and the error after each."""
    errors = []
    for _ in range(num_steps):
        sq = ((augmented[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        labels = sq.argmin(1)
        centres = np.stack([augmented[labels == k].mean(0) for k in range(len(centres))])
        new_sq = ((augmented - centres[labels]) ** 2).sum(-1)
        errors.append(new_sq.mean())
    return centres, np.array(errors)


# ---------------------------------------------------------------- segment_times


def test_segment_times_hand_values():
    times = segment_times(4)
    assert times.dtype == jnp.float32
    np.testing.assert_allclose(times, [0.125, 0.375, 0.625, 0.875])


def test_segment_times_empty_video():
    assert segment_times(0).shape == (0,)


# ---------------------------------------------------------------- k-means++


def test_kmeans_plus_plus_never_picks_masked():
    x = _normalised_points(0, 40, 3)
    mask = np.ones(40, bool)
    mask[::3] = False
    # Masked points sit far away, so plain D^2 sampling would favour them.
    x[~mask] = 100.0
    keys = jax.random.split(jax.random.key(0), 300)
    for trials in (1, 3):
        picks = jax.vmap(
            lambda key: kmeans_plus_plus_indices(key, x, 6, mask=mask, num_local_trials=trials)
        )(keys)
        assert mask[np.asarray(picks)].all(), f"masked point chosen with {trials} local trials"


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 4),
    valid_flags=st.lists(st.booleans(), min_size=12, max_size=12),
    seed=st.integers(0, 2**31 - 1),
)
def test_kmeans_plus_plus_random_masks(k, valid_flags, seed):
    mask = np.array(valid_flags)
    if mask.sum() < k:
        mask[:k] = True
    x = np.random.default_rng(seed).normal(size=(12, 3))
    indices = np.asarray(kmeans_plus_plus_indices(jax.random.key(seed), x, k, mask=mask))
    assert mask[indices].all()
    # Distinct random points keep D^2 mass until k are chosen, so no point repeats.
    assert len(set(indices.tolist())) == k


def test_kmeans_plus_plus_nan_padding():
    x = _normalised_points(1, 10, 3)
    x[7:] = np.nan
    mask = np.arange(10) < 7
    centres = kmeans_plus_plus(jax.random.key(3), x, 7, mask=mask)
    assert np.isfinite(centres).all()
    # With exactly k valid points every valid point is chosen once.
    chosen = sorted(map(tuple, np.asarray(centres)))
    assert chosen == sorted(map(tuple, x[:7]))


def test_kmeans_plus_plus_d2_distribution():
    # Three points on a line at 0, 1 and 3. The first centre is uniform; the second is
    # drawn with probability proportional to its squared distance to the first.
    x = np.array([[0.0], [1.0], [3.0]])
    sq = (x - x.T) ** 2
    expected = sq / sq.sum(1, keepdims=True) / 3.0
    num_draws = 6000
    keys = jax.random.split(jax.random.key(7), num_draws)
    picks = np.asarray(jax.vmap(lambda key: kmeans_plus_plus_indices(key, x, 2))(keys))
    observed = np.zeros((3, 3))
    np.add.at(observed, (picks[:, 0], picks[:, 1]), 1.0 / num_draws)
    # Binomial standard deviation is at most 0.0065 at this number of draws.
    np.testing.assert_allclose(observed, expected, atol=0.03)


def test_kmeans_plus_plus_greedy_lowers_potential():
    x = _normalised_points(2, 60, 4)

    def potential(indices):
        sq = ((x[:, None, :] - x[np.asarray(indices)][None]) ** 2).sum(-1)
        return sq.min(1).sum()

    keys = jax.random.split(jax.random.key(11), 200)
    plain_picks = jax.vmap(lambda k: kmeans_plus_plus_indices(k, x, 5))(keys)
    greedy_picks = jax.vmap(lambda k: kmeans_plus_plus_indices(k, x, 5, num_local_trials=4))(keys)
    plain = [potential(indices) for indices in plain_picks]
    greedy = [potential(indices) for indices in greedy_picks]
    assert np.mean(greedy) < np.mean(plain)


def test_kmeans_plus_plus_has_no_gradient():
    x = jnp.asarray(_normalised_points(3, 12, 3))
    grad = jax.grad(lambda points: kmeans_plus_plus(jax.random.key(0), points, 4).sum())(x)
    assert np.all(grad == 0)


def test_kmeans_plus_plus_rejects_bad_counts():
    x = _normalised_points(4, 5, 2)
    with pytest.raises(ValueError, match="5 points but k=6"):
        kmeans_plus_plus(jax.random.key(0), x, 6)
    with pytest.raises(ValueError, match="2 valid points but k=3"):
        kmeans_plus_plus(jax.random.key(0), x, 3, mask=np.arange(5) < 2)
    with pytest.raises(ValueError, match="num_local_trials"):
        kmeans_plus_plus(jax.random.key(0), x, 3, num_local_trials=0)


# ---------------------------------------------------------------- SOPL against NumPy


@pytest.mark.parametrize("num_iterations", [1, 5])
def test_sopl_small_beta_is_lloyd(num_iterations):
    x, times = _blobs(5, num_clusters=4, per_cluster=5, d=4, spread=0.4)
    time_weight = 0.5
    key = jax.random.key(2)
    augmented = _augment(x, times, time_weight)
    init = np.asarray(kmeans_plus_plus_indices(key, augmented, 4))
    centres, errors = _lloyd_steps(augmented, augmented[init], num_iterations)
    centres = centres[np.argsort(centres[:, -1])]

    out = sopl(
        key, x, times, 4, num_iterations=num_iterations, beta=1e-9, time_weight=time_weight
    )
    np.testing.assert_allclose(out.prototypes, centres[:, :-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.times, centres[:, -1] / np.sqrt(time_weight), atol=1e-12)
    np.testing.assert_allclose(out.errors, errors, rtol=1e-12)
    assignments = np.asarray(out.assignments)
    np.testing.assert_allclose(assignments, np.round(assignments), atol=1e-12)


def test_sopl_soft_step_matches_numpy():
    x = _normalised_points(6, 20, 4)
    times = np.asarray(segment_times(20, dtype=np.float64))
    beta, time_weight = 0.3, 2.0
    key = jax.random.key(9)
    augmented = _augment(x, times, time_weight)
    centres = augmented[np.asarray(kmeans_plus_plus_indices(key, augmented, 4))]

    sq = ((augmented[:, None, :] - centres[None]) ** 2).sum(-1)
    logits = -sq / beta
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    new_centres = weights.T @ augmented / weights.sum(0)[:, None]
    new_sq = ((augmented[:, None, :] - new_centres[None]) ** 2).sum(-1)
    error = (weights * new_sq).sum(1).mean()
    order = np.argsort(new_centres[:, -1])

    out = sopl(key, x, times, 4, num_iterations=1, beta=beta, time_weight=time_weight)
    np.testing.assert_allclose(out.prototypes, new_centres[order, :-1], rtol=1e-12)
    np.testing.assert_allclose(out.times, new_centres[order, -1] / np.sqrt(time_weight), rtol=1e-12)
    np.testing.assert_allclose(out.assignments, weights[:, order], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(out.errors, [error], rtol=1e-12)


def test_sopl_output_sorted_by_time():
    x = _normalised_points(7, 20, 4)
    times = np.asarray(segment_times(20, dtype=np.float64))
    out = sopl(jax.random.key(4), x, times, 4, beta=0.05)
    assert np.all(np.diff(np.asarray(out.times)) >= 0)
    # Each prototype is the weighted mean of the points under its own assignment column.
    weights = np.asarray(out.assignments)
    np.testing.assert_allclose(out.prototypes, weights.T @ x / weights.sum(0)[:, None], rtol=1e-6)
    np.testing.assert_allclose(out.times, weights.T @ times / weights.sum(0), rtol=1e-6)


def test_sopl_errors_non_increasing():
    x, times = _blobs(8, num_clusters=4, per_cluster=5, d=4, spread=0.5)
    keys = jax.random.split(jax.random.key(1), 16)
    errors = np.asarray(jax.vmap(lambda key: sopl(key, x, times, 4, beta=1e-4).errors)(keys))
    assert np.all(np.diff(errors, axis=1) <= 1e-9)
    # At least one start must actually improve, or the check above proves nothing.
    assert np.any(errors[:, -1] < errors[:, 0] - 1e-3)


def test_sopl_time_weight_zero_ignores_times():
    x = _normalised_points(9, 20, 4)
    times = np.asarray(segment_times(20, dtype=np.float64))
    shuffled = np.random.default_rng(0).permutation(times)
    first = sopl(jax.random.key(5), x, times, 4, time_weight=0.0, beta=0.05)
    second = sopl(jax.random.key(5), x, shuffled, 4, time_weight=0.0, beta=0.05)
    rows = lambda p: np.asarray(p)[np.lexsort(np.asarray(p).T)]
    np.testing.assert_allclose(rows(first.prototypes), rows(second.prototypes), rtol=1e-12)


def test_sopl_fewer_valid_points_than_k_raises():
    x = _normalised_points(10, 8, 3)
    times = np.asarray(segment_times(8, dtype=np.float64))
    with pytest.raises(ValueError, match="3 valid points but num_prototypes=4; lower"):
        sopl(jax.random.key(0), x, times, 4, mask=np.arange(8) < 3)
    with pytest.raises(ValueError, match="8 points but num_prototypes=9"):
        sopl(jax.random.key(0), x, times, 9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta": 0.0}, "beta=0.0"),
        ({"beta": -1e-3}, "beta=-0.001"),
        ({"time_weight": -1.0}, "time_weight=-1.0"),
        ({"num_iterations": 0}, "num_iterations=0"),
    ],
)
def test_sopl_rejects_bad_hyperparameters(kwargs, message):
    x = _normalised_points(11, 8, 3)
    times = np.asarray(segment_times(8, dtype=np.float64))
    with pytest.raises(ValueError, match=message):
        sopl(jax.random.key(0), x, times, 2, **kwargs)


def test_sopl_config_defaults_and_checks():
    config = SOPLConfig()
    assert (config.num_iterations, config.beta, config.time_weight) == (5, 1e-3, 1.0)
    assert config.num_local_trials == 1
    with pytest.raises(ValueError, match="beta"):
        SOPLConfig(beta=0.0)


# ---------------------------------------------------------------- masks


def _padded_problem(seed, n, pad, d):
    x = _normalised_points(seed, n, d)
    times = np.asarray(segment_times(n, dtype=np.float64))
    padded_x = np.concatenate([x, np.full((pad, d), np.nan)])
    padded_x[n] = 1e6  # a huge finite row as well as NaN rows
    padded_times = np.concatenate([times, np.full(pad, np.nan)])
    mask = np.arange(n + pad) < n
    return x, times, padded_x, padded_times, mask


def test_sopl_padded_equals_unpadded():
    x, times, padded_x, padded_times, mask = _padded_problem(12, 20, 6, 4)
    plain = sopl(jax.random.key(6), x, times, 4, beta=0.02)
    padded = sopl(jax.random.key(6), padded_x, padded_times, 4, beta=0.02, mask=mask)
    np.testing.assert_allclose(padded.prototypes, plain.prototypes, rtol=1e-12)
    np.testing.assert_allclose(padded.times, plain.times, rtol=1e-12)
    np.testing.assert_allclose(padded.errors, plain.errors, rtol=1e-12)
    np.testing.assert_allclose(padded.assignments[:20], plain.assignments, rtol=1e-12)
    assert np.all(np.asarray(padded.assignments[20:]) == 0)


def test_sopl_padded_points_get_zero_gradient():
    x, times, padded_x, padded_times, mask = _padded_problem(13, 20, 6, 4)
    weights = np.random.default_rng(0).normal(size=(4, 4))

    def loss(features, times, mask):
        out = sopl(jax.random.key(6), features, times, 4, beta=0.02, mask=mask)
        return jnp.sum(out.prototypes * weights) + jnp.sum(out.times) + out.errors[-1]

    grad = jax.grad(loss, argnums=(0, 1))
    grad_x, grad_t = grad(padded_x, padded_times, mask)
    assert np.isfinite(grad_x).all()
    assert np.isfinite(grad_t).all()
    assert np.all(np.asarray(grad_x[20:]) == 0)
    assert np.all(np.asarray(grad_t[20:]) == 0)
    plain_x, plain_t = grad(x, times, None)
    np.testing.assert_allclose(grad_x[:20], plain_x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_t[:20], plain_t, rtol=1e-9, atol=1e-12)


def test_sopl_traced_mask_with_too_few_points():
    # Under vmap the mask is traced, so the count check cannot run: the result must still
    # be finite, with some valid point used as more than one prototype.
    x = _normalised_points(14, 20, 4)
    times = np.asarray(segment_times(20, dtype=np.float64))
    masks = np.stack([np.arange(20) < 2, np.arange(20) < 20])
    out = jax.vmap(lambda m: sopl(jax.random.key(0), x, times, 4, mask=m))(masks)
    assert np.isfinite(out.prototypes).all()
    assert np.isfinite(out.errors).all()
    assert len(np.unique(np.asarray(out.prototypes[0]), axis=0)) <= 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sopl_empty_cluster_keeps_centre(dtype):
    # Hand-found Lloyd case: from the initial centres (1, 6), (0, 7), (8, 9) the first step
    # moves the first centre to (3.5, 4.5), and in the second step no point is nearest to
    # it. Its softmax weights are then exactly 0, and it must keep (3.5, 4.5), not 0 / 0.
    x = np.array([[1.0, 6.0], [0.0, 7.0], [8.0, 1.0], [6.0, 3.0], [8.0, 9.0]], dtype)
    times = np.zeros(5, dtype)
    augmented = np.concatenate([x, times[:, None]], axis=1)
    keys = jax.random.split(jax.random.key(0), 2000)
    picks = np.asarray(jax.vmap(lambda k: kmeans_plus_plus_indices(k, augmented, 3))(keys))
    hits = [i for i, p in enumerate(picks) if sorted(p) == [0, 1, 4]]
    assert hits, "no key draws the initial centres of the hand-found case"

    out = sopl(keys[hits[0]], x, times, 3, num_iterations=3, beta=1e-9, time_weight=0.0)
    assert np.isfinite(out.prototypes).all()
    assert np.isfinite(out.errors).all()
    rows = sorted(map(tuple, np.asarray(out.prototypes, np.float64).round(5)))
    assert rows == [(0.5, 6.5), (3.5, 4.5), (7.33333, 4.33333)]
    np.testing.assert_allclose(np.sort(np.asarray(out.assignments).sum(0)), [0.0, 2.0, 3.0])


# ---------------------------------------------------------------- transformations and dtypes


def test_sopl_jit_matches_eager():
    x = _normalised_points(15, 20, 4)
    times = np.asarray(segment_times(20, dtype=np.float64))
    eager = sopl(jax.random.key(1), x, times, 4, beta=0.05, time_weight=0.7)
    jitted = jax.jit(sopl, static_argnames=("num_prototypes", "num_iterations"))(
        jax.random.key(1), x, times, 4, beta=0.05, time_weight=0.7
    )
    for name in ("prototypes", "times", "assignments", "errors"):
        np.testing.assert_allclose(getattr(jitted, name), getattr(eager, name), rtol=1e-12)


def test_sopl_vmap_over_padded_videos():
    # Padded equals unpadded is tested above, so single padded calls are the reference here.
    lengths = [12, 20, 7]
    videos = [_normalised_points(16 + i, n, 4) for i, n in enumerate(lengths)]
    keys = jax.random.split(jax.random.key(2), 3)
    width = max(lengths)
    features = np.zeros((3, width, 4))
    times = np.zeros((3, width))
    masks = np.zeros((3, width), bool)
    for i, video in enumerate(videos):
        features[i, : len(video)] = video
        times[i, : len(video)] = segment_times(len(video), dtype=np.float64)
        masks[i, : len(video)] = True

    batched = jax.vmap(lambda k, f, t, m: sopl(k, f, t, 4, beta=0.05, mask=m))(
        keys, features, times, masks
    )
    for i in range(len(videos)):
        single = sopl(keys[i], features[i], times[i], 4, beta=0.05, mask=masks[i])
        np.testing.assert_allclose(batched.prototypes[i], single.prototypes, rtol=1e-10)
        np.testing.assert_allclose(batched.errors[i], single.errors, rtol=1e-10)


def test_sopl_grad_matches_finite_differences():
    # The k-means++ choice carries no gradient, so perturb only rows that were not chosen as
    # initial centres: for them the analytic gradient is the full derivative.
    x = _normalised_points(19, 20, 4)
    times = np.asarray(segment_times(20, dtype=np.float64))
    key = jax.random.key(8)
    beta, time_weight = 0.2, 1.0
    chosen = np.asarray(kmeans_plus_plus_indices(key, _augment(x, times, time_weight), 4))
    weights = np.random.default_rng(1).normal(size=(4, 4))

    def loss(features):
        out = sopl(key, features, times, 4, beta=beta, time_weight=time_weight)
        return jnp.sum(out.prototypes * weights) + out.errors[-1]

    direction = np.random.default_rng(2).normal(size=x.shape)
    direction[chosen] = 0.0
    step = 1e-6
    numeric = (loss(x + step * direction) - loss(x - step * direction)) / (2 * step)
    analytic = np.sum(np.asarray(jax.grad(loss)(x)) * direction)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sopl_keeps_dtype(dtype):
    x = _normalised_points(20, 20, 4, dtype)
    times = np.asarray(segment_times(20, dtype=dtype))
    out = sopl(jax.random.key(3), x, times, 4)
    for name in ("prototypes", "times", "assignments", "errors"):
        assert getattr(out, name).dtype == dtype, name
    grad = jax.grad(lambda f: sopl(jax.random.key(3), f, times, 4).prototypes.sum())(x)
    assert grad.dtype == dtype
    assert np.isfinite(grad).all()


def test_sopl_float32_close_to_float64():
    x, times = _blobs(21, num_clusters=4, per_cluster=5, d=4, spread=0.3)
    double = sopl(jax.random.key(4), x, times, 4, beta=0.01)
    single = sopl(jax.random.key(4), x.astype(np.float32), times.astype(np.float32), 4, beta=0.01)
    np.testing.assert_allclose(single.prototypes, double.prototypes, atol=1e-4)
    np.testing.assert_allclose(single.errors, double.errors, rtol=1e-4)
