"""Tests of batching, the optimiser, the train step, the epoch loop and checkpoints."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dwsa_jax import data, simulate, training
from dwsa_jax.model import FeatureMaps, LossConfig, alignment_loss

K = 3
K_BG = 2


@pytest.fixture(scope="module")
def task():
    config = simulate.SimulationConfig(
        num_videos=6, num_steps=K, feature_dim=12, min_segments=12, max_segments=18,
    )
    return simulate.simulate_task(config, seed=0)


@pytest.fixture(scope="module")
def config():
    # Two videos per batch -> 3 batches per epoch; K_bg lowered to fit the short videos.
    return training.TrainConfig(
        loss=LossConfig(num_background_prototypes=K_BG), batch_size=2, num_epochs=3,
        eval_epoch=2, learning_rate=1e-2,
    )


def _drop_narration(video):
    return dataclasses.replace(
        video, phrases=(), phrase_features=None, phrase_times=np.zeros(0, np.float32)
    )


def test_batches_pool_consecutive_videos(task):
    padded = training.make_pooled_batches(task, 4, K, K + K_BG)
    lengths = {v.vid: v.num_segments for v in task.videos}
    ids = sorted(lengths)

    assert padded.video_ids == (tuple(ids[:4]), tuple(ids[4:]))
    assert padded.num_segments.tolist() == [
        sum(lengths[v] for v in ids[:4]), sum(lengths[v] for v in ids[4:])
    ]
    assert padded.batches.visual.shape[1] == max(padded.num_segments)
    assert padded.batches.visual.dtype == jnp.float32
    assert np.asarray(padded.batches.visual_mask).sum(axis=1).tolist() == padded.num_segments.tolist()
    assert np.asarray(padded.batches.text_mask).sum(axis=1).tolist() == padded.num_phrases.tolist()


def test_batch_rows_hold_each_video_in_order(task):
    padded = training.make_pooled_batches(task, 4, K, K + K_BG)
    first, second = sorted(task.videos, key=lambda v: v.vid)[:2]
    visual = np.asarray(padded.batches.visual[0])
    times = np.asarray(padded.batches.visual_times[0])
    t1, t2 = first.num_segments, second.num_segments

    np.testing.assert_array_equal(visual[:t1], first.features)
    np.testing.assert_array_equal(visual[t1:t1 + t2], second.features)
    np.testing.assert_allclose(times[:t1], (np.arange(t1) + 0.5) / t1, rtol=1e-6)
    np.testing.assert_allclose(times[t1:t1 + t2], (np.arange(t2) + 0.5) / t2, rtol=1e-6)
    p1 = len(first.phrases)
    np.testing.assert_array_equal(np.asarray(padded.batches.text[0][:p1]), first.phrase_features)
    np.testing.assert_allclose(np.asarray(padded.batches.text_times[0][:p1]), first.phrase_times)


def test_batches_skip_videos_without_narration(task):
    videos = list(task.videos)
    videos[1] = _drop_narration(videos[1])
    reduced = dataclasses.replace(task, videos=tuple(videos))
    padded = training.make_pooled_batches(reduced, 10, K, K + K_BG)
    assert videos[1].vid not in padded.video_ids[0]
    assert len(padded.video_ids[0]) == len(videos) - 1


def test_batch_with_too_few_points_names_videos(task):
    short = task.videos[0]
    with pytest.raises(ValueError, match=short.vid):
        training.make_pooled_batches(task, 1, short.num_segments + 1, K + K_BG)


def test_optimizer_adds_l2_decay_to_gradient():
    # torch.optim.Adam(weight_decay=wd): g <- g + wd * p, then the Adam update on g.
    lr, wd, b1, b2, eps = 0.1, 0.02, 0.9, 0.999, 1e-8
    config = training.TrainConfig(learning_rate=lr, weight_decay=wd)
    optimizer = training.make_optimizer(config)
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = optimizer.init(params)
    p = np.array([1.0, -2.0, 0.5])
    m = np.zeros(3)
    v = np.zeros(3)
    for step in range(1, 4):
        grad = np.array([0.3, 0.1, -0.2]) * step
        updates, state = optimizer.update({"w": jnp.asarray(grad)}, state, params)
        params = optax.apply_updates(params, updates)
        g = grad + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
    np.testing.assert_allclose(np.asarray(params["w"]), p, rtol=1e-6)


def test_train_step_lowers_loss_on_fixed_batch(task, config):
    padded = training.make_pooled_batches(task, 6, K, K + K_BG)
    batch = padded.batch(0)
    model = FeatureMaps(batch.visual.shape[-1])
    graphdef, params = training.split_model(model)
    optimizer = training.make_optimizer(config)
    step = training.make_train_step(graphdef, optimizer, num_prototypes=K, loss_config=config.loss)
    key = jax.random.PRNGKey(0)

    def loss_of(params):
        return float(alignment_loss(
            params, batch, key, graphdef=graphdef, num_prototypes=K, config=config.loss)[0])

    before = loss_of(params)
    new_params, _, reported = step(params, optimizer.init(params), batch, key)
    assert float(reported) == pytest.approx(before, rel=1e-6)
    assert loss_of(new_params) < before


def test_train_writes_history_and_models(task, config, tmp_path):
    result = training.train(task, config, checkpoint_dir=tmp_path)
    assert result.loss_history.shape == (3,)
    assert np.isfinite(result.loss_history).all()
    assert result.num_prototypes == K

    exported = training.load_model(tmp_path / "model")
    last = training.load_model(tmp_path / "model_last")
    eval_params = training.split_model(result.eval_model)[1]
    final_params = training.split_model(result.model)[1]
    assert exported.metadata["epoch"] == 2
    assert last.metadata["epoch"] == 3
    for saved, expected in [(exported.params, eval_params), (last.params, final_params)]:
        for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    kernel = np.asarray(final_params["visual"]["kernel"])
    assert not np.allclose(kernel, np.eye(kernel.shape[0]))


@pytest.mark.parametrize("split_epoch", [1, 2])
def test_resume_matches_uninterrupted_run(task, config, tmp_path, split_epoch):
    # Split after epoch 1: the eval epoch (2) runs after resuming. After epoch 2: the eval
    # parameters are read back from the exported model.
    full = training.train(task, config, checkpoint_dir=tmp_path / "full")
    first = dataclasses.replace(
        config, num_epochs=split_epoch, eval_epoch=min(config.eval_epoch, split_epoch)
    )
    training.train(task, first, checkpoint_dir=tmp_path / "split")
    resumed = training.train(task, config, checkpoint_dir=tmp_path / "split", resume=True)

    np.testing.assert_allclose(resumed.loss_history, full.loss_history, rtol=1e-6)
    for model_a, model_b in [(resumed.model, full.model), (resumed.eval_model, full.eval_model)]:
        leaves_a = jax.tree.leaves(training.split_model(model_a)[1])
        leaves_b = jax.tree.leaves(training.split_model(model_b)[1])
        for a, b in zip(leaves_a, leaves_b):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_fresh_run_rejects_existing_state(task, config, tmp_path):
    short = dataclasses.replace(config, num_epochs=1, eval_epoch=1)
    training.train(task, short, checkpoint_dir=tmp_path)
    with pytest.raises(training.ExistingStateError, match="--resume"):
        training.train(task, short, checkpoint_dir=tmp_path)
    changed = dataclasses.replace(short, learning_rate=0.5)
    with pytest.raises(ValueError, match="learning_rate"):
        training.train(task, changed, checkpoint_dir=tmp_path, resume=True)


def test_load_model_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="dwsa-jax train"):
        training.load_model(tmp_path)


def test_config_round_trips_through_dict():
    config = training.TrainConfig(loss=LossConfig(alignment="softdtw", gamma=0.1), num_epochs=7,
                                  eval_epoch=None)
    assert training.TrainConfig.from_dict(config.to_dict()) == config
    assert config.resolved_eval_epoch == 7


@pytest.mark.parametrize("changes, field", [
    ({"eval_epoch": 60}, "eval_epoch"),
    ({"batching": "shuffled"}, "batching"),
    ({"batch_size": 0}, "batch_size"),
    ({"num_prototypes": 0}, "num_prototypes"),
])
def test_config_rejects_invalid(changes, field):
    with pytest.raises(ValueError, match=field):
        training.TrainConfig(**changes)


def test_unknown_number_of_steps_needs_k(task):
    unlabeled = dataclasses.replace(task, num_steps=None)
    with pytest.raises(ValueError, match="num_prototypes"):
        training.resolve_num_prototypes(training.TrainConfig(), unlabeled)
    assert training.resolve_num_prototypes(training.TrainConfig(num_prototypes=4), unlabeled) == 4


def test_videos_without_narration_fail_clearly(task):
    silent = dataclasses.replace(task, videos=tuple(_drop_narration(v) for v in task.videos))
    with pytest.raises(ValueError, match="no video has narration"):
        training.make_pooled_batches(silent, 2, K, K + K_BG)
    assert data.videos_with_narration(task)
