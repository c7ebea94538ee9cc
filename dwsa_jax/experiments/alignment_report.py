"""Which narration and which video segments fall into prototypes that DWSA aligns.

The report follows Figures 5 and 6 of the supplement of Shen, Wang and Elhamifar (CVPR 2021).
With a trained model, SOPL runs over all the segments of a task's narrated videos and over all
their phrases, and DWSA's hard alignment path pairs visual with linguistic prototypes. For each
matched pair the report lists up to `max_items` phrases assigned to the linguistic prototype
and up to `max_items` segments of the visual prototype.
Segments are drawn from the half of the prototype's segments closest to it, because most of a
prototype's far members are background. Each segment is shown with its video id, its time
range and, for checking, the step annotated at its midpoint.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import numpy as np

from dwsa_jax import alignment, costs, data, prototypes
from dwsa_jax.metrics import SEGMENT_SECONDS
from dwsa_jax.model import FeatureMaps, LossConfig

logger = logging.getLogger(__name__)


class SegmentRef(NamedTuple):
    """One video segment: video id, start and end in seconds, annotated step name or None."""

    vid: str
    start: float
    end: float
    step: str | None


class AlignedPair(NamedTuple):
    """One visual prototype and the linguistic prototype DWSA matches it to.

    Attributes:
      visual: index of the visual prototype, in time order.
      text: index of the linguistic prototype, in time order.
      cost: 1 - cos between the two prototypes.
      num_phrases: phrases assigned to the linguistic prototype.
      num_segments: segments assigned to the visual prototype.
      phrases: up to max_items phrase texts, drawn at random.
      segments: up to max_items segments from the closest half, drawn at random, in video and
        time order.
    """

    visual: int
    text: int
    cost: float
    num_phrases: int
    num_segments: int
    phrases: tuple[str, ...]
    segments: tuple[SegmentRef, ...]


def _annotated_step(video: data.Video, time: float, step_names) -> str | None:
    name = None
    for step in video.steps or ():
        if step.start <= time < step.end:  # later rows overwrite earlier ones, as in metrics
            name = (step_names or {}).get(step.step_id, f"step {step.step_id}")
    return name


def aligned_pairs(
    task: data.Task,
    model: FeatureMaps,
    num_prototypes: int,
    loss: LossConfig,
    seed: int,
    *,
    max_items: int = 12,
) -> list[AlignedPair]:
    """Pair visual and linguistic prototypes with DWSA and sample their members.

    Args:
      task: the task; its videos with narration are used.
      model: trained FeatureMaps.
      num_prototypes: K visual prototypes; the text side gets K + loss.num_background_prototypes.
      loss: SOPL and DWSA settings (p, beta, time weight, delta_e, row softmax).
      seed: seeds SOPL's k-means++ and the random draws.
      max_items: phrases and segments listed per pair.

    Returns:
      One AlignedPair per matched visual prototype, in visual prototype order.
    """
    videos = data.videos_with_narration(task)
    visual = np.asarray(model.embed_visual(np.concatenate([v.features for v in videos])))
    visual_times = np.concatenate([np.asarray(prototypes.segment_times(v.num_segments))
                                   for v in videos])
    owners = [(v, t) for v in videos for t in range(v.num_segments)]
    text = np.asarray(model.embed_text(np.concatenate([v.phrase_features for v in videos])))
    text_times = np.concatenate([v.phrase_times for v in videos]).astype(visual.dtype)
    phrases = [p.text for v in videos for p in v.phrases]

    visual_key, text_key = jax.random.split(jax.random.PRNGKey(seed))
    settings = dict(num_iterations=loss.sopl_iterations, beta=loss.beta,
                    time_weight=loss.time_weight)
    visual_sopl = prototypes.sopl(visual_key, visual, visual_times, num_prototypes, **settings)
    text_sopl = prototypes.sopl(text_key, text, text_times,
                                num_prototypes + loss.num_background_prototypes, **settings)
    cost = np.asarray(costs.dwsa_cost_matrix(
        visual_sopl.prototypes, text_sopl.prototypes, delta_e=loss.delta_e,
        row_softmax=loss.row_softmax))
    matches = np.asarray(alignment.path_matches(alignment.alignment_path(cost)))

    visual_members = np.asarray(visual_sopl.assignments).argmax(axis=1)
    text_members = np.asarray(text_sopl.assignments).argmax(axis=1)
    centres = np.asarray(visual_sopl.prototypes)
    centre_times = np.asarray(visual_sopl.times)
    rng = np.random.default_rng(seed)
    pairs = []
    for i, n in enumerate(matches):
        if n < 0:
            continue
        phrase_ids = np.flatnonzero(text_members == n)
        chosen = rng.choice(phrase_ids, size=min(max_items, phrase_ids.size), replace=False)

        segment_ids = np.flatnonzero(visual_members == i)
        squared = (np.sum((visual[segment_ids] - centres[i]) ** 2, axis=1)
                   + loss.time_weight * (visual_times[segment_ids] - centre_times[i]) ** 2)
        closest = segment_ids[np.argsort(squared, kind="stable")[: (segment_ids.size + 1) // 2]]
        drawn = np.sort(rng.choice(closest, size=min(max_items, closest.size), replace=False))
        segments = []
        for index in drawn:
            video, t = owners[index]
            start, end = t * SEGMENT_SECONDS, (t + 1) * SEGMENT_SECONDS
            segments.append(SegmentRef(video.vid, start, end,
                                       _annotated_step(video, (start + end) / 2, task.step_names)))
        pairs.append(AlignedPair(
            visual=i, text=int(n), cost=float(cost[i, 2 * n + 1]),
            num_phrases=int(phrase_ids.size), num_segments=int(segment_ids.size),
            phrases=tuple(phrases[j] for j in sorted(chosen)), segments=tuple(segments),
        ))
    logger.debug("task %s: DWSA matched %d of %d visual prototypes", task.name, len(pairs),
                 num_prototypes)
    return pairs


def format_pairs(task_name: str, pairs: list[AlignedPair], num_prototypes: int) -> str:
    """Format the pairs of one task as a markdown section."""
    lines = [f"## Task {task_name}", "",
             f"DWSA matched {len(pairs)} of {num_prototypes} visual prototypes.", ""]
    for pair in pairs:
        steps = [s.step or "background" for s in pair.segments]
        values, counts = np.unique(steps, return_counts=True) if steps else ([], [])
        common = f"{values[np.argmax(counts)]} ({counts.max()} of {len(steps)})" if steps else "-"
        lines += [
            f"### Visual prototype {pair.visual} <-> linguistic prototype {pair.text} "
            f"(cost {pair.cost:.3f})", "",
            f"Phrases ({len(pair.phrases)} of {pair.num_phrases} assigned): "
            + ("; ".join(pair.phrases) if pair.phrases else "none") + ".", "",
            f"Segments ({len(pair.segments)} drawn from the closest half of {pair.num_segments}; "
            f"most common annotated step: {common}):", "",
            "| video | start (s) | end (s) | annotated step |",
            "|---|---:|---:|---|",
        ]
        lines += [f"| {s.vid} | {s.start:.1f} | {s.end:.1f} | {s.step or 'background'} |"
                  for s in pair.segments]
        lines.append("")
    return "\n".join(lines)
