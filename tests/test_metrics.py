"""Metrics on hand-worked examples, brute-force matching and the two real CrossTask videos."""

import csv
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwsa_jax.metrics import (
    Scores,
    average_scores,
    evaluate_segments,
    evaluate_task,
    num_frames_of,
    order_consistency_error,
    repeat_frequency,
    segments_to_frames,
    step_sequence,
    steps_to_frames,
)

SAMPLE = Path(__file__).parent / "data" / "crosstask-105222-sample" / "annotations"


def read_rows(path):
    # Plain csv reading, independent of the package's loader.
    with open(path, newline="") as handle:
        return [(int(r[0]), float(r[1]), float(r[2])) for r in csv.reader(handle) if r]


def test_steps_to_frames_floor_ceil_and_overwrite():
    # step 1: frames floor(2.5)=2 .. ceil(5.1)=6 -> 2..5; step 2: 4..7 overwrites 4, 5.
    steps = [(1, 0.25, 0.51), (2, 0.45, 0.8)]
    expected = [-1, -1, 1, 1, 2, 2, 2, 2, -1, -1]
    np.testing.assert_array_equal(steps_to_frames(steps, 10, fps=10.0), expected)


def test_steps_to_frames_clips_to_duration():
    # frames 9..19 requested, 10 frames exist; a step entirely past the end leaves nothing.
    frames = steps_to_frames([(3, 0.9, 2.0), (4, 5.0, 6.0)], 10, fps=10.0)
    np.testing.assert_array_equal(frames, [-1] * 9 + [3])


def test_steps_to_frames_ignores_float_noise():
    # 0.3 * 10 is 3.0000000000000004 in floating point; the step still ends at frame 3.
    np.testing.assert_array_equal(steps_to_frames([(1, 0.1, 0.3)], 5), [-1, 1, 1, -1, -1])


def test_steps_to_frames_rejects_negative_id():
    with pytest.raises(ValueError, match="step id -2"):
        steps_to_frames([(-2, 0.0, 1.0)], 10)


def test_segments_to_frames_default_rate():
    frames = segments_to_frames(np.array([2, -1, 5]))
    assert frames.shape == (96,)
    np.testing.assert_array_equal(frames, [2] * 32 + [-1] * 32 + [5] * 32)


def test_segments_to_frames_uneven_segment_length():
    # 0.25 s segments at 10 fps: 2.5 frames each; frame midpoints 0.05, 0.15, 0.25, 0.35, 0.45.
    frames = segments_to_frames([7, 8], segment_seconds=0.25, fps=10.0)
    np.testing.assert_array_equal(frames, [7, 7, 8, 8, 8])


def test_num_frames_of():
    assert num_frames_of(3) == 96
    assert num_frames_of(5, segment_seconds=1.0, fps=30.0) == 150


def test_evaluate_task_hand_worked():
    # Overlap (clusters 0, 1 x steps 1, 2) = [[2, 0], [1, 4]]; Hungarian picks 0->1, 1->2: 6
    # correct frames. 9 predicted step frames, 8 annotated, 2 background-background frames
    # out of 12.
    predicted = [np.array([0, 0, 1, 1, 1, -1, 0, -1]), np.array([1, 1, 1, -1])]
    truth = [np.array([1, 1, 1, 2, 2, -1, -1, -1]), np.array([2, 2, -1, 1])]
    scores = evaluate_task(predicted, truth)
    assert isinstance(scores, Scores)
    assert scores.precision == pytest.approx(6 / 9)
    assert scores.recall == pytest.approx(6 / 8)
    assert scores.f1 == pytest.approx(12 / 17)
    assert scores.mof == pytest.approx(8 / 12)
    assert scores.mof_steps == pytest.approx(6 / 8)


def test_evaluate_task_unmatched_cluster_never_correct():
    # One step, two clusters: only one cluster can be matched.
    scores = evaluate_task([np.array([0, 0, 1, 1, -1])], [np.array([1, 1, 1, 1, -1])])
    assert scores.precision == pytest.approx(2 / 4)
    assert scores.recall == pytest.approx(2 / 4)
    assert scores.mof == pytest.approx(3 / 5)


def test_evaluate_task_matching_ignores_label_values():
    # Cluster ids need not equal step ids; a perfect relabelling scores 1 everywhere.
    truth = [np.array([3, 3, -1, 5, 5, 1])]
    predicted = [np.array([0, 0, -1, 2, 2, 9])]
    assert evaluate_task(predicted, truth) == Scores(1.0, 1.0, 1.0, 1.0, 1.0)


def test_evaluate_task_all_background_prediction():
    scores = evaluate_task([np.array([-1, -1, -1])], [np.array([1, -1, -1])])
    assert scores.precision == 0.0
    assert scores.recall == 0.0
    assert scores.f1 == 0.0
    assert scores.mof == pytest.approx(2 / 3)


def brute_force_correct(pred, true):
    clusters = sorted(set(pred[pred >= 0]))
    steps = sorted(set(true[true >= 0]))
    best = 0
    # Every one-to-one matching of clusters to steps (as many pairs as the smaller side).
    small, large = (clusters, steps) if len(clusters) <= len(steps) else (steps, clusters)
    for chosen in itertools.permutations(large, len(small)):
        pairs = zip(small, chosen) if small is clusters else zip(chosen, small)
        total = sum(int(np.sum((pred == c) & (true == s))) for c, s in pairs)
        best = max(best, total)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_evaluate_task_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 30, size=3)
    predicted = [rng.integers(-1, 4, size=n) for n in lengths]
    truth = [rng.integers(-1, 5, size=n) for n in lengths]
    pred, true = np.concatenate(predicted), np.concatenate(truth)
    correct = brute_force_correct(pred, true)
    both_background = int(np.sum((pred == -1) & (true == -1)))
    scores = evaluate_task(predicted, truth)
    assert scores.precision == pytest.approx(correct / np.sum(pred >= 0))
    assert scores.recall == pytest.approx(correct / np.sum(true >= 0))
    assert scores.mof == pytest.approx((correct + both_background) / pred.size)


def test_evaluate_task_rejects_length_mismatch():
    with pytest.raises(ValueError, match="video 1 has 3 predicted frames but 2"):
        evaluate_task([np.zeros(2, int), np.zeros(3, int)], [np.zeros(2, int), np.zeros(2, int)])


def test_evaluate_task_rejects_other_negative_labels():
    with pytest.raises(ValueError, match="label -3"):
        evaluate_task([np.array([0, -3])], [np.array([1, 1])])


def test_evaluate_segments_clips_annotation_to_segment_duration():
    # 2 segments = 6.4 s = 64 frames; step 1 spans frames 0..31 and step 2 is cut at frame 64.
    labels = [np.array([0, 1])]
    steps = [[(1, 0.0, 3.2), (2, 3.2, 100.0)]]
    assert evaluate_segments(labels, steps) == Scores(1.0, 1.0, 1.0, 1.0, 1.0)


def test_average_scores_is_unweighted_mean():
    mean = average_scores([Scores(1.0, 0.5, 0.0, 0.2, 0.4), Scores(0.0, 0.5, 1.0, 0.4, 0.6)])
    assert mean == pytest.approx(Scores(0.5, 0.5, 0.5, 0.3, 0.5))


def test_order_consistency_error_hand_worked():
    # LCS ratios: ([1,2,3],[1,3,2]) 2/3, ([1,2,3],[3]) 1, ([1,3,2],[3]) 1 -> mean 8/9.
    assert order_consistency_error([[1, 2, 3], [1, 3, 2], [3]]) == pytest.approx(1 / 9)


def test_order_consistency_error_reversed_order():
    # LCS of a sequence and its reverse, distinct steps: 1.
    assert order_consistency_error([[1, 2, 3, 4], [4, 3, 2, 1]]) == pytest.approx(0.75)


def test_order_consistency_error_identical_orders_is_zero():
    assert order_consistency_error([[1, 2, 3], [1, 2, 3], [1, 3]]) == 0.0


def test_order_consistency_error_ignores_empty_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        value = order_consistency_error([[1, 2], [], [2, 1]])
    assert value == pytest.approx(0.5)
    assert "1 video(s)" in caplog.text
    assert "[1]" in caplog.text


def test_order_consistency_error_needs_two_videos():
    with pytest.raises(ValueError, match="at least 2 videos"):
        order_consistency_error([[1, 2], []])


def test_repeat_frequency_hand_worked():
    # unique 2 + 1 = 3 of 5 occurrences.
    assert repeat_frequency([[1, 2, 1, 2], [3]]) == pytest.approx(2 / 5)
    assert repeat_frequency([[1, 2, 3]]) == 0.0


def test_step_sequence_sorts_by_start():
    assert step_sequence([(2, 5.0, 6.0), (1, 1.0, 2.0), (3, 3.0, 9.0)]) == [1, 3, 2]


def test_real_crosstask_videos_statistics():
    # 105222_5sOPNTbFe6A: steps 1,3,4,2,5; 105222_L0MVdMNihGI by start: 4,6,2,6,1.
    # LCS = 2 ([4, 2]), min length 5 -> OCE = 1 - 2/5. R = 1 - (5 + 4) / 10.
    first = step_sequence(read_rows(SAMPLE / "105222_5sOPNTbFe6A.csv"))
    second = step_sequence(read_rows(SAMPLE / "105222_L0MVdMNihGI.csv"))
    assert first == [1, 3, 4, 2, 5]
    assert second == [4, 6, 2, 6, 1]
    assert order_consistency_error([first, second]) == pytest.approx(0.6)
    assert repeat_frequency([first, second]) == pytest.approx(0.1)


def test_real_crosstask_video_frames():
    # Second video: step 6 (63.46-65.86 s) is written after step 4 (62.56-63.62 s), so frames
    # 634..635 belong to step 6; step 4 keeps 625..633.
    frames = steps_to_frames(read_rows(SAMPLE / "105222_L0MVdMNihGI.csv"), 1200)
    np.testing.assert_array_equal(np.flatnonzero(frames == 4), np.arange(625, 634))
    np.testing.assert_array_equal(np.flatnonzero(frames == 6),
                                  np.concatenate([np.arange(634, 659), np.arange(693, 724)]))
    np.testing.assert_array_equal(np.flatnonzero(frames == 1), np.arange(1117, 1140))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 3), st.integers(-1, 4)), min_size=1, max_size=40),
       st.permutations(range(4)))
def test_evaluate_task_invariant_to_cluster_relabelling(pairs, permutation):
    pred = np.array([p for p, _ in pairs])
    true = np.array([t for _, t in pairs])
    relabelled = np.where(pred >= 0, np.array(permutation)[np.maximum(pred, 0)], -1)
    scores = evaluate_task([pred], [true])
    assert evaluate_task([relabelled], [true]) == pytest.approx(scores)
    for value in scores:
        assert 0.0 <= value <= 1.0
