"""Tests of key-step localization: background ratio by hand, clustering on toy tasks."""

import jax
import numpy as np
import pytest

from dwsa_jax.localization import (
    LocalizationConfig,
    background_mask,
    localize_task,
    time_augmented_points,
)


def _toy_task(seed, lengths, num_steps=3, dimension=8, noise=0.05):
    """Videos that run through `num_steps` steps in order, each step a random unit vector."""
    rng = np.random.default_rng(seed)
    step_vectors = rng.normal(size=(num_steps, dimension))
    step_vectors /= np.linalg.norm(step_vectors, axis=1, keepdims=True)
    features, truth = [], []
    for length in lengths:
        steps = np.minimum(np.arange(length) * num_steps // length, num_steps - 1)
        x = step_vectors[steps] + noise * rng.normal(size=(length, dimension))
        features.append(x / np.linalg.norm(x, axis=1, keepdims=True))
        truth.append(steps)
    return features, truth


# ---------------------------------------------------------------- background ratio by hand


def test_background_mask_keeps_ties():
    assignment = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    distances = np.array([0.1, 0.3, 0.3, 0.5, 0.2, 0.4, 0.1, 0.9])
    # Cluster 0 has 5 members: floor(0.6 * 5) = 3 are kept, 0.1, 0.2 and 0.3, and the other
    # 0.3 ties with the last kept one. Cluster 1 has 3 members: floor(1.8) = 1, only 0.1.
    keep = background_mask(assignment, distances, 0.4)
    np.testing.assert_array_equal(keep, [True, True, True, False, True, False, True, False])


def test_background_mask_extreme_ratios():
    assignment = np.array([0, 0, 1, 2, 2, 2])
    distances = np.array([0.5, 0.1, 0.2, 0.3, 0.3, 0.1])
    np.testing.assert_array_equal(background_mask(assignment, distances, 0.0), np.ones(6, bool))
    np.testing.assert_array_equal(background_mask(assignment, distances, 1.0), np.zeros(6, bool))


def test_background_mask_single_member_cluster():
    # floor((1 - 0.4) * 1) = 0, so a one-member cluster is all background.
    keep = background_mask(np.array([0, 1, 1]), np.array([0.0, 0.2, 0.1]), 0.4)
    np.testing.assert_array_equal(keep, [False, False, True])


def test_background_mask_rounding():
    # (1 - 0.9) * 10 is 0.999... in floating point, but the formula gives 1 kept member.
    keep = background_mask(np.zeros(10, int), np.arange(10.0), 0.9)
    np.testing.assert_array_equal(keep, np.arange(10) == 0)


# ---------------------------------------------------------------- time augmentation


def test_time_augmented_points_hand_values():
    features = [np.zeros((2, 3)), np.ones((1, 3))]
    points = time_augmented_points(features, time_weight=4.0)
    # sqrt(4) * (t + 0.5) / T: video 0 has times 0.25 and 0.75, video 1 has 0.5.
    np.testing.assert_allclose(points[:, -1], [0.5, 1.5, 1.0])
    np.testing.assert_allclose(points[:, :3], np.concatenate(features))
    assert time_augmented_points(features, time_weight=0.0).shape == (3, 3)


# ---------------------------------------------------------------- localize_task


def test_localize_task_recovers_steps():
    features, truth = _toy_task(0, lengths=[12, 9, 15])
    labels = localize_task(features, 3, jax.random.key(0), background_ratio=0.0)
    assert [len(l) for l in labels] == [12, 9, 15]
    predicted = np.concatenate(labels)
    expected = np.concatenate(truth)
    # Perfect clustering up to renaming: each cluster contains exactly one step.
    for cluster in range(3):
        assert len(np.unique(expected[predicted == cluster])) == 1
    assert len(np.unique(predicted)) == 3


def test_localize_task_matches_numpy_background():
    features, _ = _toy_task(1, lengths=[10, 14, 7], noise=0.3)
    key = jax.random.key(3)
    clusters = np.concatenate(localize_task(features, 3, key, background_ratio=0.0))
    labels = np.concatenate(localize_task(features, 3, key, background_ratio=0.4))

    # Recompute the background in NumPy from the same clustering. Lloyd's algorithm stops at
    # a fixed point, so each centre is the mean of its members in the time-augmented space.
    taus = np.concatenate([(np.arange(len(f)) + 0.5) / len(f) for f in features])
    points = np.concatenate([np.concatenate(features), taus[:, None]], axis=1)
    expected = clusters.copy()
    for cluster in range(3):
        members = np.flatnonzero(clusters == cluster)
        centre = points[members].mean(0)
        distances = ((points[members] - centre) ** 2).sum(1)
        num_kept = int(np.floor(0.6 * len(members) + 1e-9))
        expected[members[np.argsort(distances)[num_kept:]]] = -1
    np.testing.assert_array_equal(labels, expected)


def test_localize_task_time_only_split():
    # Identical features leave only the time coordinate, so two clusters split each video
    # at its midpoint.
    features = [np.tile([[1.0, 0.0]], (10, 1)), np.tile([[1.0, 0.0]], (10, 1))]
    labels = localize_task(features, 2, jax.random.key(1), background_ratio=0.0)
    first, second = labels[0][0], labels[0][-1]
    assert first != second
    for video_labels in labels:
        np.testing.assert_array_equal(video_labels, [first] * 5 + [second] * 5)


def test_localize_task_visual_baseline_ignores_time():
    # Two feature types alternate in time, 0.1 apart. With the time coordinate the squared
    # time distances (up to 1) dominate and the clusters split each video in halves. With
    # time_weight = 0 (the "kmeans (visual)" baseline) they follow the alternating types.
    types = np.arange(20) % 2
    video = np.stack([np.ones(20), 0.1 * types], axis=1)
    features = [video, video.copy()]
    key = jax.random.key(2)

    visual = localize_task(features, 2, key, background_ratio=0.0, time_weight=0.0)
    for labels in visual:
        assert len(set(labels[types == 0])) == 1
        assert len(set(labels[types == 1])) == 1
        assert labels[0] != labels[1]

    timed = localize_task(features, 2, key, background_ratio=0.0, time_weight=1.0)
    for labels in timed:
        assert len(set(labels[:10])) == 1
        assert len(set(labels[10:])) == 1
        assert labels[0] != labels[-1]


def test_localize_task_empty_video_and_dtype():
    features, _ = _toy_task(3, lengths=[8, 6])
    features = [features[0].astype(np.float32), np.zeros((0, 8), np.float32), features[1]]
    labels = localize_task(features, 3, jax.random.key(0))
    assert [len(l) for l in labels] == [8, 0, 6]
    assert all(l.dtype == np.int32 for l in labels)
    assert set(np.concatenate(labels)) <= {-1, 0, 1, 2}


@pytest.mark.parametrize(
    "features, kwargs, message",
    [
        ([np.zeros((2, 4)), np.zeros((1, 4))], {}, "3 segments in 2 videos but num_clusters=4"),
        ([np.zeros((5, 4)), np.zeros((5, 3))], {}, r"features\[1\] has dimension 3"),
        ([np.zeros(5)], {}, r"features\[0\] has shape \(5,\)"),
        (np.zeros((5, 4)), {}, "wrap it in a list"),
        ([], {}, "features is empty"),
        ([np.zeros((9, 4))], {"background_ratio": 1.5}, "background_ratio=1.5"),
        ([np.zeros((9, 4))], {"time_weight": -1.0}, "time_weight=-1.0"),
    ],
)
def test_localize_task_rejects_bad_input(features, kwargs, message):
    with pytest.raises(ValueError, match=message):
        localize_task(features, 4, jax.random.key(0), **kwargs)


def test_localization_config_defaults():
    config = LocalizationConfig()
    assert config.background_ratio == 0.4
    assert config.time_weight == 1.0


def test_localize_task_float32_input_with_x64():
    # The test suite runs with x64 enabled, where float32 points once failed inside ott-jax.
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(12, 4)).astype(np.float32) for _ in range(3)]
    labels = localize_task(features, 3, jax.random.key(0), background_ratio=0.0)
    assert [len(l) for l in labels] == [12, 12, 12]
    assert all(set(np.unique(l)) <= {0, 1, 2} for l in labels)
