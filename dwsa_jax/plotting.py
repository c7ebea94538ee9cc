"""Plots: timelines of predicted against annotated key-steps, and the DWSA cost matrix with its
alignment path.

Figures are written with matplotlib's non-interactive Agg canvas, so plotting works without a
display.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.optimize import linear_sum_assignment

logger = logging.getLogger(__name__)

BACKGROUND = -1
BACKGROUND_COLOR = "#e6e6e6"
UNMATCHED_COLOR = "#404040"


def match_clusters_to_steps(
    predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray]
) -> dict[int, int]:
    """Match predicted clusters one to one to annotated steps by maximum frame overlap.

    Used only to colour each cluster like its step in the timeline.
    NOTE: metrics.evaluate_task computes the same Hungarian matching internally but does not
    return it; this copy exists for display only.

    Args:
      predicted: per video, (F_i,) frame labels, -1 = background.
      truth: per video, (F_i,) frame labels, -1 = background.

    Returns:
      cluster id -> step id for the matched clusters; unmatched clusters are absent.
    """
    pred = np.concatenate([np.asarray(p) for p in predicted]) if predicted else np.zeros(0, int)
    true = np.concatenate([np.asarray(t) for t in truth]) if truth else np.zeros(0, int)
    both = (pred != BACKGROUND) & (true != BACKGROUND)
    clusters = np.unique(pred[pred != BACKGROUND])
    steps = np.unique(true[true != BACKGROUND])
    if not clusters.size or not steps.size:
        return {}
    overlap = np.zeros((clusters.size, steps.size), dtype=np.int64)
    np.add.at(overlap, (np.searchsorted(clusters, pred[both]), np.searchsorted(steps, true[both])), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return {int(clusters[r]): int(steps[c]) for r, c in zip(rows, cols)}


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Split a label array into (start, length, label) runs of equal labels."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    return [(int(s), int(e - s), int(labels[s])) for s, e in zip(starts, ends)]


def _step_colors(step_ids: Sequence[int]) -> dict[int, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if len(step_ids) > 10 else colormaps["tab10"]
    return {step: cmap(i % cmap.N) for i, step in enumerate(sorted(step_ids))}


def plot_timelines(
    path: str | os.PathLike,
    video_ids: Sequence[str],
    truth: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    *,
    matchings: Mapping[str, Mapping[int, int]] | None = None,
    step_names: Mapping[int, str] | None = None,
    fps: float = 10.0,
    title: str | None = None,
) -> Path:
    """Draw, per video, the annotated key-steps above each method's predictions; save a PNG.

    Predicted clusters take the colour of the step they are matched to; unmatched clusters
    are dark grey and background is light grey.

    Args:
      path: output image path (PNG).
      video_ids: one id per video.
      truth: per video, (F_i,) annotated frame labels (step ids), -1 = background.
      predictions: method name -> per video, (F_i,) predicted frame labels, -1 = background.
      matchings: method name -> (cluster id -> step id). A method without an entry is matched
        on the plotted videos alone with `match_clusters_to_steps`. Pass the matching over the
        whole task to colour clusters as the metrics score them.
      step_names: step id -> name for the legend.
      fps: frames per second of the label arrays, for the time axis in seconds.
      title: figure title.

    Returns:
      The path written.
    """
    if not video_ids:
        raise ValueError("no videos to plot; pass at least one")
    for name, predicted in [("annotation", truth), *predictions.items()]:
        if len(predicted) != len(video_ids):
            raise ValueError(
                f"{name} has {len(predicted)} label arrays for {len(video_ids)} videos; pass one "
                "per video"
            )
    matchings = dict(matchings or {})
    for name, predicted in predictions.items():
        if name not in matchings:
            matchings[name] = match_clusters_to_steps(predicted, truth)

    step_ids = set(int(s) for t in truth for s in np.unique(t) if s != BACKGROUND)
    for matching in matchings.values():
        step_ids |= set(matching.values())
    colors = _step_colors(sorted(step_ids))

    def color_of(label: int, matching: Mapping[int, int] | None):
        if label == BACKGROUND:
            return BACKGROUND_COLOR
        if matching is None:  # an annotation row: the label is a step id
            return colors[label]
        step = matching.get(label)
        return UNMATCHED_COLOR if step is None else colors[step]

    row_names = ["annotated", *predictions]
    num_rows = len(row_names)
    figure = Figure(
        figsize=(10, (0.35 * num_rows + 0.45) * len(video_ids) + 1.0), layout="constrained"
    )
    axes = figure.subplots(len(video_ids), 1, squeeze=False)[:, 0]
    for index, (ax, vid) in enumerate(zip(axes, video_ids)):
        rows = [(truth[index], None)]
        rows += [(predictions[name][index], matchings[name]) for name in predictions]
        for row, (labels, matching) in enumerate(rows):
            y = num_rows - 1 - row  # annotation on top
            for start, length, label in _runs(labels):
                ax.broken_barh(
                    [(start / fps, length / fps)], (y - 0.4, 0.8),
                    facecolors=color_of(label, matching),
                )
        ax.set_yticks(list(range(num_rows - 1, -1, -1)), row_names, fontsize=8)
        ax.set_ylim(-0.5, num_rows - 0.5)
        ax.set_xlim(0, max(len(truth[index]), 1) / fps)
        ax.set_title(vid, fontsize=9, loc="left")
    axes[-1].set_xlabel("time (s)")

    handles = [
        Patch(color=colors[s], label=(step_names or {}).get(s, f"step {s}")) for s in sorted(colors)
    ]
    handles += [
        Patch(color=BACKGROUND_COLOR, label="background"),
        Patch(color=UNMATCHED_COLOR, label="unmatched cluster"),
    ]
    figure.legend(handles=handles, loc="outside right upper", fontsize=8)
    if title:
        figure.suptitle(title)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    logger.info("wrote %s", path)
    return path


def plot_alignment(
    ax,
    cost: np.ndarray,
    path_columns: np.ndarray | None = None,
    *,
    title: str | None = None,
):
    """Show a DWSA cost matrix (q, 2 * q_text + 1) with an alignment path on a matplotlib axis.

    Columns are 0-based: even columns are empty slots, odd column j is text prototype j // 2.

    Args:
      ax: matplotlib Axes to draw on.
      cost: (q, 2 * q_text + 1) cost matrix.
      path_columns: (q,) column visited by each row, e.g. from alignment.alignment_path.
      title: axis title.

    Returns:
      The image artist, for a colour bar.
    """
    cost = np.asarray(cost)
    image = ax.imshow(cost, aspect="auto", cmap="viridis", interpolation="nearest")
    if path_columns is not None:
        rows = np.arange(len(path_columns))
        path_columns = np.asarray(path_columns)
        matched = path_columns % 2 == 1
        ax.plot(path_columns, rows, color="white", linewidth=1)
        ax.scatter(path_columns[matched], rows[matched], color="red", marker="o", label="matched", zorder=3)
        ax.scatter(path_columns[~matched], rows[~matched], color="white", marker="x", label="empty slot", zorder=3)
        ax.legend(loc="lower left", fontsize=7)
    ax.set_xticks(range(cost.shape[1]))
    ax.set_yticks(range(cost.shape[0]))
    ax.set_xlabel("column (even: empty slot, odd j: text prototype j // 2)")
    ax.set_ylabel("visual prototype")
    if title:
        ax.set_title(title)
    return image
