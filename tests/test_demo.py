"""End-to-end test of `dwsa-jax demo`, run as a user runs it, in a subprocess."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dwsa_jax import training

REPO = Path(__file__).resolve().parents[1]
SCORE_FIELDS = {"precision", "recall", "f1", "mof", "mof_steps"}
EPOCHS = 2


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "dwsa_jax.cli", "demo", "--out", str(out), "--epochs",
         str(EPOCHS), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return out, completed.stdout


def test_demo_writes_metrics(demo_run):
    out, _ = demo_run
    summary = json.loads((out / "metrics.json").read_text())

    assert set(summary) == {"kmeans", "sopl", "sopl+dwsa", "loss_history"}
    for method in ("kmeans", "sopl", "sopl+dwsa"):
        assert set(summary[method]) == SCORE_FIELDS
        for field in SCORE_FIELDS:
            assert 0.0 <= summary[method][field] <= 1.0, (method, field)
    assert len(summary["loss_history"]) == EPOCHS
    assert all(math.isfinite(x) for x in summary["loss_history"])


def test_demo_prints_table(demo_run):
    _, stdout = demo_run
    rows = [line.split()[0] for line in stdout.splitlines() if line.strip()]
    assert "kmeans" in rows
    assert "sopl+dwsa" in rows


def test_demo_writes_timeline_png(demo_run):
    out, _ = demo_run
    image = (out / "timeline.png").read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(image) > 10_000


def test_demo_round_trips_through_disk(demo_run):
    out, _ = demo_run
    assert (out / "processed" / "sim" / "video_embd").is_dir()
    assert (out / "data" / "sim" / "mapping.txt").is_file()
    loaded = training.load_model(out / "model")
    assert loaded.metadata["epoch"] == EPOCHS
    assert loaded.metadata["num_prototypes"] == 7
