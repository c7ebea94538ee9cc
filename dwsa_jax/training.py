"""Training of the feature maps: configuration, batching, the jitted step, the epoch loop and
checkpoints.

Batching follows the authors' release: the training videos (those with both segment features
and narration phrases) are taken in sorted id order, never shuffled, and cut into consecutive
groups of `batch_size` videos, the last group smaller. All segments of a group form one SOPL
problem and all its phrases another ("pooled" batching). Every batch is padded with masked rows
to the largest batch's point counts, so the train step compiles once. The "per-video" mode
instead trains on pairs of one video and its own narration (see `dwsa_jax.parallel`).

Every step runs data-parallel over all visible devices: the points of a pooled batch, or the
pairs of a per-video batch, are sharded over a 1-D device mesh (`dwsa_jax.parallel`).

Randomness: one PRNG key, `jax.random.PRNGKey(seed)`, is split once per step into the key
carried forward and the step's key. The step's key seeds the k-means++ initialisation of both
SOPL problems. The carried key is saved in every checkpoint, so a resumed run draws the same
keys as an uninterrupted one.

Optimiser: Adam with L2 weight decay added to the gradient before the Adam update
(`optax.chain(optax.add_decayed_weights(wd), optax.adam(lr))`), which is what torch's
`Adam(weight_decay=wd)` computes; it is not AdamW's decoupled decay.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dwsa_jax import data, fileio, parallel, prototypes
from dwsa_jax.model import FeatureMaps, LossConfig, PooledBatch, alignment_loss, zero_batches

logger = logging.getLogger(__name__)


def _orbax():
    """Import orbax.checkpoint on first use.

    Importing it installs a handler on the root logger (through absl), which would turn the
    CLI's later `logging.basicConfig` into a no-op. Importing it only when a checkpoint is
    read or written keeps the CLI's log format and level.
    """
    import orbax.checkpoint

    return orbax.checkpoint

BATCHING_MODES = parallel.BATCHING_MODES
TRAIN_STATE_DIR = "train_state"
MODEL_FILE = "model.json"
PARAMS_DIR = "params"


class ExistingStateError(ValueError):
    """Raised when a fresh run would write into a folder that already contains a training state."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters; defaults are those of Shen, Wang and Elhamifar (CVPR 2021).

    Attributes:
      loss: hyperparameters of the SOPL + DWSA loss.
      num_prototypes: K, visual prototypes per batch (and localization clusters); None uses the
        task's number of key-steps.
      learning_rate: Adam step size.
      weight_decay: L2 coefficient added to the gradient (torch Adam's weight_decay).
      num_epochs: passes over the training videos.
      eval_epoch: number of completed epochs whose parameters are kept for localization and
        evaluation; None means the last epoch. The authors' release evaluates a checkpoint it
        calls "epoch 30" that is saved before that epoch's first update, so it contains 29 epochs
        of training; eval_epoch=29 reproduces it.
      batch_size: videos per batch, consecutive in sorted id order.
      batching: "pooled": all segments of a batch form one SOPL problem, all phrases another
        (the paper's). "per-video": each video and its own narration form a pair with its own
        SOPL problems and DWSA; pairs are bucketed by length, padded and vmapped, and the
        loss is their mean (see `parallel.make_per_video_batches`).
      seed: seed of the PRNG key that drives SOPL's k-means++ initialisations.
      checkpoint_every: save the training state every this many epochs (and after the last).
    """

    loss: LossConfig = LossConfig()
    num_prototypes: int | None = None
    learning_rate: float = 5e-4
    weight_decay: float = 0.02
    num_epochs: int = 50
    eval_epoch: int | None = 30
    batch_size: int = 30
    batching: str = "pooled"
    seed: int = 0
    checkpoint_every: int = 1

    def __post_init__(self):
        if self.batching not in BATCHING_MODES:
            raise ValueError(f"batching={self.batching!r} is not supported; use one of {BATCHING_MODES}")
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs={self.num_epochs} must be >= 1")
        if self.eval_epoch is not None and not 1 <= self.eval_epoch <= self.num_epochs:
            raise ValueError(
                f"eval_epoch={self.eval_epoch} is outside 1..num_epochs={self.num_epochs}; "
                "lower it or train for more epochs"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.num_prototypes is not None and self.num_prototypes < 1:
            raise ValueError(f"num_prototypes={self.num_prototypes} must be >= 1 or None")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be >= 1")

    @property
    def resolved_eval_epoch(self) -> int:
        """The eval epoch with None resolved to num_epochs."""
        return self.num_epochs if self.eval_epoch is None else self.eval_epoch

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Rebuild a configuration written by `to_dict`."""
        values = dict(values)
        values["loss"] = LossConfig(**values.get("loss", {}))
        return cls(**values)


def resolve_num_prototypes(config: TrainConfig, task) -> int:
    """Return K: config.num_prototypes, or the task's number of key-steps when it is None."""
    if config.num_prototypes is not None:
        return config.num_prototypes
    if not task.num_steps:
        raise ValueError(
            f"task {task.name} has no known number of key-steps; pass num_prototypes (--K)"
        )
    return int(task.num_steps)


# Batching --------------------------------------------------------------------------------


class PaddedBatches(NamedTuple):
    """All batches of one epoch, padded to common shapes and stacked.

    Attributes:
      batches: PooledBatch whose fields have a leading (num_batches,) axis.
      video_ids: per batch, the ids of its videos in order.
      num_segments: (num_batches,) real segments per batch.
      num_phrases: (num_batches,) real phrases per batch.
    """

    batches: PooledBatch
    video_ids: tuple[tuple[str, ...], ...]
    num_segments: np.ndarray
    num_phrases: np.ndarray

    @property
    def num_batches(self) -> int:
        return len(self.video_ids)

    def batch(self, index: int) -> PooledBatch:
        """Return batch `index` without the leading axis."""
        return PooledBatch(*(field[index] for field in self.batches))


def make_pooled_batches(
    task,
    batch_size: int,
    num_visual_prototypes: int,
    num_text_prototypes: int,
    *,
    dtype: Any = np.float32,
) -> PaddedBatches:
    """Group a task's training videos into padded, pooled batches.

    Args:
      task: a data.Task.
      batch_size: videos per batch; the last batch contains the remainder.
      num_visual_prototypes: K; every batch needs at least K segments.
      num_text_prototypes: K + K_bg; every batch needs at least that many phrases.
      dtype: floating dtype of the feature and time arrays.

    Returns:
      PaddedBatches whose batches are padded to the largest segment and phrase counts.

    Raises:
      ValueError: if the task has no video with narration, or a batch has fewer segments or
        phrases than prototypes (the message names the batch's videos and counts).
    """
    # Videos with features and at least one phrase, in id order (warns about the others).
    videos = list(data.videos_with_narration(task))
    groups = [videos[i:i + batch_size] for i in range(0, len(videos), batch_size)]
    for group in groups:
        data.check_batch_sizes(group, num_visual_prototypes, num_text_prototypes)
    num_segments = np.array([sum(v.num_segments for v in g) for g in groups])
    num_phrases = np.array([sum(len(v.phrases) for v in g) for g in groups])

    max_segments, max_phrases = int(num_segments.max()), int(num_phrases.max())
    dim = videos[0].features.shape[1]
    visual, visual_times, visual_mask, text, text_times, text_mask = zero_batches(
        len(groups), max_segments, max_phrases, dim, dtype
    )

    for b, group in enumerate(groups):
        seg_start = phr_start = 0
        for video in group:
            if video.features.shape[1] != dim:
                raise ValueError(
                    f"video {video.vid} has features of dimension {video.features.shape[1]} but "
                    f"video {videos[0].vid} has {dim}; extract every video with the same model"
                )
            t, p = len(video.features), len(video.phrase_features)
            visual[b, seg_start:seg_start + t] = video.features
            visual_times[b, seg_start:seg_start + t] = np.asarray(prototypes.segment_times(t))
            visual_mask[b, seg_start:seg_start + t] = True
            text[b, phr_start:phr_start + p] = video.phrase_features
            text_times[b, phr_start:phr_start + p] = video.phrase_times
            text_mask[b, phr_start:phr_start + p] = True
            seg_start += t
            phr_start += p

    batches = PooledBatch(
        visual=jnp.asarray(visual), visual_times=jnp.asarray(visual_times),
        visual_mask=jnp.asarray(visual_mask), text=jnp.asarray(text),
        text_times=jnp.asarray(text_times), text_mask=jnp.asarray(text_mask),
    )
    video_ids = tuple(tuple(v.vid for v in g) for g in groups)
    return PaddedBatches(batches, video_ids, num_segments, num_phrases)


# Optimiser and step ----------------------------------------------------------------------


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam with L2 weight decay added to the gradient, as torch's Adam(weight_decay=...)."""
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.adam(config.learning_rate),
    )


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    *,
    num_prototypes: int,
    loss_config: LossConfig,
):
    """Build the jitted step (params, opt_state, batch, key) -> (params, opt_state, loss).

    Args:
      graphdef: the model's graph definition from `nnx.split(model, nnx.Param)`.
      optimizer: an optax transformation, e.g. `make_optimizer(config)`.
      num_prototypes: K, static.
      loss_config: loss hyperparameters, static.

    Returns:
      A jitted function; params are the pure dict of the model's nnx.Param state.
    """

    def loss_fn(params, batch, key):
        loss, _ = alignment_loss(
            params, batch, key, graphdef=graphdef, num_prototypes=num_prototypes,
            config=loss_config,
        )
        return loss

    @jax.jit
    def train_step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    return train_step


@functools.lru_cache(maxsize=16)
def _cached_train_step(
    graphdef, learning_rate, weight_decay, num_prototypes, loss_config, batching, mesh
):
    # One jitted function per setup, so repeated `train` calls reuse the compiled step.
    config = TrainConfig(learning_rate=learning_rate, weight_decay=weight_decay)
    return parallel.make_sharded_train_step(
        graphdef, make_optimizer(config), num_prototypes=num_prototypes,
        loss_config=loss_config, batching=batching, mesh=mesh,
    )


def _epoch_batches(task, config, num_prototypes, num_text_prototypes, mesh):
    """Build one epoch's batches, sharded over `mesh`; return (batches, video ids per batch)."""
    if config.batching == "pooled":
        padded = make_pooled_batches(task, config.batch_size, num_prototypes, num_text_prototypes)
        batches = [
            parallel.shard_batch(parallel.pad_points(padded.batch(b), mesh.size), mesh)
            for b in range(padded.num_batches)
        ]
        return batches, padded.video_ids
    per_video = parallel.make_per_video_batches(
        task, config.batch_size, num_prototypes, num_text_prototypes, num_devices=mesh.size
    )
    batches = [parallel.shard_batch(batch, mesh) for batch in per_video.batches]
    return batches, per_video.video_ids


def _to_host_default_device(params):
    # Gathers replicated parameters into single-device arrays, so the returned models run
    # anywhere without the training mesh.
    return jax.tree.map(jnp.asarray, jax.device_get(params))


def split_model(model: FeatureMaps) -> tuple[nnx.GraphDef, dict]:
    """Return the model's graph definition and its parameters as a pure dict of arrays."""
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(state)


# Training loop -----------------------------------------------------------------------------


class TrainResult(NamedTuple):
    """Result of `train`.

    Attributes:
      model: FeatureMaps after config.num_epochs epochs.
      eval_model: FeatureMaps after config.eval_epoch epochs, the one to localize with.
      loss_history: (num_epochs,) mean training loss over the batches of each epoch.
      num_prototypes: K used for the visual prototypes.
    """

    model: FeatureMaps
    eval_model: FeatureMaps
    loss_history: np.ndarray
    num_prototypes: int


def train(
    task,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = False,
    devices: Sequence[jax.Device] | None = None,
) -> TrainResult:
    """Train f_v and f_l on one task with the SOPL + DWSA loss, data-parallel over devices.

    Args:
      task: a data.Task with segment features and phrase features.
      config: training hyperparameters.
      checkpoint_dir: where to keep checkpoints. The training state (params, optimiser state,
        PRNG key, completed epochs, loss history) goes to checkpoint_dir/train_state every
        config.checkpoint_every epochs. The parameters at eval_epoch are exported to
        checkpoint_dir/model and those of the last epoch to checkpoint_dir/model_last (see
        `save_model`). None keeps nothing on disk.
      resume: continue from the latest training state in checkpoint_dir; without a saved
        state training starts from the beginning.
      progress: show a tqdm progress bar over epochs.
      devices: devices to train on (a 1-D mesh, see `parallel.data_mesh`); None uses every
        visible device, of every process in a multi-host run. The result equals that of one
        device up to the order of floating-point sums.

    Returns:
      TrainResult.

    Raises:
      ValueError: on batches with too few points, or when resuming with a different
        configuration.
      FloatingPointError: when a batch's loss is not finite.
    """
    num_prototypes = resolve_num_prototypes(config, task)
    num_text_prototypes = num_prototypes + config.loss.num_background_prototypes
    mesh = parallel.data_mesh(devices)
    batches, batch_video_ids = _epoch_batches(
        task, config, num_prototypes, num_text_prototypes, mesh
    )
    dim = int(task.feature_dim)
    logger.info(
        "training on task %s: %d videos in %d %s batches, K=%d, %d epochs, on %d %s device(s)",
        task.name, sum(len(ids) for ids in batch_video_ids), len(batches), config.batching,
        num_prototypes, config.num_epochs, mesh.size, mesh.devices.flat[0].platform,
    )

    model = FeatureMaps(dim)
    graphdef, params = split_model(model)
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    key = jax.random.PRNGKey(config.seed)
    start_epoch = 0
    loss_history: list[float] = []
    eval_params = None

    manager = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir).absolute()
        manager = _checkpoint_manager(checkpoint_dir)
        if resume and manager.latest_step() is not None:
            state, meta = _restore_train_state(manager, params, opt_state, key)
            _check_resumable(meta, config, task.name, num_prototypes, dim, checkpoint_dir)
            params, opt_state, key = state["params"], state["opt_state"], state["key"]
            start_epoch = int(meta["epoch"])
            loss_history = [float(x) for x in meta["loss_history"]]
            logger.info("resuming from %s after epoch %d", checkpoint_dir, start_epoch)
            if start_epoch >= config.resolved_eval_epoch:
                eval_params = load_model(checkpoint_dir / "model").params
        elif resume:
            logger.info("no training state in %s; starting from epoch 0", checkpoint_dir)
        elif manager.latest_step() is not None:
            manager.close()
            raise ExistingStateError(
                f"{checkpoint_dir / TRAIN_STATE_DIR} already contains a training state after epoch "
                f"{manager.latest_step()}; resume it (--resume) or use a new output directory"
            )

    train_step = _cached_train_step(
        graphdef, config.learning_rate, config.weight_decay, num_prototypes, config.loss,
        config.batching, mesh,
    )
    params, opt_state, key = parallel.replicate((params, opt_state, key), mesh)

    epochs = range(start_epoch, config.num_epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_epochs, initial=start_epoch, desc=f"train {task.name}", unit="epoch")
    try:
        for epoch in epochs:
            batch_losses = []
            for batch in batches:
                key, step_key = jax.random.split(key)
                params, opt_state, loss = train_step(params, opt_state, batch, step_key)
                batch_losses.append(loss)
            batch_losses = np.asarray(jax.device_get(batch_losses), dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(batch_losses))
            if bad.size:
                ids = ", ".join(batch_video_ids[bad[0]])
                raise FloatingPointError(
                    f"training loss is {batch_losses[bad[0]]} in epoch {epoch + 1}, batch "
                    f"{bad[0]} (videos {ids}); check these videos' features for NaN or inf, "
                    "or raise gamma and beta"
                )
            loss_history.append(float(batch_losses.mean()))
            completed = epoch + 1
            logger.debug("epoch %d: loss %.6f", completed, loss_history[-1])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_history[-1]:.4f}")

            if completed == config.resolved_eval_epoch:
                eval_params = params
                if checkpoint_dir is not None:
                    save_model(checkpoint_dir / "model", params, _model_metadata(
                        config, task.name, num_prototypes, dim, completed))
            if manager is not None and (
                completed % config.checkpoint_every == 0 or completed == config.num_epochs
            ):
                _save_train_state(manager, completed, params, opt_state, key, {
                    "epoch": completed,
                    "loss_history": loss_history,
                    "config": config.to_dict(),
                    "task": task.name,
                    "num_prototypes": num_prototypes,
                    "dim": dim,
                })
    finally:
        if bar is not None:
            bar.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()

    if checkpoint_dir is not None:
        save_model(checkpoint_dir / "model_last", params, _model_metadata(
            config, task.name, num_prototypes, dim, config.num_epochs))

    return TrainResult(
        model=nnx.merge(graphdef, _to_host_default_device(params)),
        eval_model=nnx.merge(graphdef, _to_host_default_device(eval_params)),
        loss_history=np.asarray(loss_history),
        num_prototypes=num_prototypes,
    )


# Checkpoints -------------------------------------------------------------------------------


def _checkpoint_manager(checkpoint_dir: Path):
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(checkpoint_dir / TRAIN_STATE_DIR, options=options)


def _save_train_state(manager, step, params, opt_state, key, meta):
    ocp = _orbax()
    state = {"params": params, "opt_state": opt_state, "key": key}
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def _restore_train_state(manager, params, opt_state, key):
    ocp = _orbax()
    target = {"params": params, "opt_state": opt_state, "key": key}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta


# Fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = {"num_epochs", "eval_epoch", "checkpoint_every"}


def _check_resumable(meta, config, task_name, num_prototypes, dim, checkpoint_dir):
    saved = dict(meta["config"])
    current = config.to_dict()
    changed = sorted(
        name for name in current
        if name not in _RESUMABLE_CHANGES and saved.get(name) != current[name]
    )
    if changed or meta["task"] != task_name or meta["dim"] != dim or meta["num_prototypes"] != num_prototypes:
        details = ", ".join(f"{n}: saved {saved.get(n)!r}, now {current[n]!r}" for n in changed)
        raise ValueError(
            f"the training state in {checkpoint_dir} was saved for task {meta['task']!r} "
            f"(K={meta['num_prototypes']}, D={meta['dim']}) with a different setup "
            f"[{details}]; now task {task_name!r}, K={num_prototypes}, D={dim}. "
            "Resume with the saved settings or use a new output directory"
        )
    if meta["epoch"] > config.num_epochs:
        raise ValueError(
            f"the training state in {checkpoint_dir} already contains {meta['epoch']} epochs, more "
            f"than num_epochs={config.num_epochs}; raise num_epochs or use a new directory"
        )


def _model_metadata(config, task_name, num_prototypes, dim, epoch):
    return {
        "task": task_name,
        "dim": dim,
        "num_prototypes": num_prototypes,
        "epoch": epoch,
        "config": config.to_dict(),
    }


class LoadedModel(NamedTuple):
    """A model read by `load_model`.

    Attributes:
      model: FeatureMaps with the saved parameters.
      params: the same parameters as a pure dict.
      metadata: the JSON metadata written next to them (task, dim, num_prototypes, epoch,
        config).
    """

    model: FeatureMaps
    params: dict
    metadata: dict


def save_model(path: str | os.PathLike, params: dict, metadata: dict) -> None:
    """Export model parameters and their metadata to a directory, replacing what is there.

    Writes path/params (an orbax checkpoint of the pure parameter dict) and path/model.json.
    Both writes are atomic: orbax finalises into place, the JSON goes through a temporary file
    and `os.replace`.

    Args:
      path: output directory.
      params: pure dict of the model's nnx.Param state.
      metadata: JSON-serialisable dict; must contain "dim".
    """
    ocp = _orbax()
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / PARAMS_DIR, params, force=True)
        checkpointer.wait_until_finished()
    write_json_atomic(path / MODEL_FILE, metadata)


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Read a model exported by `save_model` (e.g. OUT/model of `dwsa-jax train`).

    Raises:
      FileNotFoundError: when path contains no exported model.
    """
    path = Path(path).absolute()
    if not (path / MODEL_FILE).is_file() or not (path / PARAMS_DIR).is_dir():
        raise FileNotFoundError(
            f"{path} contains no exported model ({MODEL_FILE} and {PARAMS_DIR}/ are expected); "
            "pass the model directory written by `dwsa-jax train`, e.g. OUT/model"
        )
    ocp = _orbax()
    metadata = json.loads((path / MODEL_FILE).read_text())
    model = FeatureMaps(int(metadata["dim"]))
    graphdef, target = split_model(model)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(path / PARAMS_DIR, abstract)
    return LoadedModel(nnx.merge(graphdef, params), params, metadata)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as indented JSON through a temporary file and `os.replace`."""
    fileio.write_json_atomic(path, value)
