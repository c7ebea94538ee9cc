"""Feature maps f_v, f_l and the SOPL + DWSA training loss.

The model is two affine maps followed by L2 normalisation,

    f_v(x) = normalize(W_v x + b_v),    f_l(y) = normalize(W_l y + b_l),

with W initialised to the identity and b to zero, so training starts from the pretrained
joint video-text space (both modalities share the dimension D). The loss pools the segments
of a batch of videos into one SOPL problem, their narration phrases into another, and aligns
the two ordered prototype sequences with DWSA (or soft-DTW, as an ablation).

Reference: Y. Shen, L. Wang and E. Elhamifar, "Learning to Segment Actions from Visual and
Language Instructions via Differentiable Weak Sequence Alignment", CVPR 2021, section 3.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dwsa_jax import alignment, costs, prototypes

ALIGNMENTS = ("dwsa", "softdtw")


def _identity_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    del key  # the initialisation is deterministic
    return jnp.eye(shape[0], shape[1], dtype=dtype)


class FeatureMaps(nnx.Module):
    """The visual map f_v and the linguistic map f_l, identity-initialised.

    nnx.Linear computes x @ kernel, so the kernel is W transposed; at initialisation both are
    the identity and f(x) = normalize(x).

    Attributes:
      visual: affine map applied to video segment features, (D,) -> (D,).
      text: affine map applied to narration phrase features, (D,) -> (D,).
    """

    def __init__(self, dim: int, *, param_dtype: Any = jnp.float32, rngs: nnx.Rngs | None = None):
        """Create both maps for features of dimension `dim` with parameters in `param_dtype`."""
        # The initialisers ignore the key, but nnx.Linear requires an Rngs object.
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.dim = dim
        self.visual = nnx.Linear(
            dim, dim, kernel_init=_identity_init, bias_init=nnx.initializers.zeros_init(),
            param_dtype=param_dtype, rngs=rngs,
        )
        self.text = nnx.Linear(
            dim, dim, kernel_init=_identity_init, bias_init=nnx.initializers.zeros_init(),
            param_dtype=param_dtype, rngs=rngs,
        )

    def embed_visual(self, features: jax.Array) -> jax.Array:
        """Map video segment features (..., D) to unit-norm features (..., D)."""
        return costs.l2_normalize(self.visual(features))

    def embed_text(self, features: jax.Array) -> jax.Array:
        """Map narration phrase features (..., D) to unit-norm features (..., D)."""
        return costs.l2_normalize(self.text(features))


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Hyperparameters of the SOPL + DWSA loss; defaults are the paper's.

    Attributes:
      num_background_prototypes: K_bg, linguistic prototypes beyond the K visual ones that
        absorb narration unrelated to key-steps.
      gamma: soft-min temperature of DWSA (and of soft-DTW).
      beta: SOPL's soft-assignment smoothing.
      sopl_iterations: p, the number of SOPL refinement iterations.
      time_weight: w; SOPL appends sqrt(w) * tau to every feature, tau in [0, 1].
      delta_e: cost of leaving a visual prototype unmatched (DWSA's empty-slot cost).
      row_softmax: apply a softmax over each row of the DWSA cost matrix, as the released
        PyTorch code does; off in the paper's formulation.
      alignment: "dwsa", or "softdtw" for the SOPL + soft-DTW ablation, which aligns the
        (K, K + K_bg) matrix of 1 - cos costs with soft-DTW.
    """

    num_background_prototypes: int = 10
    gamma: float = 1e-3
    beta: float = 1e-3
    sopl_iterations: int = 5
    time_weight: float = 1.0
    delta_e: float = 1.0
    row_softmax: bool = False
    alignment: str = "dwsa"

    def __post_init__(self):
        if self.alignment not in ALIGNMENTS:
            raise ValueError(
                f"alignment={self.alignment!r} is not supported; use one of {ALIGNMENTS}"
            )
        if self.num_background_prototypes < 0:
            raise ValueError(
                f"num_background_prototypes={self.num_background_prototypes} must be >= 0"
            )
        if self.sopl_iterations < 1:
            raise ValueError(f"sopl_iterations={self.sopl_iterations} must be >= 1")
        if self.time_weight < 0:
            raise ValueError(f"time_weight={self.time_weight} must be >= 0")


class PooledBatch(NamedTuple):
    """One padded training problem: the pooled segments and phrases of a group of videos.

    Padding rows have mask False and zero features; N and P are fixed across batches so that
    the jitted step compiles once.

    Attributes:
      visual: (N, D) video segment features.
      visual_times: (N,) normalised segment times (t + 0.5) / T of each segment's own video.
      visual_mask: (N,) bool, True for real segments.
      text: (P, D) narration phrase features.
      text_times: (P,) normalised phrase times in [0, 1].
      text_mask: (P,) bool, True for real phrases.
    """

    visual: jax.Array
    visual_times: jax.Array
    visual_mask: jax.Array
    text: jax.Array
    text_times: jax.Array
    text_mask: jax.Array


def zero_batches(
    num_batches: int, max_segments: int, max_phrases: int, dim: int, dtype: Any
) -> PooledBatch:
    """Allocate a PooledBatch of zero NumPy arrays with a leading (num_batches,) axis.

    Every mask starts False, so the caller fills in the real rows and sets their mask.
    """
    return PooledBatch(
        visual=np.zeros((num_batches, max_segments, dim), dtype),
        visual_times=np.zeros((num_batches, max_segments), dtype),
        visual_mask=np.zeros((num_batches, max_segments), bool),
        text=np.zeros((num_batches, max_phrases, dim), dtype),
        text_times=np.zeros((num_batches, max_phrases), dtype),
        text_mask=np.zeros((num_batches, max_phrases), bool),
    )


class LossOutput(NamedTuple):
    """Auxiliary outputs of `alignment_loss`.

    Attributes:
      visual_sopl_error: (sopl_iterations,) SOPL mean squared error per iteration, video side.
      text_sopl_error: (sopl_iterations,) the same for the narration side.
    """

    visual_sopl_error: jax.Array
    text_sopl_error: jax.Array


def alignment_loss(
    params: Any,
    batch: PooledBatch,
    key: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    num_prototypes: int,
    config: LossConfig = LossConfig(),
) -> tuple[jax.Array, LossOutput]:
    """Compute DWSA(SOPL_v(f_v(segments)), SOPL_l(f_l(phrases))) for one pooled batch.

    A pure function of (params, batch, key), so it can be jitted, differentiated with respect
    to params, vmapped over a leading batch axis and sharded.

    Args:
      params: the model's nnx.Param state, as an nnx.State or the pure dict of
        `nnx.to_pure_dict`.
      batch: one PooledBatch, with N segments and P phrases (padding included).
      key: PRNG key; it seeds the k-means++ initialisation of both SOPL problems.
      graphdef: the model's graph definition from `nnx.split(model, nnx.Param)`.
      num_prototypes: K, the number of visual prototypes; the narration side gets
        K + config.num_background_prototypes.
      config: loss hyperparameters.

    Returns:
      (loss, LossOutput): the scalar alignment loss in the dtype of the features, and the SOPL
      errors per iteration of both modalities.
    """
    model = nnx.merge(graphdef, params)
    # Zero the padding before the maps: SOPL ignores padded rows, but a NaN there would still
    # reach the parameter gradient through the matrix product.
    visual = model.embed_visual(jnp.where(batch.visual_mask[:, None], batch.visual, 0))
    text = model.embed_text(jnp.where(batch.text_mask[:, None], batch.text, 0))

    visual_key, text_key = jax.random.split(key)
    visual_sopl = prototypes.sopl(
        visual_key, visual, batch.visual_times, num_prototypes,
        num_iterations=config.sopl_iterations, beta=config.beta,
        time_weight=config.time_weight, mask=batch.visual_mask,
    )
    text_sopl = prototypes.sopl(
        text_key, text, batch.text_times, num_prototypes + config.num_background_prototypes,
        num_iterations=config.sopl_iterations, beta=config.beta,
        time_weight=config.time_weight, mask=batch.text_mask,
    )

    if config.alignment == "dwsa":
        cost = costs.dwsa_cost_matrix(
            visual_sopl.prototypes, text_sopl.prototypes,
            delta_e=config.delta_e, row_softmax=config.row_softmax,
        )
        loss = alignment.dwsa(cost, config.gamma)
    else:
        cost = costs.cosine_cost_matrix(visual_sopl.prototypes, text_sopl.prototypes)
        loss = alignment.soft_dtw(cost, config.gamma)
    return loss, LossOutput(visual_sopl.errors, text_sopl.errors)
