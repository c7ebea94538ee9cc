"""Caption text joined into one timed transcript, with optional punctuation and coreference hooks.

Every caption's duration is shared equally among its characters, so each character of the
transcript has a start and an end time. Words, tokens, phrases and sentences are timed by their
first and last characters. The hooks operate on words and must return one replacement per word,
so that every replacement keeps the time of the word it replaces.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import NamedTuple

from dwsa_jax.narration.subtitles import Caption

# A hook receives the transcript's words in order and returns as many strings. A punctuation
# restorer returns "rice." for "rice"; a coreference resolver returns "the rice" for "it".
WordHook = Callable[[list[str]], Sequence[str]]


class Word(NamedTuple):
    """A whitespace-separated word of a caption.

    Attributes:
      text: the word.
      start: time in seconds at which its first character starts.
      end: time in seconds at which its last character ends.
    """

    text: str
    start: float
    end: float


class Transcript(NamedTuple):
    """Timed text of one video.

    Attributes:
      text: the words joined by single spaces (after the hooks, if any ran).
      words: one `Word` per entry of `offsets`, holding the hooked text and the original time.
      offsets: character offset of each word in `text`, increasing.
    """

    text: str
    words: tuple[Word, ...]
    offsets: tuple[int, ...]


def caption_words(captions: Sequence[Caption]) -> list[Word]:
    """Split captions into words timed by linear interpolation inside each caption.

    A caption of n characters (single spaces included) lasting d seconds gives character k the
    interval [start + k d / n, start + (k + 1) d / n].

    Args:
      captions: captions in the order their words are spoken.

    Returns:
      The words of all captions in order.
    """
    words = []
    for caption in captions:
        text = caption.text
        if not text:
            continue
        step = (caption.end - caption.start) / len(text)
        position = 0
        for token in text.split(" "):
            if token:
                start = caption.start + position * step
                end = caption.start + (position + len(token)) * step
                words.append(Word(token, start, end))
            position += len(token) + 1
    return words


def build_transcript(
    words: Sequence[Word],
    *,
    restore_punctuation: WordHook | None = None,
    resolve_coreference: WordHook | None = None,
) -> Transcript:
    """Join words into a transcript, running the optional hooks first.

    Args:
      words: timed words, as from `caption_words`.
      restore_punctuation: optional hook that adds sentence punctuation and casing to words.
      resolve_coreference: optional hook that replaces pronouns by what they refer to; it runs
        after punctuation restoration.

    Returns:
      The transcript. Words that a hook turns into an empty string are dropped.

    Raises:
      ValueError: a hook returned a different number of words than it received.
    """
    texts = [word.text for word in words]
    for name, hook in (
        ("restore_punctuation", restore_punctuation),
        ("resolve_coreference", resolve_coreference),
    ):
        if hook is None:
            continue
        result = [str(text) for text in hook(list(texts))]
        if len(result) != len(texts):
            raise ValueError(
                f"the {name} hook returned {len(result)} words for {len(texts)}; it must "
                "return exactly one string (possibly empty or several words) per input word"
            )
        texts = result

    parts, kept, offsets = [], [], []
    length = 0
    for word, text in zip(words, texts):
        text = " ".join(text.split())
        if not text:
            continue
        if parts:
            length += 1
        offsets.append(length)
        parts.append(text)
        kept.append(word._replace(text=text))
        length += len(text)
    return Transcript(" ".join(parts), tuple(kept), tuple(offsets))


def transcript_from_captions(
    captions: Sequence[Caption],
    *,
    restore_punctuation: WordHook | None = None,
    resolve_coreference: WordHook | None = None,
) -> Transcript:
    """Build the timed transcript of a caption file (`caption_words` then `build_transcript`)."""
    return build_transcript(
        caption_words(captions),
        restore_punctuation=restore_punctuation,
        resolve_coreference=resolve_coreference,
    )


def span_times(transcript: Transcript, start_char: int, end_char: int) -> tuple[float, float]:
    """Time a contiguous character span of the transcript.

    A word's duration is shared equally among its characters (after the hooks, so a replaced
    word spreads its original time over its new text). Overlapping captions can time a later
    word before an earlier one, so the span runs from the earliest start to the latest end of
    the characters it covers.

    Args:
      transcript: the transcript the offsets refer to.
      start_char: offset of the span's first character.
      end_char: offset one past the span's last character (> start_char).

    Returns:
      (start, end) in seconds.
    """
    first, last = _word_index(transcript, start_char), _word_index(transcript, end_char - 1)
    start = _character_time(transcript, first, start_char, edge=0)
    end = _character_time(transcript, last, end_char - 1, edge=1)
    # Words after the first start, and words before the last end, inside the span.
    inner = transcript.words[first + 1 : last + 1]
    start = min([start] + [word.start for word in inner])
    end = max([end] + [word.end for word in transcript.words[first:last]])
    return start, end


def _word_index(transcript: Transcript, char: int) -> int:
    # Offsets in the space between two words fall back to the word on their left.
    return max(bisect.bisect_right(transcript.offsets, char) - 1, 0)


def _character_time(transcript: Transcript, index: int, char: int, edge: int) -> float:
    word = transcript.words[index]
    position = min(max(char - transcript.offsets[index], 0), len(word.text) - 1) + edge
    return word.start + (word.end - word.start) * position / len(word.text)
