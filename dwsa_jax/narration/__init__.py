"""Narration processing: subtitles -> timed verb phrases -> concreteness -> text embeddings.

Each step has its own module:

- `subtitles`: SRT and WebVTT reading.
- `sentences`: the timed transcript, with optional punctuation and coreference hooks.
- `phrases`: verb phrases from spaCy's dependency parse.
- `concreteness`: phrase scores and filtering.
- `embedding`: pluggable text encoders.
- `pipeline`: one video end to end, and the files of the released layout.
- `cli`: the `dwsa-jax narrations` command.

spaCy is imported only when a pipeline is loaded, so reading subtitles needs no optional extra.
"""

from dwsa_jax.narration.concreteness import (
    ConcretenessConfig,
    ScoredToken,
    load_ratings,
    load_stop_words,
    phrase_concreteness,
    score_phrases,
)
from dwsa_jax.narration.embedding import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    embed_phrases,
    load_embedder,
)
from dwsa_jax.narration.phrases import VerbPhrase, extract_verb_phrases, load_spacy
from dwsa_jax.narration.pipeline import (
    MODES,
    Narration,
    NarrationConfig,
    narrate_captions,
    narrate_file,
    write_narration,
    write_vocabulary,
)
from dwsa_jax.narration.sentences import (
    Transcript,
    Word,
    build_transcript,
    caption_words,
    span_times,
    transcript_from_captions,
)
from dwsa_jax.narration.subtitles import (
    Caption,
    SubtitleError,
    parse_srt,
    parse_vtt,
    read_subtitles,
)

__all__ = [
    "MODES",
    "Caption",
    "ConcretenessConfig",
    "Embedder",
    "HashingEmbedder",
    "Narration",
    "NarrationConfig",
    "ScoredToken",
    "SentenceTransformerEmbedder",
    "SubtitleError",
    "Transcript",
    "VerbPhrase",
    "Word",
    "build_transcript",
    "caption_words",
    "embed_phrases",
    "extract_verb_phrases",
    "load_embedder",
    "load_ratings",
    "load_spacy",
    "load_stop_words",
    "narrate_captions",
    "narrate_file",
    "parse_srt",
    "parse_vtt",
    "read_subtitles",
    "score_phrases",
    "span_times",
    "transcript_from_captions",
    "write_narration",
    "write_vocabulary",
]
