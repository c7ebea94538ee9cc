"""Tests of `dwsa-jax experiment`: a --quick run end to end, resume, tables and the notebook."""

import csv
import fcntl
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from dwsa_jax.experiments import plan, report, store, suite
from dwsa_jax.experiments.fit import load_fit, save_fit

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUM_REMOVED_ROWS = 5


def run_quick(out: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "dwsa_jax.cli", "experiment", "--quick", "--out", str(out),
         "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def _quick_and_resumed(out: Path) -> dict:
    first = run_quick(out)
    original = (out / "results.csv").read_text()

    # A run killed while writing leaves some rows missing and possibly a partial last line.
    lines = original.splitlines(keepends=True)
    cut = "".join(lines[:-NUM_REMOVED_ROWS]) + lines[-NUM_REMOVED_ROWS][:10]
    (out / "results.csv").write_text(cut)
    resumed = run_quick(out)
    return {"out": str(out), "original": original, "first": first.stdout,
            "resumed": resumed.stdout}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, worker_id):
    """A --quick run, then a resumed run after cutting results.csv as a killed run leaves it.

    Under pytest-xdist the workers share one run: the first worker to take the lock runs it
    and records the outcome next to the output folder, the others read that record.
    """
    if worker_id == "master":
        run = _quick_and_resumed(tmp_path_factory.mktemp("experiment") / "out")
    else:
        root = tmp_path_factory.getbasetemp().parent
        record = root / "experiment_quick.json"
        with open(root / "experiment_quick.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not record.is_file():
                record.write_text(json.dumps(_quick_and_resumed(root / "experiment_quick")))
            run = json.loads(record.read_text())
    return Path(run["out"]), run["original"], run["first"], run["resumed"]


def quick_plan():
    task = suite.SUITES["quick"].tasks[0]
    return plan.plan_runs(task.task_name, task.num_steps, [0], plan.QUICK_SWEEPS)


def test_results_csv_rows(quick_run):
    out, _, _, _ = quick_run
    rows = read_csv(out / "results.csv")

    assert tuple(rows[0]) == store.RESULT_FIELDS
    keys = [store.ResultsTable.key(row) for row in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == {run.key for run in quick_plan()}
    assert {row["method"] for row in rows} == set(plan.METHODS)
    for row in rows:
        precision, recall, f1 = (float(row[f]) for f in ("precision", "recall", "f1"))
        assert 0.0 <= precision <= 1.0
        assert 0.0 <= recall <= 1.0
        expected = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert f1 == pytest.approx(expected, abs=2e-6), row
        assert 0.0 <= float(row["mof"]) <= 1.0


def test_background_sweep_trades_recall(quick_run):
    out, _, _, _ = quick_run
    rows = [r for r in read_csv(out / "results.csv")
            if r["method"] == "sopl+dwsa" and r["parameter"] == "b"]
    by_b = {float(r["value"]): r for r in rows}

    # More background never adds predicted frames, so recall cannot rise with b.
    recalls = [float(by_b[b]["recall"]) for b in sorted(by_b)]
    assert recalls == sorted(recalls, reverse=True)
    assert recalls[0] > recalls[-1]


def test_default_runs_agree(quick_run):
    out, _, _, _ = quick_run
    rows = {store.ResultsTable.key(r): r for r in read_csv(out / "results.csv")}

    # K = key-steps, b = 0.4, p = 5 and delta_e = 1 are one setting reached from four sweeps.
    default = rows[("quick", "sopl+dwsa", "0", "K", "gt")]["f1"]
    assert rows[("quick", "sopl+dwsa", "0", "b", "0.4")]["f1"] == default
    assert rows[("quick", "sopl+dwsa", "0", "p", "5")]["f1"] == default
    assert rows[("quick", "sopl+dwsa", "0", "delta_e", "1")]["f1"] == default


def _lcs(a, b):
    # Brute force over subsequences of the shorter sequence, longest first.
    from itertools import combinations

    short, long = (a, b) if len(a) <= len(b) else (b, a)
    for size in range(len(short), 0, -1):
        for picked in combinations(short, size):
            iterator = iter(long)
            if all(item in iterator for item in picked):
                return size
    return 0


def test_tasks_csv_statistics(quick_run):
    out, _, _, _ = quick_run
    (row,) = read_csv(out / "tasks.csv")
    task = suite.SUITES["quick"].simulate()[0]
    sequences = [[s.step_id for s in sorted(v.steps, key=lambda s: s.start)] for v in task.videos]

    ratios = [_lcs(sequences[i], sequences[j]) / min(len(sequences[i]), len(sequences[j]))
              for i in range(len(sequences)) for j in range(len(sequences)) if i != j]
    repeats = 1 - sum(len(set(s)) for s in sequences) / sum(len(s) for s in sequences)
    assert row["task"] == "quick"
    assert int(row["num_steps"]) == task.num_steps
    assert float(row["oce"]) == pytest.approx(1 - np.mean(ratios), abs=1e-6)
    assert float(row["repeat_frequency"]) == pytest.approx(repeats, abs=1e-6)


def test_markdown_tables(quick_run):
    out, _, _, _ = quick_run
    rows = {store.ResultsTable.key(r): r for r in read_csv(out / "results.csv")}
    table1 = (out / report.TABLE_FILES["K"]).read_text()

    kmeans_line = next(line for line in table1.splitlines() if line.startswith("| kmeans |"))
    cells = [c.strip() for c in kmeans_line.strip("|").split("|")]
    expected = 100 * float(rows[("quick", "kmeans", "0", "K", "gt")]["f1"])
    assert cells[1] == f"{expected:.2f} ± 0.00"
    assert "K = key-steps" in table1
    assert "K = 7" in table1
    for method in plan.METHODS:
        assert f"| {method} |" in table1

    table2 = (out / report.TABLE_FILES["gain"]).read_text()
    assert "| quick |" in table2
    table3 = (out / report.TABLE_FILES["p"]).read_text()
    assert "| p = 1 |" in table3
    assert "| p = 5 |" in table3
    table4 = (out / report.TABLE_FILES["narration"]).read_text()
    assert "Not run" in table4


def test_figures_are_png(quick_run):
    out, _, _, _ = quick_run
    for name in report.FIGURE_FILES.values():
        content = (out / name).read_bytes()
        assert content.startswith(PNG_MAGIC), name
        assert len(content) > 5000, name


def test_convergence_rows(quick_run):
    out, _, _, _ = quick_run
    rows = read_csv(out / "convergence.csv")
    epochs = sorted({int(r["epoch"]) for r in rows})

    assert epochs == [0, 1, 5, 10]
    assert len(rows) == len(epochs) * 20
    assert all(float(r["mse"]) >= 0 for r in rows)


def test_alignment_report(quick_run):
    out, _, _, _ = quick_run
    text = (out / "alignment.md").read_text()
    sections = text.split("### Visual prototype ")[1:]

    assert "## Task quick" in text
    assert sections
    for section in sections:
        phrases = re.search(r"Phrases \((\d+) of (\d+) assigned\)", section)
        assert phrases and int(phrases.group(1)) <= 12
        assert int(phrases.group(1)) <= int(phrases.group(2))
        segment_rows = [line for line in section.splitlines() if line.startswith("| quick_")]
        assert 1 <= len(segment_rows) <= 12


def test_resume_keeps_rows(quick_run):
    out, original, first_stdout, resumed_stdout = quick_run
    total = len(quick_plan())

    assert f"{total} runs (0 already done)" in first_stdout
    assert f"{total} runs ({total - NUM_REMOVED_ROWS} already done), 0 models trained" in resumed_stdout
    # Localization is seeded and the models come from the cache, so the rows come back equal.
    assert (out / "results.csv").read_text() == original


def test_notebook_runs_on_output(quick_run, monkeypatch):
    out, _, _, _ = quick_run
    monkeypatch.setenv("DWSA_EXPERIMENT_DIR", str(out))
    notebook = nbformat.read(REPO / "notebooks" / "experiments.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})
    client.execute()

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert "runs on 1 tasks" in text
    assert "Table 1" in markdown
    assert "Table 4" in markdown
    assert len(images) == len(report.FIGURE_FILES)


def test_partial_last_line_is_dropped(tmp_path):
    path = tmp_path / "results.csv"
    row = dict(task="t", method="sopl", seed=0, parameter="K", value="gt", precision="0.5",
               recall="0.5", f1="0.5", mof="0.5")
    table = store.ResultsTable(path)
    table.append(row)
    with path.open("a") as stream:
        stream.write("t,kmeans,0,K,g")

    reopened = store.ResultsTable(path)
    assert reopened.done == {("t", "sopl", "0", "K", "gt")}
    with pytest.raises(ValueError, match="already contains"):
        reopened.append(row)
    reopened.append(dict(row, method="kmeans"))
    assert len(read_csv(path)) == 2


def test_tables_on_constructed_results():
    rows = []
    # Two seeds, two tasks: per-seed task means are 0.2 and 0.4 for "concrete".
    for seed, (a, b) in enumerate([(0.1, 0.3), (0.3, 0.5)]):
        for task, f1 in (("x", a), ("y", b)):
            rows.append(dict(task=task, method="sopl+dwsa", seed=str(seed),
                             parameter="narration", value="concrete", precision=str(f1),
                             recall=str(f1), f1=str(f1), mof=str(f1)))
            rows.append(dict(task=task, method="sopl+dwsa", seed=str(seed),
                             parameter="narration", value="verb-dobj", precision="0.1",
                             recall="0.1", f1="0.1", mof="0.1"))
    table = report.table_narration(report.Results(rows))

    # mean 30, sample std of (20, 40) = 14.14.
    assert "| concrete | 30.00 ± 14.14 |" in table
    assert "| verb-dobj | 10.00 ± 0.00 |" in table


def test_plan_shares_models():
    runs = quick_plan()
    default = next(r for r in runs if r.method == "sopl+dwsa" and r.parameter == "K"
                   and r.value == plan.GROUND_TRUTH_K)
    b_runs = [r for r in runs if r.method == "sopl+dwsa" and r.parameter == "b"]

    assert all(r.model_key == default.model_key for r in b_runs)
    assert len({r.model_key for r in runs if r.trained}) == 6
    assert all(r.model_key is None for r in runs if r.method in ("kmeans", "sopl"))


def test_fit_file_round_trip(tmp_path):
    params = {"visual": {"kernel": np.eye(3, dtype=np.float32), "bias": np.zeros(3, np.float32)},
              "text": {"kernel": 2 * np.eye(3, dtype=np.float32), "bias": np.ones(3, np.float32)}}
    save_fit(tmp_path / "m.npz", params, np.array([3.0, 2.0]))
    loaded, history = load_fit(tmp_path / "m.npz")

    np.testing.assert_array_equal(history, [3.0, 2.0])
    for side in ("visual", "text"):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(loaded[side][name], params[side][name])


def test_narration_modes_rebuild_phrases(tmp_path):
    pytest.importorskip("spacy")
    from dwsa_jax import data
    from dwsa_jax.experiments.narration_modes import NarrationTasks

    sample = REPO / "tests" / "data" / "crosstask-105222-sample"
    processed, subtitles = tmp_path / "processed", tmp_path / "subtitles"
    (processed / "105222" / data.VIDEO_DIR).mkdir(parents=True)
    (subtitles / "105222").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for caption in sorted((sample / "subtitles").glob("*.srt")):
        (subtitles / "105222" / caption.name).write_bytes(caption.read_bytes())
        np.save(processed / "105222" / data.VIDEO_DIR / f"{caption.stem}{data.VIDEO_SUFFIX}",
                rng.normal(size=(60, 16)).astype(np.float32))
    data_dir = tmp_path / "data"
    (data_dir / "105222").mkdir(parents=True)
    (data_dir / "105222" / "annotations").symlink_to(sample / "annotations")
    (data_dir / "105222" / "mapping.txt").symlink_to(sample / "mapping.txt")
    task = data.load_task(processed, "105222", data_dir=data_dir, concreteness_threshold=0.0)
    narrate = NarrationTasks(processed, data_dir, subtitles, "hashing:16", tmp_path / "out")

    tasks = {mode: narrate(task, mode) for mode in ("verb-dobj", "verb-phrase", "concrete")}
    counts = {mode: sum(len(v.phrases) for v in t.videos) for mode, t in tasks.items()}
    assert all(counts[mode] > 0 for mode in counts), counts
    # Concrete mode keeps a subset of the verb phrases.
    assert counts["concrete"] <= counts["verb-phrase"]
    for mode, narrated in tasks.items():
        for video in narrated.videos:
            assert video.phrase_features.shape == (len(video.phrases), 16)
            np.testing.assert_array_equal(video.features, task.video(video.vid).features)
    # A second call reads the files written by the first instead of narrating again.
    assert narrate(task, "concrete") is tasks["concrete"]
