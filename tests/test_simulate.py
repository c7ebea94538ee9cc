"""Simulator: structure, statistics that follow their knobs, and the round trip through disk."""

import dataclasses

import numpy as np
import pytest
from scipy.cluster.vq import kmeans2

from dwsa_jax import metrics
from dwsa_jax.data import load_task, write_task
from dwsa_jax.simulate import SimulationConfig, default_demo_config, simulate_task, step_order

SMALL = SimulationConfig(num_videos=6, num_steps=5, feature_dim=24, min_segments=20,
                         max_segments=30)


def sequences_of(config, num_videos, seed=0):
    # 1-based step ids in performed order, as an annotation sorted by start time gives them.
    rng = np.random.default_rng(seed)
    return [[k + 1 for k in step_order(config, rng)] for _ in range(num_videos)]


def test_simulate_task_structure():
    task = simulate_task(SMALL, seed=0)
    assert task.num_steps == 5
    assert sorted(task.step_names) == [1, 2, 3, 4, 5]
    assert [v.vid for v in task.videos] == sorted(v.vid for v in task.videos)
    assert len(task.videos) == 6
    for video in task.videos:
        assert video.features.dtype == np.float32
        assert video.features.shape[1] == 24
        assert 20 <= video.num_segments <= 30
        assert np.isfinite(video.features).all()
        assert video.has_narration
        assert video.phrase_features.shape == (len(video.phrases), 24)
        assert np.all((video.phrase_times >= 0) & (video.phrase_times <= 1))
        duration = video.num_segments * SMALL.segment_seconds
        assert all(0 <= s.start < s.end <= duration + 1e-9 for s in video.steps)
        assert all(1 <= s.step_id <= 5 for s in video.steps)
        starts = [p.start for p in video.phrases]
        assert starts == sorted(starts)


def test_simulate_task_is_deterministic():
    first, second = simulate_task(SMALL, seed=4), simulate_task(SMALL, seed=4)
    other = simulate_task(SMALL, seed=5)
    np.testing.assert_array_equal(first.videos[2].features, second.videos[2].features)
    assert first.videos[2].phrases == second.videos[2].phrases
    assert not np.array_equal(first.videos[0].features[:5], other.videos[0].features[:5])


def test_steps_tile_segments_without_overlap():
    # Occurrences are whole segments: every boundary is a multiple of 3.2 s.
    for video in simulate_task(SMALL, seed=1).videos:
        for previous, step in zip(video.steps, video.steps[1:]):
            assert previous.end <= step.start + 1e-9
        for step in video.steps:
            assert step.start / 3.2 == pytest.approx(round(step.start / 3.2), abs=1e-6)


def test_canonical_order_has_zero_statistics():
    config = dataclasses.replace(SMALL, swap_probability=0.0, repeat_probability=0.0,
                                 skip_probability=0.0)
    sequences = sequences_of(config, 50)
    assert metrics.order_consistency_error(sequences) == 0.0
    assert metrics.repeat_frequency(sequences) == 0.0


def test_order_consistency_error_grows_with_swaps():
    errors = [
        metrics.order_consistency_error(
            sequences_of(dataclasses.replace(SMALL, swap_probability=p, repeat_probability=0.0,
                                             skip_probability=0.0), 80))
        for p in (0.0, 0.1, 0.3, 0.6)
    ]
    assert errors[0] == 0.0
    assert errors[0] < errors[1] < errors[2] < errors[3]


@pytest.mark.parametrize("probability", [0.1, 0.3])
def test_repeat_frequency_follows_knob(probability):
    # Each occurrence of a kept step is repeated once with probability p, so the share of
    # repeats among occurrences is about p / (1 + p). 400 videos of ~5 steps: std ~0.01.
    config = dataclasses.replace(SMALL, repeat_probability=probability)
    frequency = metrics.repeat_frequency(sequences_of(config, 400))
    assert frequency == pytest.approx(probability / (1 + probability), abs=0.04)


def test_skips_alone_raise_order_consistency_error():
    # Without swaps each video keeps the canonical order, yet [1, 2, 5] and [1, 3, 5] share
    # only 2 of 3 steps, so OCE counts skipped steps too.
    config = dataclasses.replace(SMALL, swap_probability=0.0, repeat_probability=0.0,
                                 skip_probability=0.3)
    assert metrics.order_consistency_error(sequences_of(config, 80)) > 0.05


def test_skip_probability_drops_steps():
    config = dataclasses.replace(SMALL, skip_probability=0.4, repeat_probability=0.0)
    lengths = [len(s) for s in sequences_of(config, 400)]
    # 5 steps kept with probability 0.6 each, at least 2: mean a little above 3.
    assert 2.9 < np.mean(lengths) < 3.5
    assert min(lengths) >= config.min_steps


def test_background_fraction_follows_knob():
    for fraction in (0.2, 0.5):
        task = simulate_task(dataclasses.replace(SMALL, background_fraction=fraction), seed=2)
        step_seconds = sum(s.end - s.start for v in task.videos for s in v.steps)
        total_seconds = sum(v.num_segments * 3.2 for v in task.videos)
        assert 1 - step_seconds / total_seconds == pytest.approx(fraction, abs=0.03)


def test_narration_is_near_its_step():
    config = dataclasses.replace(SMALL, chatter_per_minute=0.0, narration_probability=1.0,
                                 narration_lead_seconds=2.0, narration_lag_seconds=4.0)
    task = simulate_task(config, seed=3)
    for video in task.videos:
        duration = video.num_segments * 3.2
        for phrase in video.phrases:
            # The phrase names its step's verb and object. Some occurrence of that step starts
            # between 4 s before and 2 s after the phrase, unless the phrase was clipped.
            candidates = [s for s in video.steps
                          if all(w in phrase.text for w in task.step_names[s.step_id].split("_"))]
            assert candidates, phrase
            assert any(-2.0 - 1e-6 <= phrase.start - s.start <= 4.0 + 1e-6
                       or phrase.start in (0.0, round(duration - 1.0, 2))
                       for s in candidates), phrase


def test_chatter_rate_follows_knob():
    config = dataclasses.replace(SMALL, num_videos=30, narration_probability=0.0,
                                 chatter_per_minute=6.0)
    task = simulate_task(config, seed=0)
    minutes = sum(v.num_segments * 3.2 for v in task.videos) / 60
    phrases = sum(len(v.phrases) for v in task.videos)
    # Poisson with mean ~240; a video with no chatter gets one forced step phrase.
    assert phrases / minutes == pytest.approx(6.0, rel=0.2)


def kmeans_f1(task, features):
    # Plain k-means (scipy) on L2-normalised features, no background, scored on step frames.
    stacked = np.concatenate(features)
    stacked = stacked / np.linalg.norm(stacked, axis=1, keepdims=True)
    _, labels = kmeans2(stacked, task.num_steps, minit="++", seed=0)
    splits = np.cumsum([len(f) for f in features])[:-1]
    return metrics.evaluate_segments(np.split(labels, splits), [v.steps for v in task.videos]).f1


def test_nuisance_hides_steps_from_kmeans_but_is_linear():
    # With the default nuisance, k-means on raw features finds videos and nuisance, not steps.
    # Removing the top principal directions of the visual features recovers the steps. That
    # projection is linear and needs no labels, so a learned W_v can find such a map.
    config = dataclasses.replace(default_demo_config(), num_videos=20)
    task = simulate_task(config, seed=0)
    raw = [v.features.astype(np.float64) for v in task.videos]
    stacked = np.concatenate(raw)
    centred = stacked - stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    nuisance = vt[:config.nuisance_dim].T
    projected = [f - (f @ nuisance) @ nuisance.T for f in raw]
    raw_f1, projected_f1 = kmeans_f1(task, raw), kmeans_f1(task, projected)
    assert projected_f1 > raw_f1 + 0.2


def test_write_and_load_round_trip(tmp_path):
    task = simulate_task(SMALL, seed=7)
    write_task(task, tmp_path / "processed", tmp_path / "data")
    loaded = load_task(tmp_path / "processed", "sim", data_dir=tmp_path / "data")
    assert loaded.step_names == task.step_names
    assert loaded.num_steps == task.num_steps
    for original, read in zip(task.videos, loaded.videos, strict=True):
        assert read.vid == original.vid
        np.testing.assert_array_equal(read.features, original.features)
        np.testing.assert_array_equal(read.phrase_features, original.phrase_features)
        np.testing.assert_array_equal(read.phrase_times, original.phrase_times)
        assert read.phrases == original.phrases
        assert read.steps == original.steps


@pytest.mark.parametrize("changes, message", [
    (dict(feature_dim=8), "feature_dim=8 cannot hold"),
    (dict(min_segments=10), "min_segments=10 is too short"),
    (dict(swap_probability=1.5), r"swap_probability=1.5 must lie in \[0.0, 1.0\]"),
    (dict(max_segments=10, min_segments=20), "max_segments=10 is below"),
    (dict(num_videos=0), "num_videos=0 must be a positive integer"),
])
def test_config_rejects_invalid_values(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **changes)
