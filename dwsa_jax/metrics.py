"""Key-step localization metrics and dataset statistics.

Frame-level scores follow the protocol of Shen, Wang and Elhamifar (CVPR 2021) for CrossTask:

* Segment labels become frame labels at `fps` frames per second, and a video lasts
  `T * segment_seconds` seconds, with T its number of segments.
* An annotated step covers frames `[floor(start * fps), ceil(end * fps))`, clipped to the video.
  Where annotation rows overlap, the later row wins.
* Over all videos of a task at once, predicted clusters are matched one to one to annotated steps
  by the Hungarian algorithm, maximising the number of frames they share.

Label convention for every frame or segment array here: -1 is background, any other value is a
cluster id (predictions) or a step id (ground truth). Other negative values are rejected.

The module is plain NumPy and SciPy: it runs once per evaluation, outside any jitted code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

logger = logging.getLogger(__name__)

BACKGROUND = -1
SEGMENT_SECONDS = 3.2
FPS = 10.0


class Scores(NamedTuple):
    """Frame-level scores of one task, or their mean over tasks.

    Fields are fractions in [0, 1].
    """

    precision: float
    """Matched correct frames / frames predicted as a key-step (not background)."""
    recall: float
    """Matched correct frames / frames annotated as a key-step."""
    f1: float
    """Harmonic mean of precision and recall, 0 when both are 0."""
    mof: float
    """Mean over frames: correct frames / all frames; background predicted on background counts."""
    mof_steps: float
    """Mean over frames restricted to annotated key-step frames."""


def num_frames_of(num_segments: int, segment_seconds: float = SEGMENT_SECONDS,
                  fps: float = FPS) -> int:
    """Count the frames of a video of `num_segments` segments.

    Args:
      num_segments: T, segments in the video.
      segment_seconds: length of one segment, seconds.
      fps: frames per second.

    Returns:
      `round(T * segment_seconds * fps)`, the frames of a video lasting T * segment_seconds s.
    """
    return int(round(num_segments * segment_seconds * fps))


def steps_to_frames(steps: Iterable[Sequence[float]], num_frames: int,
                    fps: float = FPS) -> np.ndarray:
    """Expand annotated steps to one label per frame.

    Args:
      steps: rows `(step_id, start, end)` with times in seconds, e.g. `data.Step` tuples, in
        file order. A later row overwrites an earlier one where they overlap.
      num_frames: frames in the video; frames past the end are clipped away.
      fps: frames per second.

    Returns:
      (num_frames,) int64 array of step ids, -1 where no step is annotated.
    """
    frames = np.full(num_frames, BACKGROUND, dtype=np.int64)
    for row in steps:
        step_id, start, end = int(row[0]), float(row[1]), float(row[2])
        if step_id < 0:
            raise ValueError(
                f"step id {step_id} is negative; annotated step ids must be >= 0 "
                "(CrossTask uses 1-based ids)")
        # Rounding first removes float noise such as 0.3 * 10 = 3.0000000000000004, whose
        # ceiling would add a frame.
        first = max(math.floor(round(start * fps, 9)), 0)
        stop = min(math.ceil(round(end * fps, 9)), num_frames)
        if stop > first:
            frames[first:stop] = step_id
    return frames


def segments_to_frames(labels: Sequence[int] | np.ndarray,
                       segment_seconds: float = SEGMENT_SECONDS,
                       fps: float = FPS) -> np.ndarray:
    """Expand per-segment labels to per-frame labels.

    Frame f spans [f / fps, (f + 1) / fps) seconds and takes the label of the segment that
    contains its midpoint.

    Args:
      labels: (T,) int labels of consecutive segments, -1 = background.
      segment_seconds: length of one segment, seconds.
      fps: frames per second.

    Returns:
      (num_frames_of(T),) int64 frame labels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"segment labels must be a 1-d array, got shape {labels.shape}")
    num_frames = num_frames_of(len(labels), segment_seconds, fps)
    midpoints = (np.arange(num_frames) + 0.5) / fps
    segment_index = np.minimum((midpoints / segment_seconds).astype(np.int64), len(labels) - 1)
    return labels.astype(np.int64)[segment_index]


def _check_labels(frames: np.ndarray, role: str, index: int) -> None:
    if frames.ndim != 1:
        raise ValueError(f"{role} frames of video {index} must be 1-d, got shape {frames.shape}")
    invalid = frames[frames < BACKGROUND]
    if invalid.size:
        raise ValueError(
            f"{role} frames of video {index} contain the label {int(invalid[0])}; "
            "use -1 for background and non-negative ids otherwise")


def evaluate_task(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> Scores:
    """Score predicted key-step frames of one task against the annotation.

    Clusters and steps are matched one to one over all videos of the task together
    (`scipy.optimize.linear_sum_assignment` on the frame-overlap counts, maximised). A frame is
    correct when its predicted cluster is matched to its annotated step, or when both are
    background. Frames of an unmatched cluster are never correct.

    Args:
      predicted: per video, (F_i,) int frame labels, -1 = background, else a cluster id.
      truth: per video, (F_i,) int frame labels, -1 = background, else a step id.

    Returns:
      Scores. `mof_steps` equals `recall` under these definitions: both count the matched
      correct frames among the annotated step frames. A ratio with a zero denominator (no
      predicted or no annotated step frame) is 0.
    """
    if len(predicted) != len(truth):
        raise ValueError(
            f"got predictions for {len(predicted)} videos but annotations for {len(truth)}; "
            "pass one frame array per video to both, in the same order")
    if not predicted:
        raise ValueError("no videos to evaluate; pass at least one predicted/annotated pair")

    predicted_parts, truth_parts = [], []
    for index, (pred, true) in enumerate(zip(predicted, truth)):
        pred, true = np.asarray(pred), np.asarray(true)
        _check_labels(pred, "predicted", index)
        _check_labels(true, "annotated", index)
        if pred.shape != true.shape:
            raise ValueError(
                f"video {index} has {pred.shape[0]} predicted frames but {true.shape[0]} "
                "annotated frames; expand both to the same duration (T * 3.2 s by default)")
        predicted_parts.append(pred)
        truth_parts.append(true)
    pred = np.concatenate(predicted_parts)
    true = np.concatenate(truth_parts)

    pred_step = pred != BACKGROUND
    true_step = true != BACKGROUND
    clusters = np.unique(pred[pred_step])
    steps = np.unique(true[true_step])

    # overlap[c, s]: frames predicted as cluster c and annotated as step s, over the whole task.
    correct = 0
    if clusters.size and steps.size:
        both = pred_step & true_step
        cluster_index = np.searchsorted(clusters, pred[both])
        step_index = np.searchsorted(steps, true[both])
        overlap = np.zeros((clusters.size, steps.size), dtype=np.int64)
        np.add.at(overlap, (cluster_index, step_index), 1)
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        correct = int(overlap[rows, cols].sum())

    num_predicted = int(pred_step.sum())
    num_annotated = int(true_step.sum())
    background_hits = int((~pred_step & ~true_step).sum())

    precision = correct / num_predicted if num_predicted else 0.0
    recall = correct / num_annotated if num_annotated else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    mof = (correct + background_hits) / pred.size if pred.size else 0.0
    return Scores(precision=precision, recall=recall, f1=f1, mof=mof, mof_steps=recall)


def evaluate_segments(segment_labels: Sequence[np.ndarray],
                      steps: Sequence[Iterable[Sequence[float]]],
                      segment_seconds: float = SEGMENT_SECONDS,
                      fps: float = FPS) -> Scores:
    """Score per-segment predictions of one task against annotated steps.

    Both sides are expanded to frames with a video lasting T * segment_seconds seconds, as the
    authors' released evaluation does. The annotation is clipped to that duration.

    Args:
      segment_labels: per video, (T_i,) int labels, -1 = background.
      steps: per video, its annotated `(step_id, start, end)` rows in seconds.
      segment_seconds: length of one segment, seconds.
      fps: frames per second.

    Returns:
      Scores, as `evaluate_task` returns them.
    """
    if len(segment_labels) != len(steps):
        raise ValueError(
            f"got segment labels for {len(segment_labels)} videos but steps for {len(steps)}; "
            "pass one entry per video to both, in the same order")
    predicted = [segments_to_frames(labels, segment_seconds, fps) for labels in segment_labels]
    truth = [steps_to_frames(rows, len(frames), fps) for rows, frames in zip(steps, predicted)]
    return evaluate_task(predicted, truth)


def average_scores(scores: Sequence[Scores]) -> Scores:
    """Average each field over tasks (the paper reports F1 averaged over tasks).

    Args:
      scores: one Scores per task.

    Returns:
      Scores whose fields are the unweighted means over tasks.
    """
    if not scores:
        raise ValueError("no task scores to average; evaluate at least one task")
    table = np.asarray([tuple(s) for s in scores], dtype=np.float64)
    return Scores(*(float(v) for v in table.mean(axis=0)))


def step_sequence(steps: Iterable[Sequence[float]]) -> list[int]:
    """List the step ids of one video's annotation sorted by start time, repeats kept.

    Args:
      steps: rows `(step_id, start, end)` with times in seconds.

    Returns:
      Step ids in order of start time; rows with equal starts keep their file order.
    """
    rows = sorted(steps, key=lambda row: float(row[1]))
    return [int(row[0]) for row in rows]


def _lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    # Classic dynamic programme over prefixes; sequences are a few dozen steps long.
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _nonempty(sequences: Sequence[Sequence[int]], statistic: str) -> list[list[int]]:
    nonempty = [list(s) for s in sequences if len(s)]
    empty = [i for i, s in enumerate(sequences) if not len(s)]
    if empty:
        logger.warning("%s: ignoring %d video(s) with no annotated step, at positions %s",
                       statistic, len(empty), empty)
    return nonempty


def order_consistency_error(sequences: Sequence[Sequence[int]]) -> float:
    """Compute the order consistency error (OCE) of a task's step sequences.

    OCE = 1 - mean over ordered pairs i != j of LCS(s_i, s_j) / min(|s_i|, |s_j|), with LCS the
    longest common subsequence (Shen, Wang and Elhamifar, CVPR 2021, supplementary material).
    0 means every pair of videos agrees on the order of the steps they share.

    Args:
      sequences: per video, its step ids sorted by start time, repeats kept (see
        `step_sequence`). Empty sequences are ignored with a warning.

    Returns:
      OCE in [0, 1].
    """
    kept = _nonempty(sequences, "order consistency error")
    if len(kept) < 2:
        raise ValueError(
            f"order consistency error needs at least 2 videos with annotated steps, got "
            f"{len(kept)}; add annotated videos")
    # LCS and min(|s_i|, |s_j|) are symmetric, so unordered pairs give the same mean.
    ratios = [
        _lcs_length(kept[i], kept[j]) / min(len(kept[i]), len(kept[j]))
        for i in range(len(kept)) for j in range(i + 1, len(kept))
    ]
    return 1.0 - float(np.mean(ratios))


def repeat_frequency(sequences: Sequence[Sequence[int]]) -> float:
    """Compute the repeat frequency R = 1 - sum_n unique(s_n) / sum_n |s_n|.

    R is the fraction of annotated step occurrences that repeat a step already done in the same
    video (Shen, Wang and Elhamifar, CVPR 2021, supplementary material).

    Args:
      sequences: per video, its step ids, repeats kept. Empty sequences are ignored with a
        warning.

    Returns:
      R in [0, 1).
    """
    kept = _nonempty(sequences, "repeat frequency")
    if not kept:
        raise ValueError("repeat frequency needs at least 1 video with annotated steps; "
                         "add annotated videos")
    unique = sum(len(set(s)) for s in kept)
    total = sum(len(s) for s in kept)
    return 1.0 - unique / total
