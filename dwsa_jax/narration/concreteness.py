"""Concreteness scores of verb phrases, from word ratings shipped as package data.

A phrase's score is the highest rating among its tokens that are not stop words. A token is
looked up by its lower-cased text, then by its lower-cased lemma, in the `Conc.M` column of the
Brysbaert, Warriner and Kuperman (2014) ratings (1 = abstract, 5 = concrete). A token rated
nowhere counts `unrated_noun_score` (3.5) when it is a noun or proper noun and 0 otherwise. A
phrase without any token that is not a stop word scores 0. Phrases scoring at least the
threshold (3 by default) are kept. See dwsa_jax/data/concreteness/PROVENANCE.md for the word
lists.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple

# Package data lives in the folder dwsa_jax/data/, next to the module dwsa_jax/data.py, so it is
# addressed from the dwsa_jax package rather than imported as a package of its own.
_PACKAGE = "dwsa_jax"
_RATINGS_FILE = "data/concreteness/concreteness_ratings.tsv"
_STOP_WORD_FILES = (
    "data/concreteness/glasgow_stop_words.txt",
    "data/concreteness/narration_filler_words.txt",
)
_RATING_COLUMN = "Conc.M"
_NOUN_TAGS = frozenset({"NOUN", "PROPN"})


@dataclass(frozen=True)
class ConcretenessConfig:
    """Concreteness filtering of verb phrases.

    Attributes:
      threshold: phrases scoring at least this are kept (ratings run from 1 to 5); 0 keeps all.
      unrated_noun_score: score of a noun or proper noun missing from the ratings.
    """

    threshold: float = 3.0
    unrated_noun_score: float = 3.5


class ScoredToken(NamedTuple):
    """Parsed token reduced to the fields scoring reads: text, lemma and coarse part of speech."""

    text: str
    lemma: str
    pos: str


@functools.cache
def load_ratings(path: str | os.PathLike | None = None) -> Mapping[str, float]:
    """Read concreteness ratings.

    Args:
      path: a tab-separated file with a header line containing the columns `Word` and
        `Conc.M`; None reads the ratings shipped with the package.

    Returns:
      Lower-cased word -> mean rating (1 to 5). Cached per path.

    Raises:
      ValueError: the header lacks `Word` or `Conc.M`, or a rating is not a number.
    """
    if path is None:
        text = resources.files(_PACKAGE).joinpath(_RATINGS_FILE).read_text(encoding="utf-8")
        source = f"{_PACKAGE}/{_RATINGS_FILE}"
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        source = os.fspath(path)

    lines = text.splitlines()
    header = lines[0].split("\t") if lines else []
    if "Word" not in header or _RATING_COLUMN not in header:
        raise ValueError(
            f"{source}: header {header} lacks the columns 'Word' and {_RATING_COLUMN!r}; "
            "pass the Brysbaert et al. (2014) ratings file"
        )
    word_column, rating_column = header.index("Word"), header.index(_RATING_COLUMN)
    ratings = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) <= max(word_column, rating_column):
            continue
        try:
            ratings[fields[word_column].strip().lower()] = float(fields[rating_column])
        except ValueError as error:
            raise ValueError(
                f"{source}, line {number}: rating {fields[rating_column]!r} is not a number"
            ) from error
    return ratings


@functools.cache
def load_stop_words() -> frozenset[str]:
    """Return the Glasgow stop words plus the project's spoken filler words, lower-cased."""
    words = set()
    for name in _STOP_WORD_FILES:
        text = resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")
        words.update(line.strip().lower() for line in text.splitlines() if line.strip())
    return frozenset(words)


def phrase_concreteness(
    tokens: Iterable[ScoredToken],
    ratings: Mapping[str, float] | None = None,
    stop_words: frozenset[str] | None = None,
    config: ConcretenessConfig = ConcretenessConfig(),
) -> float:
    """Score one phrase.

    Args:
      tokens: the phrase's tokens with text, lemma and spaCy coarse part of speech (`pos_`).
      ratings: word -> rating; None uses the shipped ratings.
      stop_words: lower-cased words skipped when scoring; None uses `load_stop_words()`.
      config: supplies the score of unrated nouns.

    Returns:
      The highest rating among the tokens that are neither stop words nor punctuation,
      0 when there is none.
    """
    ratings = load_ratings() if ratings is None else ratings
    stop_words = load_stop_words() if stop_words is None else stop_words
    score = 0.0
    for token in tokens:
        text, lemma = token.text.lower(), token.lemma.lower()
        if token.pos == "PUNCT" or text in stop_words or lemma in stop_words:
            continue
        rating = ratings.get(text, ratings.get(lemma))
        if rating is None:
            rating = config.unrated_noun_score if token.pos in _NOUN_TAGS else 0.0
        score = max(score, rating)
    return score


def score_phrases(
    phrases: Sequence[str],
    nlp,
    ratings: Mapping[str, float] | None = None,
    config: ConcretenessConfig = ConcretenessConfig(),
) -> dict[str, float]:
    """Score distinct phrase strings, parsing each one on its own.

    Parsing the phrase text (rather than reusing the sentence's parse) gives every occurrence of
    a phrase the same score, so the scores can be stored per phrase in vocab_concrete.txt.

    Args:
      phrases: phrase strings; repeats are scored once.
      nlp: a loaded spaCy pipeline with a tagger and lemmatizer.
      ratings: word -> rating; None uses the shipped ratings.
      config: supplies the score of unrated nouns.

    Returns:
      phrase -> score, in first-occurrence order.
    """
    distinct = list(dict.fromkeys(phrases))
    stop_words = load_stop_words()
    scores = {}
    for phrase, doc in zip(distinct, nlp.pipe(distinct)):
        tokens = [ScoredToken(token.text, token.lemma_, token.pos_) for token in doc]
        scores[phrase] = phrase_concreteness(tokens, ratings, stop_words, config)
    return scores


def write_vocab(path: str | os.PathLike, scores: Mapping[str, float]) -> None:
    """Write `phrase<TAB>score` lines, sorted by phrase, as vocab_concrete.txt expects."""
    with open(path, "w", encoding="utf-8") as handle:
        for phrase in sorted(scores):
            handle.write(f"{phrase}\t{scores[phrase]:.4g}\n")
