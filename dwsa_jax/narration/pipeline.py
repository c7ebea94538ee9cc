"""Subtitle file -> timed verb phrases with concreteness scores -> files of the released layout.

Writes, under one task folder (the layout `dwsa_jax.data.load_task` reads):

    verb_phrases/<vid>_verb_phrases.txt            start<TAB>end<TAB>phrase, seconds
    vocab_concrete.txt                             phrase<TAB>score for every extracted phrase
    text_embd/<vid>_verb_phrases_embeddings.npy    (P, D) float32, row i embeds line i
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from dwsa_jax import data
from dwsa_jax.narration.concreteness import ConcretenessConfig, score_phrases, write_vocab
from dwsa_jax.narration.embedding import Embedder, embed_phrases
from dwsa_jax.narration.phrases import DEFAULT_SPACY_MODEL, Timing, VerbPhrase, extract_verb_phrases
from dwsa_jax.narration.sentences import WordHook, transcript_from_captions
from dwsa_jax.narration.subtitles import Caption, read_subtitles

logger = logging.getLogger(__name__)

# The narration ablation of Shen, Wang and Elhamifar (CVPR 2021, supplement Table 4).
Mode = Literal["verb-dobj", "verb-phrase", "concrete"]
MODES: tuple[str, ...] = ("verb-dobj", "verb-phrase", "concrete")


@dataclass(frozen=True)
class NarrationConfig:
    """Settings of the subtitle-to-verb-phrase pipeline.

    Attributes:
      mode: "verb-dobj" (verb + direct object lemmas), "verb-phrase" (verb + object noun chunk
        + prepositional phrase) or "concrete". The "concrete" mode is the paper's method: it
        keeps the verb phrases whose concreteness reaches `threshold`.
      threshold: minimum concreteness (ratings run from 1 to 5) in "concrete" mode; 0 keeps all.
      timing: "phrase" times each phrase by its own words; "sentence" gives it its sentence's
        span, as the authors' released code does.
      spacy_model: installed spaCy English pipeline package.
      unrated_noun_score: concreteness of a noun missing from the ratings.
    """

    mode: Mode = "concrete"
    threshold: float = 3.0
    timing: Timing = "phrase"
    spacy_model: str = DEFAULT_SPACY_MODEL
    unrated_noun_score: float = 3.5

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown narration mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not self.threshold >= 0:
            raise ValueError(f"concreteness threshold {self.threshold} must be >= 0")


class Narration(NamedTuple):
    """Verb phrases of one video.

    Attributes:
      vid: video id (the subtitle file's name without suffix).
      phrases: every phrase the mode's extraction rule found, in text order.
      scores: concreteness of each phrase.
      kept: whether the mode keeps each phrase (all True except in "concrete" mode).
    """

    vid: str
    phrases: tuple[VerbPhrase, ...]
    scores: tuple[float, ...]
    kept: tuple[bool, ...]

    @property
    def kept_phrases(self) -> tuple[VerbPhrase, ...]:
        """Phrases written to the phrase file."""
        return tuple(phrase for phrase, keep in zip(self.phrases, self.kept) if keep)


def narrate_captions(
    vid: str,
    captions: Sequence[Caption],
    nlp,
    config: NarrationConfig = NarrationConfig(),
    *,
    restore_punctuation: WordHook | None = None,
    resolve_coreference: WordHook | None = None,
    ratings: Mapping[str, float] | None = None,
) -> Narration:
    """Extract, time and score the verb phrases of one video's captions.

    Args:
      vid: video id, used in logs.
      captions: the video's captions.
      nlp: loaded spaCy pipeline (`phrases.load_spacy`).
      config: mode, threshold and timing.
      restore_punctuation: optional word hook run before parsing (see `sentences`).
      resolve_coreference: optional word hook run after punctuation restoration.
      ratings: word -> concreteness; None uses the shipped ratings.

    Returns:
      The video's `Narration`.
    """
    transcript = transcript_from_captions(
        captions, restore_punctuation=restore_punctuation, resolve_coreference=resolve_coreference
    )
    if not transcript.text:
        logger.warning("video %s: the captions contain no words", vid)
        return Narration(vid, (), (), ())
    doc = nlp(transcript.text)
    rule = "verb-dobj" if config.mode == "verb-dobj" else "verb-phrase"
    phrases = extract_verb_phrases(doc, transcript, rule=rule, timing=config.timing)

    concreteness = ConcretenessConfig(config.threshold, config.unrated_noun_score)
    score_of = score_phrases([phrase.text for phrase in phrases], nlp, ratings, concreteness)
    scores = tuple(score_of[phrase.text] for phrase in phrases)
    if config.mode == "concrete":
        kept = tuple(score >= concreteness.threshold for score in scores)
    else:
        kept = (True,) * len(phrases)
    logger.debug("video %s: %d phrases, %d kept", vid, len(phrases), sum(kept))
    return Narration(vid, tuple(phrases), scores, kept)


def narrate_file(
    path: str | os.PathLike,
    nlp,
    config: NarrationConfig = NarrationConfig(),
    **hooks,
) -> Narration:
    """Read a subtitle file and narrate it (`narrate_captions`); the vid is the file's stem.

    Raises:
      SubtitleError: the file cannot be read; the message names the file and the line.
    """
    vid = Path(path).stem
    return narrate_captions(vid, read_subtitles(path), nlp, config, **hooks)


def write_narration(
    task_dir: str | os.PathLike,
    narration: Narration,
    embedder: Embedder | None = None,
) -> Path:
    """Write one video's kept phrases, and their embeddings when an embedder is given.

    Args:
      task_dir: the task folder (`<processed>/<task>`).
      narration: the video's phrases.
      embedder: text encoder for text_embd/; None writes no embedding file.

    Returns:
      Path of the phrase file.
    """
    # NOTE: in "concrete" mode the file holds only the kept phrases, so `load_task` normalises
    # phrase times by the last kept phrase. The released code normalises by the last extracted
    # one; "verb-phrase" mode plus the loader's concreteness threshold reproduces that.
    task_dir = Path(task_dir)
    phrase_dir = task_dir / data.PHRASE_DIR
    phrase_dir.mkdir(parents=True, exist_ok=True)
    kept = narration.kept_phrases
    phrase_path = phrase_dir / f"{narration.vid}{data.PHRASE_SUFFIX}"
    data.write_verb_phrases(
        phrase_path, [data.Phrase(phrase.start, phrase.end, phrase.text) for phrase in kept]
    )
    if embedder is not None:
        vectors = embed_phrases(embedder, [phrase.text for phrase in kept])
        text_dir = task_dir / data.TEXT_DIR
        text_dir.mkdir(parents=True, exist_ok=True)
        np.save(text_dir / f"{narration.vid}{data.TEXT_SUFFIX}", vectors)
    return phrase_path


def write_vocabulary(task_dir: str | os.PathLike, narrations: Sequence[Narration]) -> Path:
    """Write vocab_concrete.txt with the score of every phrase extracted from `narrations`.

    Phrases that "concrete" mode filtered out are listed too, so that the file records why
    they are missing from the phrase files.

    Returns:
      Path of the written file.
    """
    scores = {}
    for narration in narrations:
        scores.update(zip((phrase.text for phrase in narration.phrases), narration.scores))
    path = Path(task_dir) / data.VOCAB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_vocab(path, scores)
    return path
