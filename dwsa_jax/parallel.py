"""Data-parallel training over every visible device, and the per-video batching mode.

Two batching modes share one train step builder:

  "pooled"     (the paper's) all segments of a batch of videos form one SOPL problem and all
               their phrases another, aligned by one DWSA. Across devices the points are
               sharded: SOPL's numerators sum_t a_tk x~_t and denominators sum_t a_tk are sums
               over the sharded point axis, which XLA reduces across devices.
  "per-video"  every video and its own narration form a pair with its own SOPL problems and
               DWSA. Pairs are padded to a common shape, vmapped, and their losses averaged.
               Across devices the pairs are sharded.

Devices form a 1-D `jax.sharding.Mesh` with the axis "data". Parameters, optimiser state and
PRNG keys are replicated; every field of a batch is sharded along its leading axis (points
when pooled, pairs when per-video). `jax.jit` with these `NamedSharding`s inserts the
cross-device sums of SOPL and of the gradients, so the result matches a single device up to
the order of floating-point additions. SOPL's k-means++ draw, a discrete choice, runs on the
gathered points (the step is traced under `jax.set_mesh`), so it picks the points one device
picks. Multi-host runs call `initialize_distributed` first,
after which the mesh spans the devices of every process.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dwsa_jax import data, prototypes
from dwsa_jax.model import LossConfig, LossOutput, PooledBatch, alignment_loss, zero_batches

__all__ = [
    "BATCHING_MODES",
    "DATA_AXIS",
    "DISTRIBUTED_ENV_VARS",
    "PairBatch",
    "PerVideoBatches",
    "bucket_videos",
    "data_mesh",
    "initialize_distributed",
    "make_per_video_batches",
    "make_sharded_train_step",
    "pad_points",
    "pair_keys",
    "per_video_loss",
    "replicate",
    "shard_batch",
]

logger = logging.getLogger(__name__)

BATCHING_MODES = ("pooled", "per-video")
DATA_AXIS = "data"
# Environment variables that configure a multi-process run (read by `initialize_distributed`).
DISTRIBUTED_ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# Per-video buckets pad their segment and phrase counts up to a multiple of this, so that an
# epoch compiles the step for a few shapes rather than one per bucket.
LENGTH_MULTIPLE = 16


# Devices and hosts -------------------------------------------------------------------------


def initialize_distributed(*, required: bool = False) -> bool:
    """Join a multi-process JAX run when one is configured; call before any other JAX work.

    The run is configured by the environment variables JAX_COORDINATOR_ADDRESS (host:port of
    process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID (0-based). When they are not set and
    `required` is True, `jax.distributed.initialize()` is called without arguments, which
    detects the cluster on SLURM, Open MPI and Cloud TPU.

    Args:
      required: initialise even when JAX_COORDINATOR_ADDRESS is unset (`--distributed`).

    Returns:
      True when `jax.distributed.initialize` was called.

    Raises:
      ValueError: when JAX_NUM_PROCESSES or JAX_PROCESS_ID is set but not an integer, or when
        only some of the variables are set.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address is None and not required:
        return False
    kwargs: dict[str, Any] = {}
    if address is not None:
        missing = [name for name in DISTRIBUTED_ENV_VARS[1:] if name not in os.environ]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS={address!r} is set but {', '.join(missing)} is not; "
                "set all of " + ", ".join(DISTRIBUTED_ENV_VARS) + " on every process"
            )
        kwargs["coordinator_address"] = address
        kwargs["num_processes"] = _int_from_env("JAX_NUM_PROCESSES")
        kwargs["process_id"] = _int_from_env("JAX_PROCESS_ID")
    jax.distributed.initialize(**kwargs)
    logger.info(
        "joined a distributed run as process %d of %d, %d local and %d global devices",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )
    return True


def _int_from_env(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer; set it to a number") from None


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Build the 1-D mesh with axis "data" over `devices` (default: all devices, all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh received an empty device list; pass at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array of `tree` on all devices of `mesh`, as global arrays."""
    return _place(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Shard every field of a batch along its leading axis over the mesh axis "data".

    The leading axis is the point axis of a PooledBatch or the pair axis of a PairBatch; its
    length must be a multiple of the number of devices (see `pad_points` and
    `make_per_video_batches`).
    """
    return _place(batch, NamedSharding(mesh, PartitionSpec(DATA_AXIS)))


def _place(tree, sharding):
    # make_array_from_callback builds a global array from the host copy every process holds,
    # which device_put cannot do for devices of other processes.
    def place(array):
        host = np.asarray(array)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def pad_points(batch: PooledBatch, multiple: int) -> PooledBatch:
    """Pad a pooled batch with masked rows so that N and P are multiples of `multiple`.

    Padding rows have zero features and times and mask False, so SOPL ignores them and
    k-means++ draws the same points as without them.

    Args:
      batch: one PooledBatch without a leading batch axis, host or device arrays.
      multiple: the number of devices the points are sharded over.

    Returns:
      The padded PooledBatch as NumPy arrays.
    """
    if multiple < 1:
        raise ValueError(f"multiple={multiple} is invalid; pass the device count, >= 1")

    def pad(array):
        array = np.asarray(array)
        extra = -array.shape[0] % multiple
        widths = [(0, extra)] + [(0, 0)] * (array.ndim - 1)
        return np.pad(array, widths)

    return PooledBatch(*(pad(field) for field in batch))


# Per-video batching ------------------------------------------------------------------------


class PairBatch(NamedTuple):
    """A bucket of video pairs (segments and their own narration), padded to common shapes.

    Attributes:
      pairs: PooledBatch whose fields have a leading (B,) pair axis: visual (B, T, D),
        visual_times (B, T), visual_mask (B, T), text (B, P, D), text_times (B, P),
        text_mask (B, P). Each pair is one video.
      pair_mask: (B,) bool, True for real pairs. Filler pairs repeat the bucket's first
        video, so their loss is finite, and are left out of the mean.
    """

    pairs: PooledBatch
    pair_mask: jax.Array


class PerVideoBatches(NamedTuple):
    """The buckets of one epoch in per-video mode.

    Attributes:
      batches: one PairBatch per bucket (NumPy arrays), in training order.
      video_ids: per bucket, the ids of its real pairs in order.
      excluded: ids of the narrated videos left out because they have fewer segments than K
        or fewer phrases than K + K_bg.
    """

    batches: tuple[PairBatch, ...]
    video_ids: tuple[tuple[str, ...], ...]
    excluded: tuple[str, ...]


def bucket_videos(videos: Sequence[data.Video], batch_size: int) -> list[list[data.Video]]:
    """Group videos into buckets of at most `batch_size` with similar lengths.

    Videos are sorted by (segments, phrases, id) and cut into consecutive groups, so each
    bucket pads little. Every video lands in exactly one bucket; the order is deterministic.

    Args:
      videos: the videos to train on.
      batch_size: maximum videos per bucket, >= 1.

    Returns:
      Buckets in ascending length; all but the last hold exactly `batch_size` videos.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid; pass an integer >= 1")
    ordered = sorted(videos, key=lambda v: (v.num_segments, len(v.phrases), v.vid))
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


def make_per_video_batches(
    task: data.Task,
    batch_size: int,
    num_visual_prototypes: int,
    num_text_prototypes: int,
    *,
    num_devices: int = 1,
    dtype: Any = np.float32,
) -> PerVideoBatches:
    """Bucket a task's narrated videos into padded batches of video pairs.

    A video pair needs at least K segments and K + K_bg phrases, because each pair has its own
    SOPL problems. Narrated videos with fewer are left out of per-video training (pooled
    training and localization still use them); a warning names them with their counts.

    Args:
      task: a data.Task.
      batch_size: maximum pairs per bucket.
      num_visual_prototypes: K.
      num_text_prototypes: K + K_bg.
      num_devices: devices the pairs are sharded over; the pair axis B is
        min(batch_size, videos) rounded up to a multiple of it.
      dtype: floating dtype of the features and times.

    Returns:
      PerVideoBatches. Each bucket pads T and P to its own maximum, rounded up to a multiple
      of LENGTH_MULTIPLE.

    Raises:
      ValueError: when no narrated video has enough segments and phrases.
    """
    videos = data.videos_with_narration(task)
    usable, excluded = [], []
    for video in videos:
        if video.num_segments < num_visual_prototypes or len(video.phrases) < num_text_prototypes:
            excluded.append(video)
        else:
            usable.append(video)
    if excluded:
        logger.warning(
            "task %s: %d video(s) have fewer than K=%d segments or K + K_bg=%d phrases and are "
            "left out of per-video training: %s", task.name, len(excluded),
            num_visual_prototypes, num_text_prototypes,
            ", ".join(f"{v.vid} ({v.num_segments} segments, {len(v.phrases)} phrases)"
                      for v in excluded),
        )
    if not usable:
        raise ValueError(
            f"task {task.name}: no video has at least K={num_visual_prototypes} segments and "
            f"K + K_bg={num_text_prototypes} phrases, so per-video training has no pair; lower "
            "K or K_bg, lower the concreteness threshold, or use --batching pooled"
        )

    buckets = bucket_videos(usable, batch_size)
    num_pairs = _round_up(min(batch_size, len(usable)), num_devices)
    batches = tuple(_pad_bucket(bucket, num_pairs, dtype) for bucket in buckets)
    video_ids = tuple(tuple(v.vid for v in bucket) for bucket in buckets)
    return PerVideoBatches(batches, video_ids, tuple(v.vid for v in excluded))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad_bucket(bucket, num_pairs, dtype) -> PairBatch:
    dim = bucket[0].features.shape[1]
    max_segments = _round_up(max(v.num_segments for v in bucket), LENGTH_MULTIPLE)
    max_phrases = _round_up(max(len(v.phrases) for v in bucket), LENGTH_MULTIPLE)
    visual, visual_times, visual_mask, text, text_times, text_mask = zero_batches(
        num_pairs, max_segments, max_phrases, dim, dtype
    )

    # Filler pairs after the real ones repeat the first video.
    for slot in range(num_pairs):
        video = bucket[slot] if slot < len(bucket) else bucket[0]
        if video.features.shape[1] != dim:
            raise ValueError(
                f"video {video.vid} has features of dimension {video.features.shape[1]} but "
                f"video {bucket[0].vid} has {dim}; extract every video with the same model"
            )
        t, p = video.num_segments, len(video.phrases)
        visual[slot, :t] = video.features
        visual_times[slot, :t] = np.asarray(prototypes.segment_times(t))
        visual_mask[slot, :t] = True
        text[slot, :p] = video.phrase_features
        text_times[slot, :p] = video.phrase_times
        text_mask[slot, :p] = True

    pairs = PooledBatch(visual, visual_times, visual_mask, text, text_times, text_mask)
    return PairBatch(pairs, np.arange(num_pairs) < len(bucket))


def pair_keys(key: jax.Array, num_pairs: int) -> jax.Array:
    """Derive one PRNG key per pair slot: fold_in(key, slot).

    Unlike `jax.random.split(key, B)`, slot i gets the same key whatever B is, so padding the
    pair axis for more devices does not change any real pair's k-means++ draw.
    """
    return jax.vmap(lambda slot: jax.random.fold_in(key, slot))(jnp.arange(num_pairs))


def per_video_loss(
    params: Any,
    batch: PairBatch,
    key: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    num_prototypes: int,
    config: LossConfig = LossConfig(),
) -> tuple[jax.Array, LossOutput]:
    """Average the SOPL + DWSA loss of every real video pair of a bucket.

    Pair i is `alignment_loss` of its own segments and phrases with the key
    `pair_keys(key, B)[i]`; the pairs are vmapped.

    Args:
      params: the model's parameters (pure dict or nnx.State).
      batch: a PairBatch with B pairs.
      key: the step's PRNG key.
      graphdef: the model's graph definition.
      num_prototypes: K; each pair's narration gets K + config.num_background_prototypes.
      config: loss hyperparameters.

    Returns:
      (loss, LossOutput): the mean loss over real pairs, and the SOPL errors per iteration
      averaged over real pairs.
    """
    num_pairs = batch.pair_mask.shape[0]
    pair_loss = functools.partial(
        alignment_loss, graphdef=graphdef, num_prototypes=num_prototypes, config=config
    )
    losses, outputs = jax.vmap(pair_loss, in_axes=(None, 0, 0))(
        params, batch.pairs, pair_keys(key, num_pairs)
    )
    weights = batch.pair_mask.astype(losses.dtype)
    count = jnp.maximum(jnp.sum(weights), 1)
    # Filler pairs repeat a real video, so their losses are finite and the where() leaves a
    # zero, not NaN, gradient behind.
    loss = jnp.sum(jnp.where(batch.pair_mask, losses, 0)) / count
    errors = jax.tree.map(lambda e: jnp.sum(e * weights[:, None], axis=0) / count, outputs)
    return loss, errors


# Train step ---------------------------------------------------------------------------------


def make_sharded_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    *,
    num_prototypes: int,
    loss_config: LossConfig,
    batching: str,
    mesh: Mesh,
):
    """Build the jitted, data-parallel step (params, opt_state, batch, key) -> (params, opt_state, loss).

    Params, optimiser state, key and the returned loss are replicated over the mesh; the batch
    is sharded along its leading axis (`shard_batch`). On a mesh of one device this is the
    single-device step.

    Args:
      graphdef: the model's graph definition from `nnx.split(model, nnx.Param)`.
      optimizer: an optax transformation.
      num_prototypes: K, static.
      loss_config: loss hyperparameters, static.
      batching: "pooled" (batches are PooledBatch) or "per-video" (batches are PairBatch).
      mesh: the 1-D mesh from `data_mesh`.

    Returns:
      The jitted step function.
    """
    if batching not in BATCHING_MODES:
        raise ValueError(f"batching={batching!r} is not supported; use one of {BATCHING_MODES}")
    loss_of_batch = alignment_loss if batching == "pooled" else per_video_loss

    def loss_fn(params, batch, key):
        loss, _ = loss_of_batch(
            params, batch, key, graphdef=graphdef, num_prototypes=num_prototypes,
            config=loss_config,
        )
        return loss

    def train_step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    jitted = jax.jit(
        train_step,
        in_shardings=(replicated, replicated, sharded, replicated),
        out_shardings=(replicated, replicated, replicated),
    )

    @functools.wraps(train_step)
    def train_step_on_mesh(params, opt_state, batch, key):
        # Tracing under the mesh lets SOPL gather its points for the k-means++ draw.
        with jax.set_mesh(mesh):
            return jitted(params, opt_state, batch, key)

    return train_step_on_mesh
