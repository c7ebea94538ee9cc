"""Soft Ordered Prototype Learning (SOPL) and the project's k-means++ initialisation.

SOPL summarises a set of points (video segments or narration phrases) by K prototypes that
carry a time stamp. Every point x_t with normalised time tau_t in [0, 1] is augmented to
x~_t = [x_t, sqrt(w) * tau_t], where w is the time weight. K centres are initialised by
k-means++ on x~, then refined by a fixed number of soft k-means iterations:

    a_tk = softmax_k(-||x~_t - c~_k||^2 / beta)
    c~_k = sum_t a_tk x~_t / sum_t a_tk

Gradients flow through every iteration into x, but not through the k-means++ choice. The
prototypes are returned sorted by their time coordinate, which is split off into `times`.

Ragged data (videos of different lengths) is padded to a static shape and described by a
boolean mask. Padded points are never chosen by k-means++, get zero assignment weight and
receive exactly zero gradient, whatever values they hold (NaN included).

Reference: Y. Shen, L. Wang and E. Elhamifar, "Learning to Segment Actions from Visual and
Language Instructions via Differentiable Weak Sequence Alignment", CVPR 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SOPLConfig",
    "SOPLOutput",
    "kmeans_plus_plus",
    "kmeans_plus_plus_indices",
    "segment_times",
    "sopl",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SOPLConfig:
    """Hyperparameters of SOPL, with the paper's defaults.

    Attributes:
        num_iterations: number p of soft k-means iterations after the k-means++ initialisation.
        beta: softmax temperature of the soft assignments, in squared-distance units. As beta
            goes to 0 each iteration becomes a hard Lloyd step.
        time_weight: weight w of the time coordinate; points are augmented with sqrt(w) * tau,
            so w scales the squared time distance. w = 0 clusters on the features alone.
        num_local_trials: candidates per k-means++ step. 1 is plain D^2 sampling, the default
            here. 2 + floor(ln K) is scikit-learn's greedy variant, used by the authors' release.
    """

    num_iterations: int = 5
    beta: float = 1e-3
    time_weight: float = 1.0
    num_local_trials: int = 1

    def __post_init__(self):
        if not isinstance(self.num_iterations, int) or self.num_iterations < 1:
            raise ValueError(
                f"SOPLConfig.num_iterations={self.num_iterations!r} is invalid; "
                "pass an integer >= 1"
            )
        _check_beta(self.beta)
        _check_time_weight(self.time_weight)
        _check_num_local_trials(self.num_local_trials)


class SOPLOutput(NamedTuple):
    """Result of `sopl`.

    Attributes:
        prototypes: (K, D) prototypes without the time coordinate, sorted by `times`.
        times: (K,) time stamp of each prototype in [0, 1], in the units of the input times
            (not multiplied by sqrt(w)), ascending.
        assignments: (n, K) soft assignments a_tk of the last iteration, the weights from which
            the returned prototypes were computed. Columns follow the sorted prototypes; rows of
            padded points are 0.
        errors: (num_iterations,) mean over valid points of sum_k a_tk ||x~_t - c~_k||^2 after
            each iteration, with that iteration's assignments and updated centres. Neither the
            paper nor the authors' release defines this error, so this definition is the
            project's own.
    """

    prototypes: jax.Array
    times: jax.Array
    assignments: jax.Array
    errors: jax.Array


def segment_times(num_segments: int, dtype=jnp.float32) -> jax.Array:
    """Compute the normalised time tau_t = (t + 0.5) / T of each segment of a video.

    Args:
        num_segments: number T of segments of the video.
        dtype: floating dtype of the result.

    Returns:
        (T,) segment centres in (0, 1).
    """
    num_segments = int(num_segments)
    if num_segments < 0:
        raise ValueError(f"num_segments={num_segments} is negative; pass a segment count >= 0")
    return (jnp.arange(num_segments, dtype=dtype) + 0.5) / num_segments


def kmeans_plus_plus_indices(
    key: jax.Array,
    points: jax.Array,
    k: int,
    *,
    mask: jax.Array | None = None,
    num_local_trials: int = 1,
) -> jax.Array:
    """Choose k initial centres among `points` by k-means++ (D^2 sampling).

    The first centre is drawn uniformly among the valid points. Every further centre is drawn
    with probability proportional to D^2, the squared distance of a point to its nearest
    centre chosen so far (Arthur and Vassilvitskii, 2007). With num_local_trials = L > 1 the
    greedy variant is used: L candidates are drawn and the one that lowers the sum of D^2 the
    most is kept. scikit-learn's default, used by the authors' release, is the greedy variant
    with L = 2 + floor(ln k).

    Masked points have probability 0 and are never chosen. If every valid point already
    coincides with a chosen centre (fewer distinct valid points than k), no D^2 mass is left
    and the next centre is drawn uniformly among the valid points, so centres repeat.

    Args:
        key: PRNG key.
        points: (n, d) points.
        k: number of centres, static.
        mask: (n,) bool, True for valid points; None means all valid.
        num_local_trials: candidates per greedy step, static; 1 is plain D^2 sampling.

    Returns:
        (k,) int32 indices into `points`, in the order they were chosen.

    Raises:
        ValueError: if k is not in [1, n], or a concrete mask has fewer than k valid points.
    """
    points = jnp.asarray(points)
    valid = _validate_points_and_mask(points, k, mask, caller="k-means++", count_name="k")
    _check_num_local_trials(num_local_trials)
    return _kmeans_plus_plus_indices(
        key, jax.lax.stop_gradient(points), valid, k=k, num_local_trials=num_local_trials
    )


def kmeans_plus_plus(
    key: jax.Array,
    points: jax.Array,
    k: int,
    *,
    mask: jax.Array | None = None,
    num_local_trials: int = 1,
) -> jax.Array:
    """Initialise k centres by k-means++, with the gradient stopped.

    See `kmeans_plus_plus_indices` for the sampling scheme, masking and errors.

    Args:
        key: PRNG key.
        points: (n, d) points.
        k: number of centres, static.
        mask: (n,) bool, True for valid points; None means all valid.
        num_local_trials: candidates per greedy step, static; 1 is plain D^2 sampling.

    Returns:
        (k, d) centres, rows of `points` with the gradient stopped.
    """
    points = jnp.asarray(points)
    indices = kmeans_plus_plus_indices(
        key, points, k, mask=mask, num_local_trials=num_local_trials
    )
    return jax.lax.stop_gradient(points)[indices]


def _sample_proportional(key, weights, num_samples):
    """Draw `num_samples` indices with probability proportional to non-negative `weights`.

    Inverse-CDF sampling on the cumulative sum: entries of weight 0 are never drawn, and
    inserting zero-weight entries (padding) anywhere does not change which valid entry a key
    draws. That makes padded and unpadded inputs pick the same points.
    """
    cumulative = jnp.cumsum(weights)
    # Drawn in float32 whatever the dtype, so float32 and float64 inputs pick the same points.
    uniform = jax.random.uniform(key, (num_samples,), dtype=jnp.float32)
    targets = uniform.astype(weights.dtype) * cumulative[-1]
    indices = jnp.searchsorted(cumulative, targets, side="right", method="compare_all")
    # Rounding can push a target to the total; fall back to the last entry of positive weight.
    last_positive = weights.shape[0] - 1 - jnp.argmax(weights[::-1] > 0)
    return jnp.minimum(indices, last_positive).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "num_local_trials"))
def _kmeans_plus_plus_indices(key, points, valid, *, k, num_local_trials):
    dtype = points.dtype
    uniform_weights = valid.astype(dtype)
    key, first_key = jax.random.split(key)

    # Padded rows may hold anything, NaN included. Zeroing them keeps every distance finite.
    points = jnp.where(valid[:, None], points, 0)

    def squared_distances(center):
        sq = jnp.sum((points - center) ** 2, axis=-1)
        return jnp.where(valid, sq, 0)

    first = _sample_proportional(first_key, uniform_weights, 1)[0]
    indices = jnp.zeros((k,), jnp.int32).at[0].set(first)
    min_sq = squared_distances(points[first])

    def choose_next(i, state):
        key, indices, min_sq = state
        key, sample_key = jax.random.split(key)
        weights = jnp.where(jnp.sum(min_sq) > 0, min_sq, uniform_weights)
        candidates = _sample_proportional(sample_key, weights, num_local_trials)
        candidate_sq = jnp.minimum(min_sq[None, :], jax.vmap(squared_distances)(points[candidates]))
        best = jnp.argmin(jnp.sum(candidate_sq, axis=1))
        indices = indices.at[i].set(candidates[best])
        return key, indices, candidate_sq[best]

    _, indices, _ = jax.lax.fori_loop(1, k, choose_next, (key, indices, min_sq))
    return indices


def sopl(
    key: jax.Array,
    features: jax.Array,
    times: jax.Array,
    num_prototypes: int,
    *,
    num_iterations: int = 5,
    beta: float = 1e-3,
    time_weight: float = 1.0,
    mask: jax.Array | None = None,
    num_local_trials: int = 1,
) -> SOPLOutput:
    """Learn K time-stamped prototypes of a set of points by soft k-means (SOPL).

    One implementation serves video segments and narration phrases. The caller supplies the
    normalised times: (t + 0.5) / T for segments (see `segment_times`), the phrase midpoint
    over the narration's end time for phrases. Augmented points are [x, sqrt(w) * tau].

    Initial centres come from `kmeans_plus_plus_indices` on the augmented points, so the
    result depends on `key`; no gradient flows through that choice. A centre whose total
    assignment weight is exactly 0 keeps its previous value instead of dividing by 0.

    beta, time_weight and mask may be traced (jit, vmap). Their checks run only when they are
    concrete: under tracing a beta <= 0 gives NaN or inf, and a mask with fewer valid points
    than K makes k-means++ pick some valid point more than once, so duplicate prototypes
    appear (finite, with identical values and times).

    Args:
        key: PRNG key for the k-means++ initialisation.
        features: (n, D) points x_t, L2-normalised by the caller. Floating dtype is kept;
            integer inputs become float32.
        times: (n,) normalised times tau_t in [0, 1]; cast to the dtype of `features`.
        num_prototypes: number K of prototypes, static.
        num_iterations: number p of soft k-means iterations, static, >= 1.
        beta: softmax temperature in squared-distance units, > 0.
        time_weight: time weight w >= 0; 0 ignores time while clustering.
        mask: (n,) bool, True for valid points; None means all valid.
        num_local_trials: candidates per greedy k-means++ step, static; 1 is plain D^2
            sampling.

    Returns:
        SOPLOutput with prototypes (K, D) sorted by time, times (K,), assignments (n, K) and
        errors (num_iterations,).

    Raises:
        ValueError: on invalid shapes or hyperparameters, or if fewer valid points than K are
            given while the mask is concrete.
    """
    features = jnp.asarray(features)
    if not jnp.issubdtype(features.dtype, jnp.floating):
        features = features.astype(jnp.float32)
    times = jnp.asarray(times)
    if features.ndim != 2:
        raise ValueError(
            f"features has shape {features.shape}; SOPL expects (n, D) points, one per row"
        )
    if times.shape != features.shape[:1]:
        raise ValueError(
            f"times has shape {times.shape} but features has {features.shape[0]} rows; "
            "pass one normalised time per point"
        )
    if not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"num_iterations={num_iterations!r} is invalid; pass an integer >= 1")
    _check_num_local_trials(num_local_trials)
    _check_beta(beta)
    _check_time_weight(time_weight)
    valid = _validate_points_and_mask(
        features, num_prototypes, mask, caller="SOPL", count_name="num_prototypes"
    )

    dtype = features.dtype
    return _sopl(
        key,
        features,
        times.astype(dtype),
        jnp.asarray(beta, dtype),
        jnp.asarray(time_weight, dtype),
        valid,
        num_prototypes=num_prototypes,
        num_iterations=num_iterations,
        num_local_trials=num_local_trials,
    )


# Total soft assignment below which a prototype counts as empty (in points).
MIN_PROTOTYPE_WEIGHT = 1e-6


def _replicate_under_mesh(array):
    """Gather `array` onto every device when traced under a device mesh (`jax.set_mesh`).

    k-means++ is a discrete draw from a cumulative sum over the points. Summed over points
    sharded across devices, that sum rounds differently than on one device, and a draw near a
    boundary can flip. Drawing from the gathered points makes the choice that of one device.
    Without a mesh this returns `array` unchanged.
    """
    if jax.sharding.get_abstract_mesh().empty:
        return array
    return jax.lax.with_sharding_constraint(array, jax.sharding.PartitionSpec())


def _augmented_squared_distances(x, tau, centers, center_times, time_weight):
    """Return the (n, K) squared distances ||x~_t - c~_k||^2 in the time-augmented space."""
    # Expanded form |x|^2 + |c|^2 - 2 x.c avoids an (n, K, D) intermediate; rounding can make
    # it slightly negative, hence the clamp.
    feature_sq = (
        jnp.sum(x * x, axis=1)[:, None]
        + jnp.sum(centers * centers, axis=1)[None, :]
        - 2.0 * x @ centers.T
    )
    time_sq = (tau[:, None] - center_times[None, :]) ** 2
    return jnp.maximum(feature_sq, 0) + time_weight * time_sq


@functools.partial(
    jax.jit, static_argnames=("num_prototypes", "num_iterations", "num_local_trials")
)
def _sopl(
    key, features, times, beta, time_weight, valid, *, num_prototypes, num_iterations,
    num_local_trials,
):
    # The where() on the inputs is the double-where trick: padded rows become 0 in the forward
    # pass, and their gradient is exactly 0 even if they held NaN.
    x = jnp.where(valid[:, None], features, 0)
    tau = jnp.where(valid, times, 0)
    weights_of_rows = valid.astype(x.dtype)
    num_valid = jnp.maximum(jnp.sum(weights_of_rows), 1)

    augmented = jnp.concatenate([x, jnp.sqrt(time_weight) * tau[:, None]], axis=1)
    init = _kmeans_plus_plus_indices(
        key, _replicate_under_mesh(jax.lax.stop_gradient(augmented)),
        _replicate_under_mesh(valid), k=num_prototypes, num_local_trials=num_local_trials,
    )
    centers = jax.lax.stop_gradient(x[init])
    center_times = jax.lax.stop_gradient(tau[init])

    def iterate(carry, _):
        centers, center_times, _ = carry
        sq = _augmented_squared_distances(x, tau, centers, center_times, time_weight)
        assignments = jax.nn.softmax(-sq / beta, axis=1) * weights_of_rows[:, None]

        total = jnp.sum(assignments, axis=0)
        # A prototype with less than a millionth of one point's weight keeps its centre: at
        # beta = 1e-3 such totals reach float32's subnormal range, where 1 / total overflows
        # and turns the gradient into NaN.
        has_weight = total > MIN_PROTOTYPE_WEIGHT
        safe_total = jnp.where(has_weight, total, 1)
        new_centers = jnp.where(
            has_weight[:, None], (assignments.T @ x) / safe_total[:, None], centers
        )
        new_times = jnp.where(has_weight, (assignments.T @ tau) / safe_total, center_times)

        new_sq = _augmented_squared_distances(x, tau, new_centers, new_times, time_weight)
        error = jnp.sum(assignments * new_sq) / num_valid
        return (new_centers, new_times, assignments), error

    empty_assignments = jnp.zeros((x.shape[0], num_prototypes), x.dtype)
    (centers, center_times, assignments), errors = jax.lax.scan(
        iterate, (centers, center_times, empty_assignments), None, length=num_iterations
    )

    order = jnp.argsort(center_times)
    return SOPLOutput(
        prototypes=centers[order],
        times=center_times[order],
        assignments=assignments[:, order],
        errors=errors,
    )


def _concrete_value(value):
    """Return `value` as a NumPy array, or None when it is a tracer under jit or vmap."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_num_local_trials(num_local_trials):
    if not isinstance(num_local_trials, int) or num_local_trials < 1:
        raise ValueError(
            f"num_local_trials={num_local_trials!r} is invalid; pass an integer >= 1"
        )


def _check_beta(beta):
    concrete = _concrete_value(beta)
    if concrete is not None and not (concrete.size == 1 and math.isfinite(concrete) and concrete > 0):
        raise ValueError(f"beta={beta!r} is invalid; the SOPL temperature must be a finite number > 0")


def _check_time_weight(time_weight):
    concrete = _concrete_value(time_weight)
    if concrete is not None and not (
        concrete.size == 1 and math.isfinite(concrete) and concrete >= 0
    ):
        raise ValueError(
            f"time_weight={time_weight!r} is invalid; pass a finite number >= 0 (0 ignores time)"
        )


def _validate_points_and_mask(points, k, mask, *, caller, count_name):
    """Check shapes and counts, and return the (n,) bool validity mask."""
    if points.ndim != 2:
        raise ValueError(f"{caller} expects (n, d) points, got shape {points.shape}")
    n = points.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{count_name}={k!r} is invalid; pass an integer >= 1")
    if k > n:
        raise ValueError(
            f"{caller} received {n} points but {count_name}={k}; lower {count_name} to at most "
            f"{n} or pass more points"
        )
    if mask is None:
        return jnp.ones((n,), bool)

    mask = jnp.asarray(mask)
    if mask.shape != (n,):
        raise ValueError(f"mask has shape {mask.shape}; {caller} expects one flag per point, ({n},)")
    if mask.dtype != bool:
        raise ValueError(f"mask has dtype {mask.dtype}; pass a bool array, True for valid points")
    concrete = _concrete_value(mask)
    if concrete is not None:
        num_valid = int(concrete.sum())
        if num_valid < k:
            raise ValueError(
                f"{caller} received {num_valid} valid points but {count_name}={k}; lower "
                f"{count_name} to at most {num_valid} or pass more points"
            )
    return mask
