"""Tests of the localization and evaluation pipeline and of the train, segment and evaluate
commands on a simulated dataset written in the released layout."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from dwsa_jax import cli, data, metrics, pipeline, simulate, training
from dwsa_jax.localization import LocalizationConfig, localize_task
from dwsa_jax.model import LossConfig

K = 3


@pytest.fixture(scope="module")
def task():
    config = simulate.SimulationConfig(
        num_videos=6, num_steps=K, feature_dim=12, min_segments=12, max_segments=18,
        video_offset_scale=0.2, segment_nuisance_scale=0.2,
    )
    return simulate.simulate_task(config, seed=1)


@pytest.fixture(scope="module")
def dataset(task, tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    data.write_task(task, root / "processed", root / "data")
    return root


def test_evaluate_steps_hand_worked():
    # One video of 4 segments (12.8 s = 128 frames at 10 fps). Step 1 covers 0-6.4 s
    # (frames 0-63), step 2 covers 6.4-9.6 s (frames 64-95). Cluster 5 predicts segments 0-1
    # (frames 0-63), cluster 7 segment 3 (frames 96-127), segment 2 is background.
    labels = {"v": np.array([5, 5, -1, 7])}
    steps = {"v": (data.Step(1, 0.0, 6.4), data.Step(2, 6.4, 9.6))}
    scores = pipeline.evaluate_steps(labels, steps)
    # Matched correct frames: 64 (cluster 5 -> step 1); cluster 7 overlaps no step.
    assert scores.precision == pytest.approx(64 / 96)
    assert scores.recall == pytest.approx(64 / 96)
    assert scores.mof == pytest.approx(64 / 128)


def test_evaluate_steps_rejects_missing_video():
    steps = {"a": (data.Step(1, 0.0, 3.0),), "b": (data.Step(1, 0.0, 3.0),)}
    with pytest.raises(ValueError, match="first: b"):
        pipeline.evaluate_steps({"a": np.zeros(2, int)}, steps)


def test_evaluate_labels_skips_unannotated(task):
    videos = list(task.videos)
    videos[0] = dataclasses.replace(videos[0], steps=None)
    partial = dataclasses.replace(task, videos=tuple(videos))
    labels = {v.vid: np.zeros(v.num_segments, int) for v in videos[1:]}
    expected = metrics.evaluate_segments(
        [labels[v.vid] for v in videos[1:]], [v.steps for v in videos[1:]]
    )
    assert pipeline.evaluate_labels(partial, labels) == expected


def test_evaluate_labels_checks_lengths(task):
    labels = {v.vid: np.zeros(v.num_segments, int) for v in task.videos}
    first = task.videos[0].vid
    labels[first] = labels[first][:-1]
    with pytest.raises(ValueError, match=first):
        pipeline.evaluate_labels(task, labels)


def test_kmeans_method_clusters_without_time(task):
    result = pipeline.run_method("kmeans", task, seed=4)
    features = [
        (v.features / np.linalg.norm(v.features, axis=1, keepdims=True)).astype(np.float64)
        for v in task.videos
    ]
    expected = localize_task(features, K, jax.random.PRNGKey(4), time_weight=0.0)

    assert result.loss_history is None
    assert result.model is None
    for video, labels in zip(task.videos, expected):
        np.testing.assert_array_equal(result.labels[video.vid], labels)
    # Low nuisance: the clusters follow the steps, far better than the same labels shuffled.
    rng = np.random.default_rng(0)
    shuffled = {vid: rng.permutation(labels) for vid, labels in result.labels.items()}
    assert result.scores.f1 > pipeline.evaluate_labels(task, shuffled).f1 + 0.2


def test_trained_method_returns_model_and_history(task):
    config = training.TrainConfig(
        loss=LossConfig(num_background_prototypes=2), num_epochs=2, eval_epoch=2, batch_size=3
    )
    result = pipeline.run_method("sopl+softdtw", task, train_config=config)
    assert result.loss_history.shape == (2,)
    assert result.model is not None
    assert set(result.labels) == {v.vid for v in task.videos}
    assert 0.0 <= result.scores.f1 <= 1.0


def test_unknown_method_raises(task):
    with pytest.raises(ValueError, match="sopl\\+dwsa"):
        pipeline.run_method("spectral", task)


def test_average_over_tasks_skips_missing():
    a = metrics.Scores(0.2, 0.4, 0.3, 0.5, 0.4)
    b = metrics.Scores(0.4, 0.6, 0.5, 0.7, 0.6)
    mean = pipeline.average_over_tasks([a, None, b])
    assert mean == pytest.approx(metrics.Scores(0.3, 0.5, 0.4, 0.6, 0.5))
    assert pipeline.average_over_tasks([None]) is None


def test_format_table_lists_methods():
    table = pipeline.format_table({"kmeans": metrics.Scores(0.5, 0.25, 0.125, 1.0, 0.25), "x": None})
    lines = table.splitlines()
    assert lines[0].split() == ["method", "precision", "recall", "F1", "MoF", "MoF", "steps"]
    assert lines[1].split() == ["kmeans", "50.0", "25.0", "12.5", "100.0", "25.0"]
    assert lines[2].split() == ["x", "-", "-", "-", "-", "-"]


def test_train_segment_evaluate_commands(dataset, task, tmp_path, capsys):
    processed, annotations = str(dataset / "processed"), str(dataset / "data")
    out = tmp_path / "run"
    assert cli.main([
        "train", "--processed", processed, "--data", annotations, "--task", task.name,
        "--out", str(out), "--epochs", "2", "--eval-epoch", "1", "--batch-size", "3",
        "--K-bg", "2", "--no-progress",
    ]) == 0
    summary = json.loads((out / "training.json").read_text())
    assert summary["num_prototypes"] == K
    assert len(summary["loss_history"]) == 2
    assert summary["config"]["loss"]["num_background_prototypes"] == 2

    assert cli.main([
        "segment", "--processed", processed, "--task", task.name,
        "--checkpoint", str(out / "model"), "--out", str(out), "--background-ratio", "0.3",
    ]) == 0
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["num_clusters"] == K
    assert {vid: len(labels) for vid, labels in predictions["labels"].items()} == {
        v.vid: v.num_segments for v in task.videos
    }

    assert cli.main([
        "evaluate", "--predictions", str(out), "--data", annotations, "--task", task.name,
    ]) == 0
    scores = json.loads((out / "metrics.json").read_text())
    expected = pipeline.evaluate_labels(
        task, {vid: np.asarray(labels) for vid, labels in predictions["labels"].items()}
    )
    assert scores["f1"] == pytest.approx(expected.f1)
    assert scores["num_videos"] == len(task.videos)
    assert "sopl+dwsa" in capsys.readouterr().out


def test_train_resume_continues(dataset, task, tmp_path):
    args = [
        "train", "--processed", str(dataset / "processed"), "--task", task.name,
        "--out", str(tmp_path), "--K", str(K), "--batch-size", "3", "--K-bg", "2",
        "--no-progress",
    ]
    assert cli.main([*args, "--epochs", "1", "--eval-epoch", "1"]) == 0
    with pytest.raises(SystemExit, match="--resume"):
        cli.main([*args, "--epochs", "2", "--eval-epoch", "1"])
    assert cli.main([*args, "--epochs", "2", "--eval-epoch", "1", "--resume"]) == 0
    assert len(json.loads((tmp_path / "training.json").read_text())["loss_history"]) == 2


def test_short_run_evaluates_last_epoch(dataset, task, tmp_path):
    assert cli.main([
        "train", "--processed", str(dataset / "processed"), "--task", task.name,
        "--out", str(tmp_path), "--K", str(K), "--batch-size", "3", "--K-bg", "2",
        "--epochs", "1", "--no-progress",
    ]) == 0
    assert training.load_model(tmp_path / "model").metadata["epoch"] == 1


def test_unknown_task_lists_available(dataset, task, tmp_path):
    with pytest.raises(SystemExit, match=f"tasks under .*{task.name}"):
        cli.main([
            "train", "--processed", str(dataset / "processed"), "--task", "nope",
            "--out", str(tmp_path),
        ])


def test_segment_kmeans_needs_k(dataset, task, tmp_path):
    with pytest.raises(SystemExit, match="--num-prototypes"):
        cli.main([
            "segment", "--processed", str(dataset / "processed"), "--task", task.name,
            "--method", "kmeans", "--out", str(tmp_path),
        ])
