"""Pluggable text encoders that embed verb phrases.

An embedder is any callable mapping a list of P strings to a (P, D) array. To train with a joint
video-text model, pass the text side of that model, so that phrases and video segments share one
space. `load_embedder` builds one from a name:

- a sentence-transformers model name, e.g. "all-MiniLM-L6-v2" (needs the `embed` extra);
- "module.path:attribute", an importable callable, or a class whose instances are one;
- "hashing" or "hashing:<dimension>", `HashingEmbedder`, a bag-of-words hash for tests and demos
  that carries no meaning beyond shared words.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import logging
import re
from collections.abc import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

Embedder = Callable[[Sequence[str]], np.ndarray]

_WORD = re.compile(r"[a-z0-9']+")


class HashingEmbedder:
    """Signed feature hashing of lower-cased words, L2-normalised.

    NOTE: not a semantic text encoder. Phrases without a common word are nearly orthogonal
    whatever they mean ("add rice" and "pour grain"), so it cannot stand in for a joint
    video-text model. It exists to exercise the pipeline offline and deterministically: the
    output depends only on the words and `dimension`, not on the process or machine.

    Attributes:
      dimension: length D of every vector.
    """

    def __init__(self, dimension: int = 512):
        if dimension < 1:
            raise ValueError(f"hashing dimension {dimension} must be >= 1")
        self.dimension = int(dimension)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Args:
          texts: P strings.

        Returns:
          (P, dimension) float32, unit rows; a text without any word gives a zero row.
        """
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                # The lowest bit picks the sign so that colliding words partly cancel.
                sign = 1.0 if value & 1 else -1.0
                vectors[row, (value >> 1) % self.dimension] += sign
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded once, returning L2-normalised float32 rows."""

    def __init__(self, model_name: str, device: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError(
                f"embedder {model_name!r} needs sentence-transformers; install the embed extra: "
                "pip install 'dwsa-jax[embed]', or pass 'module:callable' for your own encoder"
            ) from error
        self.model_name = model_name
        self._model = SentenceTransformer(model_name, device=device)
        self.dimension = int(self._model.get_sentence_embedding_dimension())

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def load_embedder(spec: str) -> Embedder:
    """Build an embedder from its name.

    Args:
      spec: "hashing[:D]", "package.module:attribute" (an embedding callable, or a class whose
        instances, built without arguments, are one), or a sentence-transformers model name.

    Returns:
      A callable mapping P strings to a (P, D) array.

    Raises:
      ImportError: the module or sentence-transformers is missing.
      AttributeError: the module lacks the attribute.
      ValueError: a malformed "hashing:D" or "module:attribute", or an attribute that is not
        callable.
    """
    if spec == "hashing" or spec.startswith("hashing:"):
        _, _, size = spec.partition(":")
        if size and not size.isdigit():
            raise ValueError(f"embedder {spec!r}: the hashing dimension must be an integer")
        logger.warning("embedding phrases with the hashing embedder, which is not semantic")
        return HashingEmbedder(int(size)) if size else HashingEmbedder()

    module_name, colon, attribute = spec.partition(":")
    # Model names on the Hugging Face hub contain no ':', but a local model folder might.
    if colon and not os.path.exists(spec):
        if not module_name or not attribute:
            raise ValueError(f"embedder {spec!r} must be written 'module:callable'")
        target = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, type):
            target = target()
        if not callable(target):
            raise ValueError(f"embedder {spec!r} is not callable; point it at a function or class")
        return target

    return SentenceTransformerEmbedder(spec)


def embed_phrases(embedder: Embedder, texts: Sequence[str], dimension: int | None = None) -> np.ndarray:
    """Embed phrases and check the result.

    Args:
      embedder: callable mapping P strings to a (P, D) array.
      texts: the P phrases, in the order of their phrase file.
      dimension: D, used to shape the array for P = 0 when the embedder returns a flat empty
        array; None reads `embedder.dimension` when it exists.

    Returns:
      (P, D) float32.

    Raises:
      ValueError: the embedder returned another number of rows, a non-2-D array, or non-finite
        values.
    """
    vectors = np.asarray(embedder(list(texts)), dtype=np.float32)
    if not texts and vectors.ndim != 2:
        dimension = dimension if dimension is not None else getattr(embedder, "dimension", 0)
        vectors = np.zeros((0, int(dimension)), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(
            f"the embedder returned an array of shape {vectors.shape} for {len(texts)} phrases; "
            "it must return one row per phrase, shape (P, D)"
        )
    if not np.all(np.isfinite(vectors)):
        raise ValueError("the embedder returned NaN or infinite values; check the text encoder")
    return vectors
