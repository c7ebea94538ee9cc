"""Tests of per-video batching, bucketing, the sharded train step and multi-device training."""

import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import sys
import types

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dwsa_jax import parallel, prototypes, simulate, training
from dwsa_jax.model import FeatureMaps, LossConfig, PooledBatch, alignment_loss

K = 3
K_BG = 1
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def task():
    config = simulate.SimulationConfig(
        num_videos=7, num_steps=K, feature_dim=12, min_segments=10, max_segments=30,
        chatter_per_minute=6.0,
    )
    return simulate.simulate_task(config, seed=1)


def _pair_batch(video, dtype=np.float64):
    """Return one video as an unpadded PooledBatch."""
    t, p = video.num_segments, len(video.phrases)
    return PooledBatch(
        visual=jnp.asarray(video.features, dtype),
        visual_times=prototypes.segment_times(t, dtype),
        visual_mask=jnp.ones(t, bool),
        text=jnp.asarray(video.phrase_features, dtype),
        text_times=jnp.asarray(video.phrase_times, dtype),
        text_mask=jnp.ones(p, bool),
    )


def _stand_in_videos(lengths):
    return [
        types.SimpleNamespace(vid=f"v{i:03d}", num_segments=t, phrases=(None,) * p)
        for i, (t, p) in enumerate(lengths)
    ]


# Bucketing ----------------------------------------------------------------------------------


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    lengths=st.lists(st.tuples(st.integers(1, 200), st.integers(1, 60)), min_size=1, max_size=40),
    batch_size=st.integers(1, 12),
)
def test_bucketing_places_each_video_once(lengths, batch_size):
    videos = _stand_in_videos(lengths)
    buckets = parallel.bucket_videos(videos, batch_size)
    ids = [v.vid for bucket in buckets for v in bucket]

    assert sorted(ids) == sorted(v.vid for v in videos)
    assert len(ids) == len(set(ids))
    assert all(1 <= len(bucket) <= batch_size for bucket in buckets)
    assert all(len(bucket) == batch_size for bucket in buckets[:-1])


def test_bucketing_groups_similar_lengths():
    videos = _stand_in_videos([(90, 5), (10, 5), (85, 5), (12, 5), (11, 5), (95, 5)])
    buckets = parallel.bucket_videos(videos, 3)
    segments = [[v.num_segments for v in bucket] for bucket in buckets]
    assert segments == [[10, 11, 12], [85, 90, 95]]


def test_per_video_batches_cover_epoch(task):
    narrated = {v.vid for v in task.videos if v.has_narration}
    batches = parallel.make_per_video_batches(task, 3, K, K + K_BG, num_devices=4)
    trained = [vid for ids in batches.video_ids for vid in ids]

    assert len(trained) == len(set(trained))
    assert set(trained) | set(batches.excluded) == narrated
    assert not set(trained) & set(batches.excluded)
    for batch, ids in zip(batches.batches, batches.video_ids):
        assert batch.pair_mask.shape == (4,)
        assert batch.pair_mask.sum() == len(ids)
        assert batch.pairs.visual.shape[1] % parallel.LENGTH_MULTIPLE == 0
        assert batch.pairs.text.shape[1] % parallel.LENGTH_MULTIPLE == 0


def test_per_video_batch_rows_contain_videos(task):
    batches = parallel.make_per_video_batches(task, 3, K, K + K_BG)
    by_id = {v.vid: v for v in task.videos}
    batch, ids = batches.batches[0], batches.video_ids[0]
    for slot, vid in enumerate(ids):
        video = by_id[vid]
        t, p = video.num_segments, len(video.phrases)
        np.testing.assert_array_equal(batch.pairs.visual[slot, :t], video.features)
        assert batch.pairs.visual_mask[slot].sum() == t
        np.testing.assert_allclose(batch.pairs.visual_times[slot, :t], (np.arange(t) + 0.5) / t,
                                   rtol=1e-6)
        np.testing.assert_array_equal(batch.pairs.text[slot, :p], video.phrase_features)
        assert batch.pairs.text_mask[slot].sum() == p


def test_short_videos_left_out_with_warning(task, caplog):
    video = task.videos[0]
    short = dataclasses.replace(
        video, phrases=video.phrases[:1], phrase_features=video.phrase_features[:1],
        phrase_times=video.phrase_times[:1],
    )
    reduced = dataclasses.replace(task, videos=(short,) + task.videos[1:])
    with caplog.at_level(logging.WARNING, logger="dwsa_jax.parallel"):
        batches = parallel.make_per_video_batches(reduced, 3, K, K + K_BG)

    assert video.vid in batches.excluded
    assert all(video.vid not in ids for ids in batches.video_ids)
    assert f"{video.vid} ({video.num_segments} segments, 1 phrases)" in caplog.text


def test_no_usable_pair_raises(task):
    with pytest.raises(ValueError, match="no video has at least K=3 segments and K \\+ K_bg=500"):
        parallel.make_per_video_batches(task, 3, K, 500)


# Losses -------------------------------------------------------------------------------------


def test_per_video_loss_matches_loop_over_pairs(task):
    config = LossConfig(num_background_prototypes=K_BG)
    batches = parallel.make_per_video_batches(task, 2, K, K + K_BG, num_devices=3,
                                              dtype=np.float64)
    batch, ids = batches.batches[0], batches.video_ids[0]
    assert batch.pair_mask.sum() < len(batch.pair_mask), "the bucket should have filler pairs"
    graphdef, params = training.split_model(FeatureMaps(12, param_dtype=jnp.float64))
    key = jax.random.PRNGKey(5)
    by_id = {v.vid: v for v in task.videos}

    def vmapped(params):
        return parallel.per_video_loss(
            params, batch, key, graphdef=graphdef, num_prototypes=K, config=config
        )[0]

    def looped(params):
        losses = [
            alignment_loss(
                params, _pair_batch(by_id[vid]), jax.random.fold_in(key, slot),
                graphdef=graphdef, num_prototypes=K, config=config,
            )[0]
            for slot, vid in enumerate(ids)
        ]
        return sum(losses) / len(losses)

    value, grads = jax.jit(jax.value_and_grad(vmapped))(params)
    expected_value, expected_grads = jax.jit(jax.value_and_grad(looped))(params)
    np.testing.assert_allclose(value, expected_value, rtol=1e-10)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12)


def test_pair_keys_do_not_depend_on_padding():
    key = jax.random.PRNGKey(2)
    np.testing.assert_array_equal(
        parallel.pair_keys(key, 8)[:3], parallel.pair_keys(key, 3)
    )


def test_pad_points_appends_masked_rows(task):
    padded = training.make_pooled_batches(task, 7, K, K + K_BG)
    batch = padded.batch(0)
    extended = parallel.pad_points(batch, 64)
    num_segments, num_phrases = batch.visual.shape[0], batch.text.shape[0]

    assert extended.visual.shape == (-(-num_segments // 64) * 64, batch.visual.shape[1])
    assert extended.text.shape[0] == -(-num_phrases // 64) * 64
    for original, grown in zip(batch, extended):
        np.testing.assert_array_equal(grown[:original.shape[0]], original)
        assert not np.any(grown[original.shape[0]:])
    # k-means++ and SOPL ignore masked rows wherever they are (tests/test_prototypes.py).
    assert extended.visual_mask.sum() == batch.visual_mask.sum()
    assert extended.text_mask.sum() == batch.text_mask.sum()


def test_train_per_video_lowers_loss(task):
    config = training.TrainConfig(
        loss=LossConfig(num_background_prototypes=K_BG), batch_size=8, num_epochs=4,
        eval_epoch=2, learning_rate=2e-2, batching="per-video",
    )
    result = training.train(task, config)
    assert result.loss_history.shape == (4,)
    assert np.all(np.isfinite(result.loss_history))
    assert result.loss_history[-1] < result.loss_history[0]


# Devices and hosts --------------------------------------------------------------------------


def test_one_epoch_on_four_devices_matches_one():
    environment = dict(os.environ)
    environment["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    environment["JAX_PLATFORMS"] = "cpu"
    completed = subprocess.run(
        [sys.executable, str(REPO / "tests" / "multi_device_epoch.py")],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])

    assert results["device_count"] == 4
    for batching in parallel.BATCHING_MODES:
        result = results[batching]
        np.testing.assert_allclose(result["loss_all"], result["loss_one"], rtol=1e-4)
        assert result["grads_max_abs"] > 1e-3, "the gradient should not vanish"
        assert result["grads_relative_difference"] < 1e-4
        np.testing.assert_allclose(result["history_all"], result["history_one"], rtol=1e-4)
        assert result["params_moved"] > 1e-3, "one epoch should change the parameters"
        assert result["params_relative_difference"] < 1e-3
        assert result["checkpoint_relative_difference"] == 0.0


def test_distributed_not_configured_does_nothing(monkeypatch):
    for name in parallel.DISTRIBUTED_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(jax.distributed, "initialize", _fail_if_called)
    assert parallel.initialize_distributed() is False


def test_distributed_reads_environment(monkeypatch):
    calls = []
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:12345")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))

    assert parallel.initialize_distributed() is True
    assert calls == [{"coordinator_address": "127.0.0.1:12345", "num_processes": 2,
                      "process_id": 1}]


def test_distributed_partial_environment_raises(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:12345")
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    monkeypatch.setattr(jax.distributed, "initialize", _fail_if_called)
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES is not"):
        parallel.initialize_distributed()


def test_distributed_flag_without_environment_autodetects(monkeypatch):
    calls = []
    for name in parallel.DISTRIBUTED_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    assert parallel.initialize_distributed(required=True) is True
    assert calls == [{}]


def _fail_if_called(**kwargs):
    raise AssertionError(f"jax.distributed.initialize was called with {kwargs}")


def test_train_command_rejects_partial_environment(monkeypatch, tmp_path):
    from dwsa_jax import cli

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:12345")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    monkeypatch.setattr(jax.distributed, "initialize", _fail_if_called)
    with pytest.raises(SystemExit, match="JAX_PROCESS_ID is not;"):
        cli.main(["train", "--processed", str(tmp_path), "--task", "sim",
                  "--out", str(tmp_path / "out")])


@pytest.mark.skipif(
    os.environ.get("DWSA_JAX_MULTIPROCESS_TEST") != "1",
    reason="starts two JAX processes on 127.0.0.1 (about a minute); set "
           "DWSA_JAX_MULTIPROCESS_TEST=1 to run it",
)
def test_two_processes_match_one_device():
    script = REPO / "tests" / "multi_process_epoch.py"
    processes = []
    for process_id in range(2):
        environment = dict(os.environ)
        environment.update({
            "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:23571",
            "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(process_id),
        })
        environment.pop("XLA_FLAGS", None)
        processes.append(subprocess.Popen(
            [sys.executable, str(script)], cwd=REPO, env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    results = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]

    sys.path.insert(0, str(REPO / "tests"))
    import multi_process_epoch

    simulated = simulate.simulate_task(multi_process_epoch.SIMULATION, seed=3)
    for batching in parallel.BATCHING_MODES:
        expected = training.train(
            simulated, multi_process_epoch.train_config(batching), devices=jax.devices()[:1]
        ).loss_history
        for result in results:
            assert result["device_count"] == 2
            np.testing.assert_allclose(result["histories"][batching], expected, rtol=1e-4)
