"""Simulated procedural tasks with narrated videos, in memory or in the released layout.

Generative model of one task (all randomness from one seed):

Embedding space. An orthonormal basis of R^D supplies K step directions e_1..e_K, a background
direction e_bg, an r-dimensional nuisance subspace U (D x r) and a modality-gap direction g.
Visual and text features of a step share its direction e_k, so both modalities live in one
embedding space.

Step sequence of a video. Start from the canonical order 1..K. Skip each step with probability
`skip_probability` (at least `min_steps` stay). Then walk once over adjacent pairs and swap each
pair with probability `swap_probability`: 0 keeps the canonical order, larger values give
less consistent orders. The order consistency error is 0 only with neither swaps nor skips,
because videos that skip different steps share shorter common subsequences. Finally, each
occurrence is
repeated with probability `repeat_probability`, the copy placed after the next step (as in
"stir, add rice, stir"): 0 gives a repeat frequency of 0.

Segments. A video has T ~ Uniform{min_segments..max_segments} segments of `segment_seconds`.
round((1 - background_fraction) * T) of them belong to steps, at least one per occurrence, the
rest shared out with Dirichlet weights. The background segments are split over the gaps before,
between and after the occurrences with Dirichlet weights. Annotated steps are exactly the
segment spans of the occurrences, in seconds, 1-based ids, in temporal order.

Visual features of segment t in video n with label k (or background):

    x_t = step_scale * e_k  (or background_scale * e_bg)
          + video_offset_scale * U z_n  + segment_nuisance_scale * U w_t
          + visual_noise * eps_t

with z_n, w_t ~ N(0, I_r / r) and eps_t ~ N(0, I_D / D), so each scale is the root mean square
norm of its term. The nuisance terms (camera, scene, lighting) carry no step information, but
by default they carry most of the variance, so k-means on the raw visual features groups
segments by video and nuisance rather than by step. A linear map that shrinks U (the learned
W_v of the feature model) removes them.

Narration. Each occurrence is narrated with probability `narration_probability` by 1 or 2
phrases whose start is the occurrence start plus Uniform(-narration_lead_seconds,
narration_lag_seconds), lasting 1.5 to 4 s. Unrelated chatter arrives as a Poisson process of
`chatter_per_minute` phrases per minute, uniform over the video. Text features:

    y = e_k + modality_gap * g + text_noise * eps        (phrase about step k)
    y = c   + modality_gap * g + text_noise * eps        (chatter, c a random unit vector)

Narration thus names the step with little noise, and the visual features do not. Aligning
visual prototypes with text prototypes (SOPL + DWSA) can therefore teach W_v to suppress U.
The gap g keeps the two modalities apart until the maps learn to remove it. Every video gets at least one phrase.
Phrase times are normalised as `data.load_task` does, so `write_task` + `load_task` returns the
same task.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from dwsa_jax.data import Phrase, Step, Task, Video, phrase_times_of

logger = logging.getLogger(__name__)

_VERBS = ("add", "pour", "stir", "cut", "whisk", "fry", "season", "spread", "fold", "press",
          "peel", "grate", "boil", "drain", "mix")
_OBJECTS = ("onion", "rice", "egg", "butter", "sauce", "garlic", "flour", "milk", "cheese",
            "oil", "salt", "tomato", "pepper", "dough", "noodles")
_PHRASE_TEMPLATES = ("{verb} the {obj}", "{verb} {obj}", "{verb} some {obj}", "now {verb} the {obj}")
_CHATTER = ("welcome back to my channel", "thank you for watching", "like and subscribe",
            "my mom taught me this", "it smells really good", "check the link below",
            "this is my favorite recipe", "let me know in the comments", "see you next time",
            "it is very easy to make", "my kids love this", "we are almost done")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulated task; defaults suit `dwsa-jax demo` (see the module docstring).

    Attributes:
      task_name: task id; video ids are "<task_name>_<index>".
      num_videos: videos in the task.
      num_steps: K, key-steps in the canonical order.
      feature_dim: D, dimension shared by visual and text features.
      min_segments, max_segments: range of T, segments per video (inclusive).
      segment_seconds: duration of one segment, seconds.
      min_steps: minimum number of steps a video keeps after skipping.
      skip_probability: probability that a video leaves out a step.
      swap_probability: probability of swapping each adjacent pair of steps (order
        consistency knob; 0 = every video keeps the canonical order of its steps).
      repeat_probability: probability that an occurrence is done again after the next step.
      background_fraction: fraction of each video's segments that belong to no step.
      nuisance_dim: r, dimension of the nuisance subspace.
      step_scale: norm of the step direction in visual features.
      background_scale: norm of the background direction in background segments.
      video_offset_scale: RMS norm of the per-video offset inside the nuisance subspace.
      segment_nuisance_scale: RMS norm of the per-segment nuisance inside that subspace.
      visual_noise: RMS norm of isotropic noise added to each visual feature.
      text_noise: RMS norm of isotropic noise added to each phrase feature.
      modality_gap: norm of the offset along g shared by all text features.
      narration_probability: probability that a step occurrence is narrated.
      narration_lead_seconds: how long before a step starts its phrase may start, seconds.
      narration_lag_seconds: how long after a step starts its phrase may start, seconds.
      chatter_per_minute: mean number of unrelated phrases per minute of video.
    """

    task_name: str = "sim"
    num_videos: int = 36
    num_steps: int = 7
    feature_dim: int = 64
    min_segments: int = 40
    max_segments: int = 90
    segment_seconds: float = 3.2
    min_steps: int = 2
    skip_probability: float = 0.1
    swap_probability: float = 0.1
    repeat_probability: float = 0.1
    background_fraction: float = 0.4
    nuisance_dim: int = 4
    step_scale: float = 1.0
    background_scale: float = 1.0
    video_offset_scale: float = 1.0
    segment_nuisance_scale: float = 1.0
    visual_noise: float = 0.5
    text_noise: float = 0.3
    modality_gap: float = 0.8
    narration_probability: float = 0.9
    narration_lead_seconds: float = 5.0
    narration_lag_seconds: float = 10.0
    chatter_per_minute: float = 2.0

    def __post_init__(self):
        _check_positive_int(self, "num_videos", "num_steps", "feature_dim", "min_segments",
                            "nuisance_dim", "min_steps")

        for name in ("skip_probability", "swap_probability", "repeat_probability",
                     "narration_probability"):
            _check_range(self, name, 0.0, 1.0)

        _check_range(self, "background_fraction", 0.0, 0.95)
        for name in ("step_scale", "background_scale", "video_offset_scale",
                     "segment_nuisance_scale", "visual_noise", "text_noise", "modality_gap",
                     "narration_lead_seconds", "narration_lag_seconds", "chatter_per_minute"):
            _check_range(self, name, 0.0, np.inf)

        if self.segment_seconds <= 0:
            raise ValueError(f"segment_seconds={self.segment_seconds} must be > 0 seconds")
        if self.max_segments < self.min_segments:
            raise ValueError(f"max_segments={self.max_segments} is below min_segments="
                             f"{self.min_segments}; raise max_segments")
        if self.min_steps > self.num_steps:
            raise ValueError(f"min_steps={self.min_steps} exceeds num_steps={self.num_steps}; "
                             "lower min_steps")
        # Steps with repeats can occupy up to 2 * K occurrences, one segment each at least.
        needed = int(np.ceil(2 * self.num_steps / (1 - self.background_fraction)))
        if self.min_segments < needed:
            raise ValueError(
                f"min_segments={self.min_segments} is too short for {self.num_steps} steps, "
                f"their repeats and background fraction {self.background_fraction}; "
                f"use min_segments >= {needed}")
        basis_size = self.num_steps + self.nuisance_dim + 2
        if self.feature_dim < basis_size:
            raise ValueError(
                f"feature_dim={self.feature_dim} cannot hold {self.num_steps} step, 1 "
                f"background, {self.nuisance_dim} nuisance and 1 gap directions; use "
                f"feature_dim >= {basis_size}")


def _check_positive_int(config, *names):
    for name in names:
        value = getattr(config, name)
        if int(value) != value or value < 1:
            raise ValueError(f"{name}={value} must be a positive integer")


def _check_range(config, name, low, high):
    value = getattr(config, name)
    if not low <= value <= high:
        raise ValueError(f"{name}={value} must lie in [{low}, {high}]")


def default_demo_config() -> SimulationConfig:
    """Return the configuration `dwsa-jax demo` simulates: 36 videos, K = 7, D = 64."""
    return SimulationConfig()


class _Directions:
    """Orthonormal directions of the embedding space: steps, background, nuisance, gap."""

    def __init__(self, config: SimulationConfig, rng: np.random.Generator):
        basis, _ = np.linalg.qr(rng.normal(size=(config.feature_dim, config.feature_dim)))
        k, r = config.num_steps, config.nuisance_dim
        self.steps = basis[:, :k].T                      # (K, D)
        self.background = basis[:, k]                    # (D,)
        self.nuisance = basis[:, k + 1:k + 1 + r]        # (D, r)
        self.gap = basis[:, k + 1 + r]                   # (D,)


def _step_names(num_steps: int, rng: np.random.Generator) -> dict[int, str]:
    pairs = [(v, o) for v in _VERBS for o in _OBJECTS]
    chosen = rng.choice(len(pairs), size=num_steps, replace=False)
    return {i + 1: f"{pairs[c][0]}_{pairs[c][1]}" for i, c in enumerate(chosen)}


def step_order(config: SimulationConfig, rng: np.random.Generator) -> list[int]:
    """Draw one video's sequence of 0-based step indices: skips, then swaps, then repeats.

    Args:
      config: the simulation knobs.
      rng: random generator.

    Returns:
      Step indices in the order the video performs them, repeats included.
    """
    kept = [k for k in range(config.num_steps) if rng.random() >= config.skip_probability]
    if len(kept) < config.min_steps:
        missing = [k for k in range(config.num_steps) if k not in kept]
        extra = rng.choice(missing, size=config.min_steps - len(kept), replace=False)
        kept = sorted(kept + [int(k) for k in extra])
    for i in range(len(kept) - 1):
        if rng.random() < config.swap_probability:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
    order = []
    pending = None  # a repeat waits until one more step has been done
    for k in kept:
        order.append(k)
        if pending is not None:
            order.append(pending)
            pending = None
        if rng.random() < config.repeat_probability:
            pending = k
    if pending is not None:
        order.append(pending)
    return order


def _segment_labels(order: list[int], num_segments: int, config: SimulationConfig,
                    rng: np.random.Generator) -> np.ndarray:
    """Lay the occurrences and background out over T segments; -1 marks background."""
    num_occurrences = len(order)
    step_total = max(num_occurrences, round((1 - config.background_fraction) * num_segments))
    lengths = 1 + rng.multinomial(step_total - num_occurrences,
                                  rng.dirichlet(np.full(num_occurrences, 4.0)))
    gaps = rng.multinomial(num_segments - step_total,
                           rng.dirichlet(np.ones(num_occurrences + 1)))
    labels = []
    for k, length, gap in zip(order, lengths, gaps):
        labels += [-1] * int(gap) + [k] * int(length)
    labels += [-1] * int(gaps[-1])
    return np.asarray(labels, dtype=np.int64)


def _steps_from_labels(labels: np.ndarray, segment_seconds: float) -> tuple[Step, ...]:
    steps = []
    start = 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            if labels[start] >= 0:
                steps.append(Step(int(labels[start]) + 1, round(start * segment_seconds, 2),
                                  round(t * segment_seconds, 2)))
            start = t
    return tuple(steps)


def _unit_noise(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    # N(0, I / dim): the expected squared norm of each row is 1.
    return rng.normal(size=(rows, dim)) / np.sqrt(dim)


def _visual_features(labels, directions, config, rng):
    num_segments, dim, r = len(labels), config.feature_dim, config.nuisance_dim
    signal = np.where(labels[:, None] >= 0,
                      config.step_scale * directions.steps[np.maximum(labels, 0)],
                      config.background_scale * directions.background[None, :])
    offset = config.video_offset_scale * rng.normal(size=r) / np.sqrt(r)
    nuisance = (offset[None, :]
                + config.segment_nuisance_scale * rng.normal(size=(num_segments, r)) / np.sqrt(r))
    features = (signal + nuisance @ directions.nuisance.T
                + config.visual_noise * _unit_noise(rng, num_segments, dim))
    return features.astype(np.float32)


def _narration(steps, duration, step_names, directions, config, rng):
    """Draw phrases (sorted by start) and their (P, D) features for one video."""
    spans, texts, meanings = [], [], []   # meanings: step index, or -1 for chatter

    def add_phrase(start, text, meaning):
        start = float(np.clip(start, 0.0, max(duration - 1.0, 0.0)))
        end = min(start + rng.uniform(1.5, 4.0), duration)
        spans.append((round(start, 2), round(end, 2)))
        texts.append(text)
        meanings.append(meaning)

    def step_text(k):
        verb, obj = step_names[k + 1].split("_", 1)
        template = _PHRASE_TEMPLATES[rng.integers(len(_PHRASE_TEMPLATES))]
        return template.format(verb=verb, obj=obj.replace("_", " "))

    for step in steps:
        if rng.random() >= config.narration_probability:
            continue
        for _ in range(1 + int(rng.random() < 0.3)):
            offset = rng.uniform(-config.narration_lead_seconds, config.narration_lag_seconds)
            add_phrase(step.start + offset, step_text(step.step_id - 1), step.step_id - 1)
    num_chatter = rng.poisson(config.chatter_per_minute * duration / 60.0)
    for start in rng.uniform(0.0, duration, size=num_chatter):
        add_phrase(start, _CHATTER[rng.integers(len(_CHATTER))], -1)
    if not spans:
        first = steps[0]
        add_phrase(first.start, step_text(first.step_id - 1), first.step_id - 1)

    order = sorted(range(len(spans)), key=lambda i: spans[i])
    phrases = tuple(Phrase(spans[i][0], spans[i][1], texts[i]) for i in order)
    meanings = np.asarray([meanings[i] for i in order])

    dim = config.feature_dim
    chatter = rng.normal(size=(len(phrases), dim))
    chatter /= np.linalg.norm(chatter, axis=1, keepdims=True)
    content = np.where(meanings[:, None] >= 0, directions.steps[np.maximum(meanings, 0)], chatter)
    features = (content + config.modality_gap * directions.gap[None, :]
                + config.text_noise * _unit_noise(rng, len(phrases), dim))
    return phrases, features.astype(np.float32)


def simulate_task(config: SimulationConfig, seed: int) -> Task:
    """Simulate a task: videos with features, narration and annotated key-steps.

    Args:
      config: the generative model's knobs (see the module docstring).
      seed: seed of all randomness; the same (config, seed) gives the same task.

    Returns:
      Task with `num_videos` videos sorted by id, `step_names` and `num_steps` = K. Features
      are float32 and not L2-normalised.
    """
    rng = np.random.default_rng(seed)
    directions = _Directions(config, rng)
    step_names = _step_names(config.num_steps, rng)
    videos = []
    for index in range(config.num_videos):
        num_segments = int(rng.integers(config.min_segments, config.max_segments + 1))
        order = step_order(config, rng)
        labels = _segment_labels(order, num_segments, config, rng)
        steps = _steps_from_labels(labels, config.segment_seconds)
        duration = num_segments * config.segment_seconds
        phrases, phrase_features = _narration(steps, duration, step_names, directions,
                                              config, rng)
        videos.append(Video(
            vid=f"{config.task_name}_{index:03d}",
            features=_visual_features(labels, directions, config, rng),
            phrases=phrases,
            phrase_features=phrase_features,
            phrase_times=phrase_times_of(phrases),
            steps=steps,
        ))
    logger.debug("simulated task %s: %d videos, %d segments, %d phrases", config.task_name,
                 len(videos), sum(v.num_segments for v in videos),
                 sum(len(v.phrases) for v in videos))
    return Task(name=config.task_name, videos=tuple(videos), step_names=step_names,
                num_steps=config.num_steps)
