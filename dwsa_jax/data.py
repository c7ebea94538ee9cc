"""Tasks, videos and narration on disk, in the layout of the authors' released code.

One task is spread over two roots::

    <processed>/<task>/video_embd/<vid>_video_embeddings.npy         (T, D) segment features
    <processed>/<task>/verb_phrases/<vid>_verb_phrases.txt           start<TAB>end<TAB>phrase
    <processed>/<task>/text_embd/<vid>_verb_phrases_embeddings.npy   (P, D), one row per line
    <processed>/<task>/vocab_concrete.txt                            phrase<TAB>score
    <data>/<task>/annotations/<vid>.csv                              step_id,start,end
    <data>/<task>/mapping.txt                                        "step_id name" per line

Times are seconds and step ids are 1-based, as in CrossTask. A video id is
"<task>_<youtube id>". Arrays are read with pickling disabled and returned as float32.

Loading follows the released code: every video with a feature file is loaded (localization
uses all of them), and training uses the videos that also have narration phrases
(`videos_with_narration`). Whatever is left out is named in a logged warning.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

VIDEO_DIR = "video_embd"
PHRASE_DIR = "verb_phrases"
TEXT_DIR = "text_embd"
VOCAB_FILE = "vocab_concrete.txt"
ANNOTATION_DIR = "annotations"
MAPPING_FILE = "mapping.txt"
VIDEO_SUFFIX = "_video_embeddings.npy"
PHRASE_SUFFIX = "_verb_phrases.txt"
TEXT_SUFFIX = "_verb_phrases_embeddings.npy"

# Score written for phrases that `write_task` gets no concreteness for: the top of the
# 1 (abstract) to 5 (concrete) rating scale, so every threshold keeps them.
MAX_CONCRETENESS = 5.0


class Phrase(NamedTuple):
    """A narration phrase and its time span in seconds."""

    start: float
    end: float
    text: str


class Step(NamedTuple):
    """An annotated key-step occurrence: 1-based step id and time span in seconds."""

    step_id: int
    start: float
    end: float


@dataclasses.dataclass(frozen=True, eq=False)
class Video:
    """One video: segment features, narration phrases and, when annotated, its key-steps.

    Attributes:
      vid: video id, "<task>_<youtube id>".
      features: (T, D) segment features, one per 3.2 s segment.
      phrases: the P narration phrases kept after the concreteness filter, in file order.
      phrase_features: (P, D) phrase embeddings, None when the video has no phrase.
      phrase_times: (P,) phrase midpoints divided by the end of the video's last phrase
        (taken before filtering), in [0, 1].
      steps: annotated key-steps in file order, None when the video has no annotation.
    """

    vid: str
    features: np.ndarray
    phrases: tuple[Phrase, ...] = ()
    phrase_features: np.ndarray | None = None
    phrase_times: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros(0, dtype=np.float32))
    steps: tuple[Step, ...] | None = None

    def __post_init__(self):
        if self.features.ndim != 2:
            raise ValueError(f"video {self.vid}: features must be (T, D), "
                             f"got shape {self.features.shape}")
        num_phrases = len(self.phrases)
        if self.phrase_times.shape != (num_phrases,):
            raise ValueError(f"video {self.vid}: {num_phrases} phrases but phrase_times has "
                             f"shape {self.phrase_times.shape}")
        if self.phrase_features is None:
            if num_phrases:
                raise ValueError(f"video {self.vid}: {num_phrases} phrases but no "
                                 "phrase_features; pass a (P, D) array")
        elif self.phrase_features.shape != (num_phrases, self.features.shape[1]):
            raise ValueError(
                f"video {self.vid}: phrase_features has shape {self.phrase_features.shape}, "
                f"expected ({num_phrases}, {self.features.shape[1]}) for {num_phrases} phrases "
                "in the visual feature dimension")

    @property
    def num_segments(self) -> int:
        return self.features.shape[0]

    @property
    def has_narration(self) -> bool:
        return len(self.phrases) > 0


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """The videos of one task.

    Attributes:
      name: task id, e.g. "105222".
      videos: videos sorted by id.
      step_names: step id (1-based) -> name from mapping.txt, None without annotations.
      num_steps: number of key-steps K of the task, None when unknown.
    """

    name: str
    videos: tuple[Video, ...]
    step_names: dict[int, str] | None = None
    num_steps: int | None = None

    @property
    def feature_dim(self) -> int:
        return self.videos[0].features.shape[1]

    def video(self, vid: str) -> Video:
        """Return the video with id `vid`."""
        for video in self.videos:
            if video.vid == vid:
                return video
        raise KeyError(f"task {self.name} has no video {vid!r}")


# ----------------------------------------------------------------------------- readers


def load_features(path: str | os.PathLike) -> np.ndarray:
    """Load a (rows, D) feature array as float32, with pickling disabled.

    Args:
      path: a .npy file holding a 2-d numeric array.

    Returns:
      (rows, D) float32 array, all finite.
    """
    with open(path, "rb") as stream:
        header = stream.read(6)
    # Without this check numpy reports any non-.npy file as "needs pickling". A raw pickle
    # starts with the protocol opcode 0x80 and gets that message below.
    if header != b"\x93NUMPY" and not header.startswith((b"PK", b"\x80")):
        raise ValueError(f"{path} is not a .npy file (it lacks the NumPy header); "
                         "save the features with np.save")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error):
            raise ValueError(
                f"{path} needs Python pickling to load, which is disabled because unpickling "
                "can run arbitrary code; re-save it as a plain numeric array with "
                "np.save(path, np.asarray(features, dtype=np.float32))") from error
        raise ValueError(f"{path} is not a valid .npy array ({error}); "
                         "re-save it with np.save") from error
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path} is an archive of several arrays; save one (rows, D) array "
                         "per file with np.save")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path} contains a {array.dtype} array of shape {array.shape}, "
                         "but a 2-d numeric (rows, D) array is expected; re-save the features")
    array = array.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{path} has non-finite values (NaN or inf) in {bad_rows.size} row(s), first at "
            f"row {bad_rows[0]}; recompute these features or remove the video")
    return array


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """Read (1-based line number, line) pairs; blank lines are allowed only at the end."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(f"{path}:{number}: blank line inside the file; delete it")
    return list(enumerate(lines, start=1))


def _parse_seconds(text: str, path: Path, number: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{number}: {field} {text!r} is not a number of seconds; "
                         "fix or delete the line") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{path}:{number}: {field} {text!r} must be a finite number of "
                         "seconds >= 0; fix or delete the line")
    return value


def read_verb_phrases(path: str | os.PathLike) -> tuple[Phrase, ...]:
    """Read a verb-phrase file: one `start<TAB>end<TAB>phrase` line per phrase.

    Args:
      path: the `<vid>_verb_phrases.txt` file.

    Returns:
      Phrases in file order; the file's line i matches row i of the text embeddings.
    """
    path = Path(path)
    phrases = []
    for number, line in _data_lines(path):
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise ValueError(f"{path}:{number}: expected start<TAB>end<TAB>phrase, got "
                             f"{line!r}; fix or delete the line")
        start = _parse_seconds(fields[0], path, number, "start")
        end = _parse_seconds(fields[1], path, number, "end")
        if end < start:
            raise ValueError(f"{path}:{number}: end {end} s is before start {start} s; "
                             "fix the times")
        phrases.append(Phrase(start, end, fields[2].strip()))
    return tuple(phrases)


def read_annotation_csv(path: str | os.PathLike) -> tuple[Step, ...]:
    """Read a CrossTask annotation file: one `step_id,start,end` line per step occurrence.

    Args:
      path: the `<vid>.csv` file, without a header line.

    Returns:
      Steps in file order (a later row overwrites an earlier one in frame labels).
    """
    path = Path(path)
    steps = []
    with open(path, newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{number}: expected step_id,start,end, got "
                                 f"{','.join(row)!r}; fix or delete the line")
            try:
                step_id = int(row[0])
            except ValueError:
                raise ValueError(f"{path}:{number}: step id {row[0]!r} is not an integer; "
                                 "use the 1-based ids of mapping.txt") from None
            if step_id < 1:
                raise ValueError(f"{path}:{number}: step id {step_id} must be >= 1; "
                                 "use the 1-based ids of mapping.txt")
            start = _parse_seconds(row[1], path, number, "start")
            end = _parse_seconds(row[2], path, number, "end")
            if end < start:
                raise ValueError(f"{path}:{number}: end {end} s is before start {start} s; "
                                 "fix the times")
            steps.append(Step(step_id, start, end))
    return tuple(steps)


def read_mapping(path: str | os.PathLike) -> dict[int, str]:
    """Read a task's mapping.txt: one `step_id name` line per key-step.

    Args:
      path: the mapping file; ids must be 1..K, each once, in any order.

    Returns:
      step id -> step name, in id order.
    """
    path = Path(path)
    names: dict[int, str] = {}
    for number, line in _data_lines(path):
        fields = line.strip().split(maxsplit=1)
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected 'step_id name', got {line!r}; "
                             "fix or delete the line")
        try:
            step_id = int(fields[0])
        except ValueError:
            raise ValueError(f"{path}:{number}: step id {fields[0]!r} is not an integer; "
                             "fix the line") from None
        if step_id in names:
            raise ValueError(f"{path}:{number}: step id {step_id} appears twice; "
                             "keep one line per step")
        names[step_id] = fields[1].strip()
    if not names:
        raise ValueError(f"{path} lists no step; write one 'step_id name' line per key-step")
    expected = set(range(1, len(names) + 1))
    if set(names) != expected:
        raise ValueError(f"{path}: step ids {sorted(names)} are not 1..{len(names)}; "
                         "number the key-steps from 1 without gaps")
    return dict(sorted(names.items()))


def read_vocab(path: str | os.PathLike) -> dict[str, float]:
    """Read a concreteness vocabulary: one `phrase<TAB>score` line per phrase.

    Args:
      path: the `vocab_concrete.txt` file.

    Returns:
      phrase -> concreteness score (1 abstract to 5 concrete; 0 for stop-word phrases).
    """
    path = Path(path)
    scores = {}
    for number, line in _data_lines(path):
        phrase, tab, score = line.rpartition("\t")
        try:
            value = float(score)
        except ValueError:
            value = math.nan
        if not tab or not math.isfinite(value):
            raise ValueError(f"{path}:{number}: expected phrase<TAB>score, got {line!r}; "
                             "fix or delete the line")
        scores[phrase.strip()] = value
    return scores


def phrase_times_of(phrases: Sequence[Phrase]) -> np.ndarray:
    """Normalise phrase times: midpoint / end time of the last phrase.

    Call this before any filtering, so that the normaliser is the last phrase of the file.

    Args:
      phrases: a video's phrases in file order.

    Returns:
      (P,) float32 times, clipped to [0, 1] (a phrase can end after the last one starts).
    """
    if not phrases:
        return np.zeros(0, dtype=np.float32)
    last_end = phrases[-1].end
    if last_end <= 0:
        raise ValueError(f"the last phrase {phrases[-1].text!r} ends at {last_end} s, so "
                         "phrase times cannot be normalised; check the phrase times")
    midpoints = np.array([(p.start + p.end) / 2 for p in phrases], dtype=np.float64)
    return np.clip(midpoints / last_end, 0.0, 1.0).astype(np.float32)


def list_tasks(processed_dir: str | os.PathLike) -> list[str]:
    """List the task ids under a processed root: folders with a video_embd subfolder.

    Args:
      processed_dir: the `<processed>` root.

    Returns:
      Sorted task ids.
    """
    root = Path(processed_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"processed data folder {root} not found; pass the folder "
                                "that contains one subfolder per task")
    return sorted(p.name for p in root.iterdir() if (p / VIDEO_DIR).is_dir())


def _strip_suffix(names: Iterable[str], suffix: str) -> set[str]:
    return {name[:-len(suffix)] for name in names if name.endswith(suffix)}


def _files_in(folder: Path, suffix: str) -> set[str]:
    if not folder.is_dir():
        return set()
    return _strip_suffix((p.name for p in folder.iterdir()), suffix)


def _warn_videos(task: str, count_text: str, vids: Sequence[str]) -> None:
    if vids:
        logger.warning("task %s: %d video(s) %s: %s", task, len(vids), count_text,
                       ", ".join(sorted(vids)))


class _Narration(NamedTuple):
    phrases: tuple[Phrase, ...]
    features: np.ndarray | None
    times: np.ndarray
    num_read: int


def _load_narration(task_dir: Path, vid: str, dim: int, vocab: Mapping[str, float] | None,
                    threshold: float, not_in_vocab: list[str],
                    below_threshold: list[str]) -> _Narration | None:
    """Read, time and filter one video's phrases; None when it has no phrase file."""
    phrase_path = task_dir / PHRASE_DIR / f"{vid}{PHRASE_SUFFIX}"
    text_path = task_dir / TEXT_DIR / f"{vid}{TEXT_SUFFIX}"
    if not phrase_path.is_file():
        return None
    phrases = read_verb_phrases(phrase_path)
    if not phrases:
        return _Narration((), None, np.zeros(0, np.float32), 0)
    if not text_path.is_file():
        raise FileNotFoundError(
            f"video {vid}: {phrase_path} lists {len(phrases)} phrases but their embeddings "
            f"{text_path} are missing; embed the phrases or delete the phrase file")
    features = load_features(text_path)
    if features.shape[0] != len(phrases):
        raise ValueError(
            f"video {vid}: {text_path} has {features.shape[0]} rows but {phrase_path} has "
            f"{len(phrases)} phrases; re-embed the phrase file so that row i embeds line i")
    if features.shape[1] != dim:
        raise ValueError(
            f"video {vid}: phrase embeddings {text_path} have dimension {features.shape[1]} "
            f"but the video features have {dim}; embed text and video into the same space")

    # Times come from all phrases of the file, before the concreteness filter.
    times = phrase_times_of(phrases)
    keep = np.ones(len(phrases), dtype=bool)
    if threshold > 0:
        for index, phrase in enumerate(phrases):
            score = vocab.get(phrase.text)
            if score is None:
                not_in_vocab.append(phrase.text)
            elif score < threshold:
                keep[index] = False
                below_threshold.append(phrase.text)
    kept = tuple(p for p, k in zip(phrases, keep) if k)
    if not kept:
        return _Narration((), None, np.zeros(0, np.float32), len(phrases))
    return _Narration(kept, features[keep], times[keep], len(phrases))


def load_task(processed_dir: str | os.PathLike, task: str, *,
              data_dir: str | os.PathLike | None = None,
              concreteness_threshold: float = 3.0) -> Task:
    """Load one task from the released on-disk layout.

    Every video with a feature file is loaded, sorted by id. Phrases scoring below
    `concreteness_threshold` in vocab_concrete.txt are dropped after the phrase times are
    computed. A phrase missing from the vocabulary is kept (the filter only removes phrases
    known to be abstract) and counted in a warning. Videos without phrases, without
    annotation, or with every phrase filtered out are loaded and named in warnings.

    Args:
      processed_dir: the `<processed>` root with video and text features.
      task: task id, a subfolder of both roots.
      data_dir: the `<data>` root with annotations and mapping.txt; None to load without steps.
      concreteness_threshold: minimum concreteness score (1 to 5 scale) of a kept phrase;
        0 keeps all phrases and does not need vocab_concrete.txt.

    Returns:
      Task with float32 features. `num_steps` and `step_names` come from mapping.txt and are
      None without `data_dir`.
    """
    task_dir = Path(processed_dir) / task
    if not (task_dir / VIDEO_DIR).is_dir():
        available = list_tasks(processed_dir)
        raise FileNotFoundError(
            f"task {task!r} not found: {task_dir / VIDEO_DIR} does not exist; tasks under "
            f"{processed_dir}: {', '.join(available) or 'none'}")
    vids = sorted(_files_in(task_dir / VIDEO_DIR, VIDEO_SUFFIX))
    if not vids:
        raise FileNotFoundError(f"task {task}: no *{VIDEO_SUFFIX} file in "
                                f"{task_dir / VIDEO_DIR}; extract the video features first")

    vocab = None
    if concreteness_threshold > 0:
        vocab_path = task_dir / VOCAB_FILE
        if not vocab_path.is_file():
            raise FileNotFoundError(
                f"task {task}: {vocab_path} not found, so phrases cannot be filtered at "
                f"concreteness {concreteness_threshold}; create it with `dwsa-jax narrations` "
                "or pass a concreteness threshold of 0 to keep every phrase")
        vocab = read_vocab(vocab_path)

    step_names, annotations = None, None
    if data_dir is not None:
        step_names, annotations = _load_annotations(Path(data_dir), task, vids)

    videos, dim = [], None
    without_phrases, filtered_out, not_in_vocab, below_threshold = [], [], [], []
    num_read = num_kept = 0
    for vid in vids:
        features = load_features(task_dir / VIDEO_DIR / f"{vid}{VIDEO_SUFFIX}")
        if features.shape[0] == 0:
            raise ValueError(f"video {vid}: {task_dir / VIDEO_DIR / (vid + VIDEO_SUFFIX)} has "
                             "no segment; recompute its features or delete the file")
        if dim is None:
            dim = features.shape[1]
        elif features.shape[1] != dim:
            raise ValueError(
                f"video {vid}: features have dimension {features.shape[1]} but video "
                f"{vids[0]} has {dim}; extract every video of task {task} with the same model")

        narration = _load_narration(task_dir, vid, dim, vocab, concreteness_threshold,
                                    not_in_vocab, below_threshold)
        if narration is None or narration.num_read == 0:
            without_phrases.append(vid)
            narration = _Narration((), None, np.zeros(0, np.float32), 0)
        elif not narration.phrases:
            filtered_out.append(vid)
        num_read += narration.num_read
        num_kept += len(narration.phrases)

        videos.append(Video(
            vid=vid,
            features=features,
            phrases=narration.phrases,
            phrase_features=narration.features,
            phrase_times=narration.times,
            steps=None if annotations is None else annotations.get(vid),
        ))

    _warn_orphans(task_dir, task, set(vids))
    _warn_videos(task, "have no narration phrase (used for localization, not training)",
                 without_phrases)
    _warn_videos(task, f"lost every phrase to the concreteness threshold "
                       f"{concreteness_threshold} (used for localization, not training)",
                 filtered_out)
    if not_in_vocab:
        unique = sorted(set(not_in_vocab))
        logger.warning("task %s: %d phrase(s) missing from %s were kept unfiltered: %s",
                       task, len(not_in_vocab), VOCAB_FILE, "; ".join(unique))
    if below_threshold:
        # Filtering is the requested behaviour, so it is logged at INFO, with the phrases
        # themselves at DEBUG because a task has thousands.
        logger.info("task %s: the concreteness threshold %s kept %d of %d phrases",
                    task, concreteness_threshold, num_kept, num_read)
        logger.debug("task %s: phrases below the concreteness threshold: %s", task,
                     "; ".join(sorted(set(below_threshold))))
    logger.info("task %s: loaded %d videos, %d with narration", task, len(videos),
                sum(v.has_narration for v in videos))
    return Task(name=task, videos=tuple(videos), step_names=step_names,
                num_steps=None if step_names is None else len(step_names))


def _load_annotations(data_dir: Path, task: str, vids: Sequence[str]
                      ) -> tuple[dict[int, str], dict[str, tuple[Step, ...]]]:
    task_dir = data_dir / task
    mapping_path = task_dir / MAPPING_FILE
    if not mapping_path.is_file():
        raise FileNotFoundError(
            f"task {task!r}: {mapping_path} not found; pass the data folder that contains "
            f"{task}/{MAPPING_FILE} and {task}/{ANNOTATION_DIR}/, or no data folder to load "
            "without annotations")
    step_names = read_mapping(mapping_path)

    annotation_dir = task_dir / ANNOTATION_DIR
    annotations = {}
    for vid in vids:
        path = annotation_dir / f"{vid}.csv"
        if not path.is_file():
            continue
        steps = read_annotation_csv(path)
        unknown = sorted({s.step_id for s in steps} - set(step_names))
        if unknown:
            raise ValueError(f"{path}: step id(s) {unknown} are not in {mapping_path} "
                             f"(ids 1..{len(step_names)}); fix the annotation or the mapping")
        annotations[vid] = steps

    _warn_videos(task, "have no annotation file in " + str(annotation_dir),
                 [v for v in vids if v not in annotations])
    extra = _files_in(annotation_dir, ".csv") - set(vids)
    _warn_videos(task, "are annotated but have no video features, so they are skipped",
                 sorted(extra))
    return step_names, annotations


def _warn_orphans(task_dir: Path, task: str, vids: set[str]) -> None:
    orphans = (_files_in(task_dir / PHRASE_DIR, PHRASE_SUFFIX)
               | _files_in(task_dir / TEXT_DIR, TEXT_SUFFIX)) - vids
    _warn_videos(task, "have narration files but no video features, so they are skipped",
                 sorted(orphans))


# ----------------------------------------------------------------------------- batches


def videos_with_narration(task: Task) -> tuple[Video, ...]:
    """Select the videos usable for training: those with at least one phrase.

    Args:
      task: a loaded or simulated task.

    Returns:
      Videos with narration, in id order. The others are named in a warning.
    """
    kept = tuple(v for v in task.videos if v.has_narration)
    _warn_videos(task.name, "have no narration phrase and are left out of training",
                 [v.vid for v in task.videos if not v.has_narration])
    if not kept:
        raise ValueError(f"task {task.name}: no video has narration phrases, so there is "
                         "nothing to train on; extract verb phrases or lower the "
                         "concreteness threshold")
    return kept


def check_batch_sizes(videos: Sequence[Video], num_visual_prototypes: int,
                      num_text_prototypes: int, *, per_video: bool = False) -> None:
    """Check that a training batch has at least as many points as prototypes.

    SOPL initialises prototypes by k-means++ on the points, so it needs at least as many
    segments as visual prototypes and as many phrases as text prototypes.

    Args:
      videos: the batch.
      num_visual_prototypes: K, visual prototypes.
      num_text_prototypes: K + K_bg, text prototypes.
      per_video: check every video on its own (per-video SOPL) instead of the pooled batch.

    Raises:
      ValueError naming the videos, their counts and what to change.
    """
    if per_video:
        groups = [[v] for v in videos]
    else:
        groups = [list(videos)]
    for group in groups:
        vids = ", ".join(v.vid for v in group)
        segments = sum(v.num_segments for v in group)
        phrases = sum(len(v.phrases) for v in group)
        where = f"video {vids}" if per_video else f"batch of videos {vids}"
        if segments < num_visual_prototypes:
            raise ValueError(
                f"{where} has {segments} segments but {num_visual_prototypes} visual "
                "prototypes were requested; lower K, use larger (pooled) batches or drop "
                "the short video")
        if phrases < num_text_prototypes:
            raise ValueError(
                f"{where} has {phrases} phrases but {num_text_prototypes} text prototypes "
                "were requested; lower K or K_bg, use larger (pooled) batches, lower the "
                "concreteness threshold or drop the video")


# ----------------------------------------------------------------------------- writers


def _format_seconds(value: float) -> str:
    return repr(float(value))


def write_verb_phrases(path: str | os.PathLike, phrases: Sequence[Phrase]) -> None:
    """Write phrases as `start<TAB>end<TAB>phrase` lines (seconds)."""
    lines = []
    for phrase in phrases:
        if "\t" in phrase.text or "\n" in phrase.text:
            raise ValueError(f"phrase {phrase.text!r} contains a tab or newline, which the "
                             f"phrase file format cannot hold; replace them with spaces")
        lines.append(f"{_format_seconds(phrase.start)}\t{_format_seconds(phrase.end)}\t"
                     f"{phrase.text}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def write_annotation_csv(path: str | os.PathLike, steps: Sequence[Step]) -> None:
    """Write steps as `step_id,start,end` lines (seconds, 1-based ids)."""
    lines = [f"{int(s.step_id)},{_format_seconds(s.start)},{_format_seconds(s.end)}\n"
             for s in steps]
    Path(path).write_text("".join(lines), encoding="utf-8")


def write_task(task: Task, processed_dir: str | os.PathLike,
               data_dir: str | os.PathLike | None = None, *,
               concreteness: Mapping[str, float] | None = None) -> None:
    """Write a task in the released layout, so that `load_task` reads it back.

    Videos without phrases get no phrase file and videos without steps no annotation file.
    `load_task` recomputes phrase times from the written phrases, so a round trip reproduces
    `phrase_times` when no phrase was filtered out before writing.

    Args:
      task: the task to write.
      processed_dir: `<processed>` root; features, phrases and vocab_concrete.txt go to
        `<processed>/<task.name>/`.
      data_dir: `<data>` root for mapping.txt and annotation CSVs; None to skip them.
      concreteness: phrase -> score for vocab_concrete.txt; phrases missing from it get 5.0,
        the top of the scale, so that every threshold keeps them.
    """
    if not task.name or os.sep in task.name or task.name in (".", ".."):
        raise ValueError(f"task name {task.name!r} cannot be a folder name; use an id such "
                         "as '105222'")
    task_dir = Path(processed_dir) / task.name
    for sub in (VIDEO_DIR, PHRASE_DIR, TEXT_DIR):
        (task_dir / sub).mkdir(parents=True, exist_ok=True)

    scores = {}
    for video in task.videos:
        np.save(task_dir / VIDEO_DIR / f"{video.vid}{VIDEO_SUFFIX}", video.features)
        if not video.has_narration:
            continue
        write_verb_phrases(task_dir / PHRASE_DIR / f"{video.vid}{PHRASE_SUFFIX}",
                           video.phrases)
        np.save(task_dir / TEXT_DIR / f"{video.vid}{TEXT_SUFFIX}", video.phrase_features)
        for phrase in video.phrases:
            given = None if concreteness is None else concreteness.get(phrase.text)
            scores[phrase.text] = MAX_CONCRETENESS if given is None else float(given)
    (task_dir / VOCAB_FILE).write_text(
        "".join(f"{text}\t{score}\n" for text, score in sorted(scores.items())),
        encoding="utf-8")

    if data_dir is None:
        return
    data_task_dir = Path(data_dir) / task.name
    (data_task_dir / ANNOTATION_DIR).mkdir(parents=True, exist_ok=True)
    if task.step_names is not None:
        (data_task_dir / MAPPING_FILE).write_text(
            "".join(f"{i} {name}\n" for i, name in sorted(task.step_names.items())),
            encoding="utf-8")
    for video in task.videos:
        if video.steps is not None:
            write_annotation_csv(data_task_dir / ANNOTATION_DIR / f"{video.vid}.csv",
                                 video.steps)
