"""Key-step localization: k-means over a task's segment features with a background ratio.

After training, every segment of every video of a task is mapped by the visual model (the
caller's job) and augmented with its time, [f_t, sqrt(w) * tau_t] with tau_t = (t + 0.5) / T.
k-means with K clusters runs over all segments of the task together. Inside each cluster of n
members, the floor((1 - b) * n) members nearest to the centre keep the cluster id and the rest
become background (-1), where b is the background ratio.

Clustering uses ott-jax's Lloyd k-means (`ott.tools.k_means.k_means`) with this project's
k-means++ (`dwsa_jax.prototypes.kmeans_plus_plus`) as its initialisation. The segments of all
videos are concatenated into one (N, D) array, so no padding or mask is needed here.

Reference: Y. Shen, L. Wang and E. Elhamifar, "Learning to Segment Actions from Visual and
Language Instructions via Differentiable Weak Sequence Alignment", CVPR 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ott.tools import k_means as ott_k_means

from dwsa_jax.prototypes import kmeans_plus_plus, segment_times

__all__ = ["LocalizationConfig", "background_mask", "localize_task"]

logger = logging.getLogger(__name__)

BACKGROUND = -1


@dataclasses.dataclass(frozen=True)
class LocalizationConfig:
    """Hyperparameters of key-step localization, with the paper's defaults.

    Attributes:
        background_ratio: fraction b in [0, 1] of each cluster, farthest from its centre,
            labelled background.
        time_weight: weight w >= 0 of the time coordinate sqrt(w) * tau. 0 drops the time
            coordinate, which gives the "kmeans (visual)" baseline.
        num_init: k-means restarts from different k-means++ draws; the run with the lowest
            sum of squared distances is kept.
        max_iterations: maximum number of Lloyd iterations per restart.
    """

    background_ratio: float = 0.4
    time_weight: float = 1.0
    num_init: int = 10
    max_iterations: int = 300


def localize_task(
    features: Sequence[np.ndarray | jax.Array],
    num_clusters: int,
    key: jax.Array,
    *,
    background_ratio: float = 0.4,
    time_weight: float = 1.0,
    num_init: int = 10,
    max_iterations: int = 300,
) -> list[np.ndarray]:
    """Label every segment of a task's videos with a key-step cluster id or background.

    Args:
        features: one (T_i, D) array per video of the task, already mapped by the model and
            L2-normalised by the caller. A video with 0 segments gets an empty label array.
        num_clusters: number K of k-means clusters (key-steps).
        key: PRNG key for the k-means++ initialisations.
        background_ratio: fraction b in [0, 1] of each cluster labelled background.
        time_weight: time weight w >= 0; 0 clusters on the features alone.
        num_init: k-means restarts; the run with the lowest error is kept.
        max_iterations: maximum number of Lloyd iterations per restart.

    Returns:
        One (T_i,) int32 NumPy array per video: a cluster id in [0, K) or -1 for background.

    Raises:
        ValueError: on arrays of the wrong rank or width, a task with fewer segments than K,
            or a hyperparameter out of range.
    """
    arrays = _validate_features(features)
    if not isinstance(num_clusters, (int, np.integer)) or num_clusters < 1:
        raise ValueError(f"num_clusters={num_clusters!r} is invalid; pass an integer >= 1")
    if not 0.0 <= background_ratio <= 1.0:
        raise ValueError(
            f"background_ratio={background_ratio!r} is invalid; pass a fraction in [0, 1]"
        )
    if not (math.isfinite(time_weight) and time_weight >= 0):
        raise ValueError(
            f"time_weight={time_weight!r} is invalid; pass a finite number >= 0 (0 ignores time)"
        )
    if num_init < 1:
        raise ValueError(f"num_init={num_init!r} is invalid; pass at least 1 k-means restart")
    if max_iterations < 1:
        raise ValueError(f"max_iterations={max_iterations!r} is invalid; pass an integer >= 1")

    lengths = [a.shape[0] for a in arrays]
    total = sum(lengths)
    if total < num_clusters:
        raise ValueError(
            f"the task has {total} segments in {len(arrays)} videos but num_clusters="
            f"{num_clusters}; lower the number of clusters to at most {total}"
        )

    # ott-jax's k-means keeps parts of its loop state in JAX's default float dtype (float64
    # when x64 is enabled), and a float32 input then fails its scan's type check.
    default_float = jax.dtypes.canonicalize_dtype(jnp.float64)
    points = time_augmented_points(arrays, time_weight).astype(default_float, copy=False)
    centroids, assignment = _cluster(
        jnp.asarray(points), key, num_clusters=int(num_clusters), num_init=int(num_init),
        max_iterations=int(max_iterations),
    )
    centroids = np.asarray(centroids, dtype=np.float64)
    assignment = np.asarray(assignment, dtype=np.int64)

    squared_distances = np.sum((points.astype(np.float64) - centroids[assignment]) ** 2, axis=1)
    keep = background_mask(assignment, squared_distances, background_ratio)
    labels = np.where(keep, assignment, BACKGROUND).astype(np.int32)
    logger.debug(
        "localized %d segments of %d videos into %d clusters, %d background",
        total, len(arrays), num_clusters, int(np.sum(~keep)),
    )

    boundaries = np.cumsum(lengths)[:-1]
    return list(np.split(labels, boundaries))


def time_augmented_points(features: Sequence[np.ndarray], time_weight: float) -> np.ndarray:
    """Concatenate videos' segment features and append sqrt(w) * tau per segment.

    Args:
        features: one (T_i, D) array per video.
        time_weight: time weight w >= 0; with w = 0 no time column is appended.

    Returns:
        (sum_i T_i, D + 1) points, or (sum_i T_i, D) when w = 0, in the features' dtype.
    """
    dtype = np.result_type(*[a.dtype for a in features])
    stacked = np.concatenate(features, axis=0).astype(dtype, copy=False)
    if time_weight == 0:
        return stacked
    taus = [np.asarray(segment_times(a.shape[0], dtype=dtype)) for a in features]
    time_column = math.sqrt(time_weight) * np.concatenate(taus)[:, None]
    return np.concatenate([stacked, time_column.astype(dtype)], axis=1)


def background_mask(
    assignment: np.ndarray, squared_distances: np.ndarray, background_ratio: float
) -> np.ndarray:
    """Mark which members of each cluster stay foreground under the background ratio.

    Inside a cluster of n members, the floor((1 - b) * n) members with the smallest squared
    distance to the centre are kept, together with every member tied with the last kept one.
    With b = 1, or b > 0 and a cluster of one member, nothing in that cluster is kept. The
    authors' release instead wraps its threshold index around in those two cases and labels
    nothing as background. This function follows the formula.

    Args:
        assignment: (N,) cluster id of each point.
        squared_distances: (N,) squared distance of each point to its cluster centre.
        background_ratio: fraction b in [0, 1].

    Returns:
        (N,) bool, True for points that keep their cluster id.
    """
    assignment = np.asarray(assignment)
    squared_distances = np.asarray(squared_distances)
    keep = np.zeros(assignment.shape, dtype=bool)
    for cluster in np.unique(assignment):
        members = np.flatnonzero(assignment == cluster)
        # The 1e-9 absorbs rounding in (1 - b) * n: (1 - 0.9) * 10 is 0.99999..., not 1.
        num_kept = math.floor((1.0 - background_ratio) * members.size + 1e-9)
        if num_kept == 0:
            continue
        member_distances = squared_distances[members]
        threshold = np.sort(member_distances)[num_kept - 1]
        keep[members[member_distances <= threshold]] = True
    return keep


def _validate_features(features):
    if isinstance(features, (np.ndarray, jax.Array)):
        raise ValueError(
            "features must be a list with one (T_i, D) array per video, got a single array; "
            "wrap it in a list"
        )
    arrays = [np.asarray(a) for a in features]
    if not arrays:
        raise ValueError("features is empty; pass one (T_i, D) array per video of the task")
    for index, array in enumerate(arrays):
        if array.ndim != 2:
            raise ValueError(
                f"features[{index}] has shape {array.shape}; pass (T_i, D) segment features"
            )
        if array.shape[1] != arrays[0].shape[1]:
            raise ValueError(
                f"features[{index}] has dimension {array.shape[1]} but features[0] has "
                f"{arrays[0].shape[1]}; map every video with the same model"
            )
    if not np.issubdtype(np.result_type(*arrays), np.floating):
        arrays = [a.astype(np.float32) for a in arrays]
    return arrays


@functools.partial(jax.jit, static_argnames=("num_clusters", "num_init", "max_iterations"))
def _cluster(points, key, *, num_clusters, num_init, max_iterations):
    def init(geometry, k, init_key):
        return kmeans_plus_plus(init_key, geometry.x, k)

    output = ott_k_means.k_means(
        points, num_clusters, init=init, n_init=num_init, max_iterations=max_iterations,
        rng=key,
    )
    return output.centroids, output.assignment
