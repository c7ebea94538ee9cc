"""`dwsa-jax narrations`: subtitle files -> verb phrases, concreteness scores and embeddings."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from dwsa_jax.narration.embedding import load_embedder
from dwsa_jax.narration.phrases import DEFAULT_SPACY_MODEL, load_spacy
from dwsa_jax.narration.pipeline import (
    MODES,
    NarrationConfig,
    narrate_file,
    write_narration,
    write_vocabulary,
)
from dwsa_jax.narration.subtitles import SUBTITLE_SUFFIXES, SubtitleError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options on its subparser."""
    defaults = NarrationConfig()
    parser.add_argument(
        "--subtitles", required=True, type=Path, metavar="DIR",
        help="folder of .srt and .vtt caption files, one per video, named <vid>.srt or <vid>.vtt",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR",
        help="task folder to write verb_phrases/, vocab_concrete.txt and text_embd/ into",
    )
    parser.add_argument(
        "--mode", choices=MODES, default=defaults.mode,
        help="verb-dobj: verb + object lemmas; verb-phrase: verb + object noun chunk + "
        "prepositional phrase; concrete: verb-phrase keeping phrases whose concreteness "
        f"reaches --threshold (default: {defaults.mode})",
    )
    parser.add_argument(
        "--threshold", type=float, default=defaults.threshold, metavar="T",
        help="minimum concreteness, on the ratings' 1 (abstract) to 5 (concrete) scale, of a "
        f"phrase kept in concrete mode; 0 keeps all (default: {defaults.threshold})",
    )
    parser.add_argument(
        "--timing", choices=("phrase", "sentence"), default=defaults.timing,
        help="time each phrase by its own words, or by its whole sentence as the authors' "
        f"released code does (default: {defaults.timing})",
    )
    parser.add_argument(
        "--spacy-model", default=DEFAULT_SPACY_MODEL, metavar="NAME",
        help=f"installed spaCy English pipeline (default: {DEFAULT_SPACY_MODEL})",
    )
    parser.add_argument(
        "--embedder", default=None, metavar="NAME",
        help="text encoder for text_embd/: a sentence-transformers model name, "
        "'module:callable' returning a (P, D) array for P strings, or 'hashing[:D]' (a "
        "non-semantic bag-of-words hash, for tests only); default: write no embeddings",
    )
    parser.add_argument(
        "--restore-punctuation", default=None, metavar="MODULE:CALLABLE",
        help="optional hook that takes the list of caption words and returns them punctuated, "
        "one string per word",
    )
    parser.add_argument(
        "--resolve-coreference", default=None, metavar="MODULE:CALLABLE",
        help="optional hook that takes the list of words and returns one replacement per word "
        "(e.g. 'the rice' for 'it')",
    )


def run(args: argparse.Namespace) -> int:
    """Narrate every subtitle file; return 0, 1 if some files failed, 2 on a usage error."""
    try:
        config = NarrationConfig(
            mode=args.mode, threshold=args.threshold, timing=args.timing,
            spacy_model=args.spacy_model,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    files = _subtitle_files(args.subtitles)
    if not files:
        print(
            f"error: no {' or '.join(SUBTITLE_SUFFIXES)} file in {args.subtitles}; "
            "pass the folder that holds the caption files",
            file=sys.stderr,
        )
        return 2
    try:
        nlp = load_spacy(config.spacy_model)
        embedder = None if args.embedder is None else load_embedder(args.embedder)
        hooks = {
            "restore_punctuation": _import_hook(args.restore_punctuation),
            "resolve_coreference": _import_hook(args.resolve_coreference),
        }
    except (ImportError, AttributeError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    narrations, failures = [], []
    num_extracted = num_kept = 0
    seen: dict[str, Path] = {}
    for path in tqdm(files, desc="subtitles", unit="file"):
        if path.stem in seen:
            failures.append(
                f"{path}: video id {path.stem} already read from {seen[path.stem]}; "
                "keep one caption file per video"
            )
            continue
        seen[path.stem] = path
        try:
            narration = narrate_file(path, nlp, config, **hooks)
        except SubtitleError as error:
            failures.append(str(error))
            logger.debug("skipped %s", path, exc_info=True)
            continue
        write_narration(args.out, narration, embedder)
        narrations.append(narration)
        num_extracted += len(narration.phrases)
        num_kept += len(narration.kept_phrases)

    vocab_path = write_vocabulary(args.out, narrations)
    print(
        f"wrote {len(narrations)} phrase files ({num_kept} of {num_extracted} phrases kept, "
        f"mode {config.mode}) to {args.out}; scores in {vocab_path}"
    )
    if embedder is None:
        print("no --embedder given: text_embd/ was not written, so training cannot load these "
              "phrases yet")
    if failures:
        print(f"error: {len(failures)} of {len(files)} subtitle files could not be read:",
              file=sys.stderr)
        for error in failures:
            print(f"  {error}", file=sys.stderr)
        return 1
    return 0


def _subtitle_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in SUBTITLE_SUFFIXES
    )


def _import_hook(spec: str | None):
    if spec is None:
        return None
    module_name, colon, attribute = spec.partition(":")
    if not colon or not attribute:
        raise ValueError(f"hook {spec!r} must be written 'module:callable'")
    hook = getattr(importlib.import_module(module_name), attribute)
    if not callable(hook):
        raise ValueError(f"hook {spec!r} is not callable")
    return hook
