"""Training for experiments: batches padded to shared shapes, snapshots, and a model cache.

`training.train` pads each task's batches to that task's largest batch, so every task (and
every padded shape) compiles its own train step, which costs 10 s or more on a CPU while the
steps themselves take milliseconds. `fit` runs the same epoch loop, with the same batches, PRNG key
splits, optimiser and step function from `dwsa_jax.training`. Its batches are padded with
masked rows to shapes shared by all tasks of an experiment, so the step compiles once per loss
configuration. It keeps no orbax training state, and it can return the parameters after
chosen epochs.

NOTE: padding changes the array the k-means++ initialisation draws from, so `fit` and
`training.train` with the same seed can pick different initial prototypes; the runs are
statistically equivalent, not identical. `fit` runs pooled batching on one device only,
without the multi-device mesh of `training.train`.

Trained parameters are cached as .npz files (flattened parameter dict and loss history),
written through a temporary file and `os.replace`, so an interrupted experiment never leaves
a truncated model behind.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dwsa_jax import fileio, training
from dwsa_jax.model import FeatureMaps, LossConfig, PooledBatch
from dwsa_jax.training import TrainConfig

logger = logging.getLogger(__name__)

_SEPARATOR = "/"
_LOSS_HISTORY = "__loss_history__"


class FitResult(NamedTuple):
    """Result of `fit`.

    Attributes:
      params: pure parameter dict after config.resolved_eval_epoch epochs.
      loss_history: (num_epochs,) mean training loss per epoch.
      snapshots: completed epoch -> pure parameter dict, for the requested epochs; epoch 0 is
        the identity initialisation.
    """

    params: dict
    loss_history: np.ndarray
    snapshots: dict[int, dict]


def batch_shape(task, config: TrainConfig) -> tuple[int, int]:
    """Return (segments, phrases) of the task's largest pooled batch under `config`."""
    k = training.resolve_num_prototypes(config, task)
    padded = training.make_pooled_batches(
        task, config.batch_size, k, k + config.loss.num_background_prototypes
    )
    return int(padded.num_segments.max()), int(padded.num_phrases.max())


def _pad_rows(array: jax.Array, rows: int) -> jax.Array:
    """Append zero rows along axis 1 (axis 0 indexes batches) up to `rows`."""
    missing = rows - array.shape[1]
    if missing < 0:
        raise ValueError(f"cannot pad {array.shape[1]} rows down to {rows}; raise the padding")
    widths = [(0, 0), (0, missing)] + [(0, 0)] * (array.ndim - 2)
    return jnp.pad(array, widths)


def pad_batches(batches: PooledBatch, num_segments: int, num_phrases: int) -> PooledBatch:
    """Pad stacked pooled batches with masked rows to num_segments and num_phrases rows."""
    return PooledBatch(
        visual=_pad_rows(batches.visual, num_segments),
        visual_times=_pad_rows(batches.visual_times, num_segments),
        visual_mask=_pad_rows(batches.visual_mask, num_segments),
        text=_pad_rows(batches.text, num_phrases),
        text_times=_pad_rows(batches.text_times, num_phrases),
        text_mask=_pad_rows(batches.text_mask, num_phrases),
    )


@functools.lru_cache(maxsize=64)
def _train_step(graphdef, learning_rate: float, weight_decay: float, num_prototypes: int,
                loss_config: LossConfig):
    config = TrainConfig(learning_rate=learning_rate, weight_decay=weight_decay)
    return training.make_train_step(
        graphdef, training.make_optimizer(config), num_prototypes=num_prototypes,
        loss_config=loss_config,
    )


def fit(
    task,
    config: TrainConfig,
    *,
    pad_to: tuple[int, int] | None = None,
    snapshot_epochs: Iterable[int] = (),
) -> FitResult:
    """Train f_v and f_l on one task as `training.train` does, on padded batches.

    Args:
      task: a data.Task with segment and phrase features.
      config: training hyperparameters (pooled batching).
      pad_to: (segments, phrases) rows every batch is padded to; None pads to the task's
        largest batch, as `training.train` does.
      snapshot_epochs: completed epochs (0 to num_epochs) whose parameters to return.

    Returns:
      FitResult.

    Raises:
      ValueError: on batches with too few points, pad_to below the largest batch, or a
        batching mode other than "pooled".
      FloatingPointError: when a batch's loss is not finite.
    """
    if config.batching != "pooled":
        raise ValueError(f"fit supports pooled batching only, got batching={config.batching!r}; "
                         "use training.train for other batching modes")
    num_prototypes = training.resolve_num_prototypes(config, task)
    padded = training.make_pooled_batches(
        task, config.batch_size, num_prototypes,
        num_prototypes + config.loss.num_background_prototypes,
    )
    batches = padded.batches
    if pad_to is not None:
        batches = pad_batches(batches, *pad_to)

    graphdef, params = training.split_model(FeatureMaps(task.feature_dim))
    optimizer = training.make_optimizer(config)
    opt_state = optimizer.init(params)
    train_step = _train_step(
        graphdef, config.learning_rate, config.weight_decay, num_prototypes, config.loss
    )
    key = jax.random.PRNGKey(config.seed)
    requested = set(snapshot_epochs)
    snapshots = {0: params} if 0 in requested else {}
    eval_params = params
    loss_history = []
    for epoch in range(1, config.num_epochs + 1):
        losses = []
        for b in range(padded.num_batches):
            key, step_key = jax.random.split(key)
            batch = PooledBatch(*(field[b] for field in batches))
            params, opt_state, loss = train_step(params, opt_state, batch, step_key)
            losses.append(loss)
        losses = np.asarray(jax.device_get(losses), dtype=np.float64)
        if not np.all(np.isfinite(losses)):
            bad = int(np.flatnonzero(~np.isfinite(losses))[0])
            raise FloatingPointError(
                f"training loss is {losses[bad]} in epoch {epoch}, batch {bad} of task "
                f"{task.name} (videos {padded.video_ids[bad][0]} to {padded.video_ids[bad][-1]}); "
                "check their features"
            )
        loss_history.append(float(losses.mean()))
        if epoch == config.resolved_eval_epoch:
            eval_params = params
        if epoch in requested:
            snapshots[epoch] = params
    return FitResult(eval_params, np.asarray(loss_history), snapshots)


def model_from_params(params: dict, dim: int) -> FeatureMaps:
    """Build a FeatureMaps of dimension `dim` holding `params` (a pure parameter dict)."""
    graphdef, _ = training.split_model(FeatureMaps(dim))
    state = nnx.State(jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path + _SEPARATOR))
        else:
            flat[path] = np.asarray(value)
    return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(_SEPARATOR)
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def save_fit(path: str | os.PathLike, params: dict, loss_history: np.ndarray) -> None:
    """Write parameters and loss history to an .npz file through a temporary file."""
    arrays = _flatten(params)
    arrays[_LOSS_HISTORY] = np.asarray(loss_history)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fileio.write_bytes_atomic(path, buffer.getvalue())


def load_fit(path: str | os.PathLike) -> tuple[dict, np.ndarray]:
    """Read (params, loss_history) written by `save_fit`."""
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    loss_history = arrays.pop(_LOSS_HISTORY)
    return _unflatten(arrays), loss_history
