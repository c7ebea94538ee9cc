"""Localization and evaluation pipeline: segment features -> key-step labels -> scores.

For one task: map every segment of every video that has features (with the trained f_v, or
only L2-normalise the pretrained features for the untrained baselines), run `localize_task`
over the whole task, expand segment labels to frames (3.2 s segments, 10 fps) and score them
against the annotated steps with `metrics.evaluate_segments`. Scores over several tasks are
averaged field by field; Shen, Wang and Elhamifar (CVPR 2021) report F1 averaged over tasks.

Methods (the rows of the paper's tables that need no narration code beyond training):

  "kmeans"       k-means on the pretrained visual features, no time coordinate, no training.
  "sopl"         the same with the time coordinate sqrt(w) * tau, no training.
  "sopl+dwsa"    train f_v and f_l with SOPL + DWSA, then localize with the time coordinate.
  "sopl+softdtw" the same with soft-DTW in place of DWSA.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dwsa_jax import metrics
from dwsa_jax.costs import l2_normalize
from dwsa_jax.localization import LocalizationConfig, localize_task
from dwsa_jax.model import FeatureMaps
from dwsa_jax.training import TrainConfig, resolve_num_prototypes, train

logger = logging.getLogger(__name__)

METHODS = ("kmeans", "sopl", "sopl+dwsa", "sopl+softdtw")
TRAINED_METHODS = {"sopl+dwsa": "dwsa", "sopl+softdtw": "softdtw"}


class MethodResult(NamedTuple):
    """Output of one method on one task.

    Attributes:
      method: the method's name, one of METHODS.
      labels: video id -> (T,) int32 segment labels, -1 = background, for every video with
        segment features.
      scores: metrics.Scores over the annotated videos, or None when no video is annotated.
      loss_history: (num_epochs,) training loss per epoch for trained methods, else None.
      model: the trained FeatureMaps used for localization, else None.
    """

    method: str
    labels: dict[str, np.ndarray]
    scores: metrics.Scores | None
    loss_history: np.ndarray | None
    model: FeatureMaps | None


def localization_videos(task) -> list:
    """Return the videos that get labels: those with at least one segment feature, by id."""
    return [
        v for v in sorted(task.videos, key=lambda v: v.vid)
        if v.features is not None and len(v.features) > 0
    ]


def embed_segments(videos: Sequence, model: FeatureMaps | None = None) -> list[np.ndarray]:
    """Map each video's segment features with f_v, or only L2-normalise them without a model.

    Args:
      videos: data.Video objects with (T_i, D) features.
      model: trained FeatureMaps, or None for the pretrained features.

    Returns:
      One (T_i, D) float array per video, unit-norm rows.
    """
    if not videos:
        return []
    stacked = jnp.asarray(np.concatenate([v.features for v in videos], axis=0))
    mapped = l2_normalize(stacked) if model is None else model.embed_visual(stacked)
    mapped = np.asarray(mapped)
    boundaries = np.cumsum([len(v.features) for v in videos])[:-1]
    return list(np.split(mapped, boundaries))


def localize(
    task,
    num_clusters: int,
    key: jax.Array,
    *,
    model: FeatureMaps | None = None,
    config: LocalizationConfig = LocalizationConfig(),
) -> dict[str, np.ndarray]:
    """Label every segment of a task's videos with a key-step cluster or background.

    Args:
      task: a data.Task.
      num_clusters: K, k-means clusters over all the task's segments.
      key: PRNG key of the k-means++ initialisations.
      model: trained FeatureMaps, or None to cluster the L2-normalised pretrained features.
      config: background ratio, time weight and k-means settings.

    Returns:
      video id -> (T,) int32 labels, cluster ids in [0, K) or -1 for background.
    """
    videos = localization_videos(task)
    if not videos:
        raise ValueError(f"task {task.name} has no video with segment features to localize")
    features = embed_segments(videos, model)
    labels = localize_task(
        features, num_clusters, key,
        background_ratio=config.background_ratio, time_weight=config.time_weight,
        num_init=config.num_init, max_iterations=config.max_iterations,
    )
    return {video.vid: label for video, label in zip(videos, labels)}


def evaluate_steps(
    labels: dict[str, np.ndarray], steps: dict[str, Sequence], *, task_name: str = "task"
) -> metrics.Scores | None:
    """Score segment labels against annotated steps, over all annotated videos together.

    Args:
      labels: video id -> (T,) segment labels, -1 = background.
      steps: video id -> annotated (step_id, start, end) rows in seconds, for the annotated
        videos only.
      task_name: task id for messages.

    Returns:
      metrics.Scores, or None when `steps` is empty.

    Raises:
      ValueError: when an annotated video has no labels, because leaving it out would inflate
        the scores.
    """
    if not steps:
        logger.warning("task %s has no annotated video; nothing to evaluate", task_name)
        return None
    vids = sorted(steps)
    missing = [vid for vid in vids if vid not in labels]
    if missing:
        raise ValueError(
            f"{len(missing)} annotated videos of task {task_name} have no predicted labels "
            f"(first: {missing[0]}); predict every video that has segment features"
        )
    return metrics.evaluate_segments([np.asarray(labels[vid]) for vid in vids], [steps[vid] for vid in vids])


def task_steps(task) -> dict[str, tuple]:
    """Return video id -> annotated steps for the task's annotated videos with features."""
    return {v.vid: v.steps for v in localization_videos(task) if v.steps is not None}


def evaluate_labels(task, labels: dict[str, np.ndarray]) -> metrics.Scores | None:
    """Score segment labels against a task's annotation; see `evaluate_steps`."""
    for vid, steps in task_steps(task).items():
        num_segments = task.video(vid).num_segments
        if vid in labels and len(labels[vid]) != num_segments:
            raise ValueError(
                f"video {vid} has {num_segments} segments but {len(labels[vid])} predicted "
                "labels; predict one label per segment"
            )
    return evaluate_steps(labels, task_steps(task), task_name=task.name)


def run_method(
    method: str,
    task,
    *,
    train_config: TrainConfig = TrainConfig(),
    localization_config: LocalizationConfig = LocalizationConfig(),
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
) -> MethodResult:
    """Run one method of METHODS on one task: (train,) localize and evaluate.

    "kmeans" localizes with time weight 0 and ignores localization_config.time_weight; the
    other methods use it. Trained methods override
    train_config.loss.alignment with their own alignment.

    Args:
      method: one of METHODS.
      task: a data.Task.
      train_config: training hyperparameters, also the source of K (num_prototypes).
      localization_config: localization hyperparameters.
      seed: seed of the localization PRNG key (training uses train_config.seed).
      checkpoint_dir: passed to `training.train` for trained methods.
      resume: passed to `training.train`.
      progress: show a training progress bar.

    Returns:
      MethodResult.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    num_clusters = resolve_num_prototypes(train_config, task)
    key = jax.random.PRNGKey(seed)

    model = None
    loss_history = None
    if method == "kmeans":
        localization_config = dataclasses.replace(localization_config, time_weight=0.0)
    elif method in TRAINED_METHODS:
        loss_config = dataclasses.replace(train_config.loss, alignment=TRAINED_METHODS[method])
        train_config = dataclasses.replace(train_config, loss=loss_config)
        result = train(
            task, train_config, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress
        )
        model, loss_history = result.eval_model, result.loss_history

    labels = localize(task, num_clusters, key, model=model, config=localization_config)
    scores = evaluate_labels(task, labels)
    if scores is not None:
        logger.info("%s on %s: F1 %.3f, MoF %.3f", method, task.name, scores.f1, scores.mof)
    return MethodResult(method, labels, scores, loss_history, model)


def average_over_tasks(scores: Sequence[metrics.Scores | None]) -> metrics.Scores | None:
    """Average scores over tasks, skipping tasks without annotation (None)."""
    present = [s for s in scores if s is not None]
    return metrics.average_scores(present) if present else None


def scores_to_dict(scores: metrics.Scores | None) -> dict[str, float] | None:
    """Return Scores as a plain dict of floats for JSON, or None."""
    return None if scores is None else {k: float(v) for k, v in scores._asdict().items()}


def format_table(results: dict[str, metrics.Scores | None]) -> str:
    """Format method name -> Scores as a fixed-width text table, scores in percent."""
    fields = ("precision", "recall", "f1", "mof", "mof_steps")
    headers = ("precision", "recall", "F1", "MoF", "MoF steps")
    width = max([len("method"), *(len(name) for name in results)])
    lines = ["  ".join([f"{'method':<{width}}", *(f"{h:>9}" for h in headers)])]
    for name, scores in results.items():
        if scores is None:
            cells = [f"{'-':>9}"] * len(fields)
        else:
            cells = [f"{100 * getattr(scores, f):>9.1f}" for f in fields]
        lines.append("  ".join([f"{name:<{width}}", *cells]))
    return "\n".join(lines)
