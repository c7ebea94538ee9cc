"""Loader of the released layout, on the real CrossTask sample files and bad input."""

import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from dwsa_jax.data import (
    Phrase,
    Step,
    Task,
    Video,
    check_batch_sizes,
    list_tasks,
    load_features,
    load_task,
    phrase_times_of,
    read_annotation_csv,
    read_mapping,
    read_verb_phrases,
    read_vocab,
    videos_with_narration,
    write_task,
)

SAMPLE = Path(__file__).parent / "data" / "crosstask-105222-sample"
FIRST = "105222_5sOPNTbFe6A"
SECOND = "105222_L0MVdMNihGI"
DIM = 8


def test_read_annotation_csv_real_file():
    steps = read_annotation_csv(SAMPLE / "annotations" / f"{SECOND}.csv")
    assert steps == (
        Step(4, 62.56, 63.62),
        Step(6, 63.46, 65.86),
        Step(2, 68.88, 69.23),
        Step(6, 69.3, 72.4),
        Step(1, 111.73, 113.93),
    )
    assert all(isinstance(s.step_id, int) for s in steps)


def test_read_mapping_real_file():
    # The real file has no newline after its last line.
    assert read_mapping(SAMPLE / "mapping.txt") == {
        1: "add_onion", 2: "add_rice", 3: "add_ham", 4: "add_kimchi",
        5: "pour_sesame_oil", 6: "stir_mixture",
    }


def make_layout(root, rng, *, second_phrases=True):
    """Real annotations and mapping of task 105222 plus made-up features and phrases."""
    processed = root / "processed" / "105222"
    data = root / "data" / "105222"
    shutil.copytree(SAMPLE / "annotations", data / "annotations")
    shutil.copy(SAMPLE / "mapping.txt", data / "mapping.txt")
    for sub in ("video_embd", "verb_phrases", "text_embd"):
        (processed / sub).mkdir(parents=True)
    # Saved as float64 on purpose: the loader converts to float32.
    np.save(processed / "video_embd" / f"{SECOND}_video_embeddings.npy", rng.normal(size=(40, DIM)))
    np.save(processed / "video_embd" / f"{FIRST}_video_embeddings.npy", rng.normal(size=(50, DIM)))
    (processed / "verb_phrases" / f"{FIRST}_verb_phrases.txt").write_text(
        "10.0\t20.0\tchop the onion\n"
        "30.0\t34.0\tthink about life\n"
        "90.0\t100.0\tadd the rice\n"
        "95.0\t100.0\tfry the kimchi\n")
    np.save(processed / "text_embd" / f"{FIRST}_verb_phrases_embeddings.npy",
            np.arange(4 * DIM, dtype=np.float64).reshape(4, DIM))
    if second_phrases:
        (processed / "verb_phrases" / f"{SECOND}_verb_phrases.txt").write_text(
            "1.5\t2.5\tpour the oil\n")
        np.save(processed / "text_embd" / f"{SECOND}_verb_phrases_embeddings.npy",
                np.ones((1, DIM)))
    # "fry the kimchi" is missing from the vocabulary.
    (processed / "vocab_concrete.txt").write_text(
        "chop the onion\t4.5\nthink about life\t2.0\nadd the rice\t4.9\npour the oil\t4.8\n")
    return root / "processed", root / "data"


def test_load_task_real_annotations(tmp_path, caplog):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    with caplog.at_level(logging.WARNING):
        task = load_task(processed, "105222", data_dir=data)
    assert task.name == "105222"
    assert [v.vid for v in task.videos] == [FIRST, SECOND]
    assert task.num_steps == 6
    assert task.step_names[5] == "pour_sesame_oil"

    first = task.videos[0]
    assert first.features.dtype == np.float32
    assert first.features.shape == (50, DIM)
    assert first.steps == read_annotation_csv(data / "105222" / "annotations" / f"{FIRST}.csv")
    # "think about life" (2.0 < 3.0) is dropped; "fry the kimchi" is not rated and kept.
    assert [p.text for p in first.phrases] == ["chop the onion", "add the rice", "fry the kimchi"]
    np.testing.assert_array_equal(first.phrase_features,
                                  np.arange(4 * DIM).reshape(4, DIM)[[0, 2, 3]])
    assert first.phrase_features.dtype == np.float32
    # Midpoints 15, 95, 97.5 over the last phrase's end, 100 s.
    np.testing.assert_allclose(first.phrase_times, [0.15, 0.95, 0.975], rtol=1e-6)
    assert "fry the kimchi" in caplog.text


def test_load_task_times_use_unfiltered_last_phrase(tmp_path):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    # The last line is filtered out, yet its end (200 s) still normalises the times.
    path = processed / "105222" / "verb_phrases" / f"{FIRST}_verb_phrases.txt"
    path.write_text(path.read_text() + "150.0\t200.0\tthink about life\n")
    np.save(processed / "105222" / "text_embd" / f"{FIRST}_verb_phrases_embeddings.npy",
            np.zeros((5, DIM)))
    task = load_task(processed, "105222", data_dir=data)
    np.testing.assert_allclose(task.videos[0].phrase_times, [0.075, 0.475, 0.4875], rtol=1e-6)


def test_load_task_threshold_zero_keeps_all(tmp_path):
    processed, _ = make_layout(tmp_path, np.random.default_rng(0))
    (processed / "105222" / "vocab_concrete.txt").unlink()
    task = load_task(processed, "105222", concreteness_threshold=0)
    assert len(task.videos[0].phrases) == 4
    assert task.num_steps is None
    assert task.step_names is None
    assert task.videos[0].steps is None


def test_load_task_missing_vocab_rejected(tmp_path):
    processed, _ = make_layout(tmp_path, np.random.default_rng(0))
    (processed / "105222" / "vocab_concrete.txt").unlink()
    with pytest.raises(FileNotFoundError, match="vocab_concrete.txt not found.*threshold of 0"):
        load_task(processed, "105222")


def test_load_task_video_without_narration_warns(tmp_path, caplog):
    processed, data = make_layout(tmp_path, np.random.default_rng(0), second_phrases=False)
    with caplog.at_level(logging.WARNING):
        task = load_task(processed, "105222", data_dir=data)
    second = task.video(SECOND)
    assert not second.has_narration
    assert second.phrase_features is None
    assert second.phrase_times.shape == (0,)
    assert "1 video(s) have no narration phrase" in caplog.text
    assert SECOND in caplog.text
    assert [v.vid for v in videos_with_narration(task)] == [FIRST]


def test_load_task_unknown_task_lists_available(tmp_path):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    with pytest.raises(FileNotFoundError, match="task '999' not found.*105222"):
        load_task(processed, "999", data_dir=data)
    assert list_tasks(processed) == ["105222"]


def test_load_task_unknown_step_id(tmp_path):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    (data / "105222" / "annotations" / f"{FIRST}.csv").write_text("7,1.0,2.0\n")
    with pytest.raises(ValueError, match=rf"{FIRST}.csv: step id\(s\) \[7\] are not in"):
        load_task(processed, "105222", data_dir=data)


def test_load_task_non_finite_features(tmp_path):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    features = np.zeros((5, DIM), dtype=np.float32)
    features[3, 1] = np.nan
    np.save(processed / "105222" / "video_embd" / f"{SECOND}_video_embeddings.npy", features)
    with pytest.raises(ValueError, match=rf"{SECOND}_video_embeddings.npy has non-finite.*row 3"):
        load_task(processed, "105222", data_dir=data)


def test_load_task_dimension_mismatch_between_videos(tmp_path):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    np.save(processed / "105222" / "video_embd" / f"{SECOND}_video_embeddings.npy",
            np.zeros((5, DIM + 1)))
    with pytest.raises(ValueError, match=rf"video {SECOND}: features have dimension 9 .* 8"):
        load_task(processed, "105222", data_dir=data)


def test_load_task_dimension_mismatch_between_modalities(tmp_path):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    np.save(processed / "105222" / "text_embd" / f"{SECOND}_verb_phrases_embeddings.npy",
            np.zeros((1, 4)))
    with pytest.raises(ValueError, match=rf"video {SECOND}: phrase embeddings .* dimension 4"):
        load_task(processed, "105222", data_dir=data)


def test_load_task_row_count_mismatch(tmp_path):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    np.save(processed / "105222" / "text_embd" / f"{SECOND}_verb_phrases_embeddings.npy",
            np.zeros((2, DIM)))
    with pytest.raises(ValueError, match="has 2 rows but .* has 1 phrases"):
        load_task(processed, "105222", data_dir=data)


def test_load_features_rejects_pickled_file(tmp_path):
    object_array = tmp_path / "objects.npy"
    np.save(object_array, np.array([np.zeros(3), np.zeros(2)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy needs Python pickling"):
        load_features(object_array)
    pickled = tmp_path / "pickled.npy"
    pickled.write_bytes(pickle.dumps(np.zeros((2, 2))))
    with pytest.raises(ValueError, match="pickled.npy needs Python pickling"):
        load_features(pickled)


def test_load_features_rejects_text_file(tmp_path):
    path = tmp_path / "text.npy"
    path.write_text("0.1 0.2\n0.3 0.4\n")
    with pytest.raises(ValueError, match="text.npy is not a .npy file"):
        load_features(path)


def test_load_features_rejects_wrong_rank(tmp_path):
    path = tmp_path / "flat.npy"
    np.save(path, np.zeros(4))
    with pytest.raises(ValueError, match=r"flat.npy contains a float64 array of shape \(4,\)"):
        load_features(path)


@pytest.mark.parametrize("line, message", [
    ("1,2.0\n", "expected step_id,start,end"),
    ("one,1.0,2.0\n", "step id 'one' is not an integer"),
    ("0,1.0,2.0\n", "step id 0 must be >= 1"),
    ("1,abc,2.0\n", "start 'abc' is not a number"),
    ("1,5.0,2.0\n", "end 2.0 s is before start 5.0 s"),
    ("1,nan,2.0\n", "start 'nan' must be a finite"),
])
def test_read_annotation_csv_malformed(tmp_path, line, message):
    path = tmp_path / "bad.csv"
    path.write_text("1,0.0,1.0\n" + line)
    with pytest.raises(ValueError, match=f"bad.csv:2: {message}"):
        read_annotation_csv(path)


@pytest.mark.parametrize("text, message", [
    ("1 add_onion\nadd_rice\n", "bad.txt:2: expected 'step_id name'"),
    ("1 add_onion\nx add_rice\n", "bad.txt:2: step id 'x' is not an integer"),
    ("1 add_onion\n1 add_rice\n", "bad.txt:2: step id 1 appears twice"),
    ("1 add_onion\n3 add_rice\n", r"step ids \[1, 3\] are not 1..2"),
    ("1 add_onion\n\n2 add_rice\n", "bad.txt:2: blank line"),
])
def test_read_mapping_malformed(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_mapping(path)


@pytest.mark.parametrize("text, message", [
    ("1.0\t2.0\n", "bad.txt:1: expected start<TAB>end<TAB>phrase"),
    ("1.0\tx\tadd rice\n", "bad.txt:1: end 'x' is not a number"),
    ("-1.0\t2.0\tadd rice\n", "bad.txt:1: start '-1.0' must be a finite"),
])
def test_read_verb_phrases_malformed(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_verb_phrases(path)


def test_read_vocab_keeps_spaces_and_rejects_bad_score(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("add the rice\t4.5\nstir\t0\n")
    assert read_vocab(path) == {"add the rice": 4.5, "stir": 0.0}
    path.write_text("add the rice\tvery\n")
    with pytest.raises(ValueError, match="vocab.txt:1: expected phrase<TAB>score"):
        read_vocab(path)


def test_phrase_times_of_last_phrase_end():
    phrases = [Phrase(0.0, 10.0, "a"), Phrase(30.0, 50.0, "b"), Phrase(40.0, 45.0, "c")]
    # Midpoint of "b" (40) over the last end (45) is below 1; nothing is clipped here.
    np.testing.assert_allclose(phrase_times_of(phrases), [5 / 45, 40 / 45, 42.5 / 45], rtol=1e-6)


def video(vid, segments, phrases):
    return Video(
        vid=vid,
        features=np.zeros((segments, DIM), np.float32),
        phrases=tuple(Phrase(i, i + 1.0, "p") for i in range(phrases)),
        phrase_features=np.zeros((phrases, DIM), np.float32) if phrases else None,
        phrase_times=np.linspace(0, 1, phrases).astype(np.float32),
    )


def test_check_batch_sizes_pooled_and_per_video():
    batch = [video("t_a", 4, 10), video("t_b", 4, 10)]
    check_batch_sizes(batch, 7, 17)
    with pytest.raises(ValueError, match="video t_a has 4 segments but 7 visual prototypes"):
        check_batch_sizes(batch, 7, 17, per_video=True)
    with pytest.raises(ValueError, match="t_a, t_b has 20 phrases but 21 text prototypes"):
        check_batch_sizes(batch, 7, 21)


def test_video_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="video t_a: phrase_features has shape"):
        Video("t_a", np.zeros((3, DIM)), (Phrase(0, 1, "p"),), np.zeros((1, DIM + 1)),
              np.zeros(1))


def test_write_task_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    phrases = (Phrase(1.0, 2.5, "add the rice"), Phrase(3.25, 8.0, "stir it"))
    task = Task(
        name="sim",
        videos=(
            Video("sim_a", rng.normal(size=(6, DIM)).astype(np.float32), phrases,
                  rng.normal(size=(2, DIM)).astype(np.float32), phrase_times_of(phrases),
                  (Step(1, 0.0, 3.2), Step(2, 6.4, 9.6))),
            Video("sim_b", rng.normal(size=(4, DIM)).astype(np.float32)),
        ),
        step_names={1: "add rice", 2: "stir"},
        num_steps=2,
    )

    write_task(task, tmp_path / "processed", tmp_path / "data",
               concreteness={"stir it": 2.0})
    loaded = load_task(tmp_path / "processed", "sim", data_dir=tmp_path / "data",
                       concreteness_threshold=0)
    assert loaded.step_names == task.step_names
    assert loaded.num_steps == 2

    for original, read in zip(task.videos, loaded.videos):
        assert read.vid == original.vid
        np.testing.assert_array_equal(read.features, original.features)
        assert read.phrases == original.phrases
        np.testing.assert_array_equal(read.phrase_times, original.phrase_times)
        assert read.steps == original.steps
    np.testing.assert_array_equal(loaded.videos[0].phrase_features,
                                  task.videos[0].phrase_features)
    # The given score 2.0 filters "stir it" at the default threshold; the other gets 5.0.
    filtered = load_task(tmp_path / "processed", "sim")
    assert [p.text for p in filtered.videos[0].phrases] == ["add the rice"]


def test_load_task_warns_about_skipped_files(tmp_path, caplog):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    (data / "105222" / "annotations" / f"{SECOND}.csv").rename(
        data / "105222" / "annotations" / "105222_noFeatures.csv")
    (processed / "105222" / "verb_phrases" / "105222_orphan_verb_phrases.txt").write_text(
        "1.0\t2.0\tadd rice\n")
    with caplog.at_level(logging.WARNING):
        task = load_task(processed, "105222", data_dir=data)
    assert task.video(SECOND).steps is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("have no annotation file" in m and SECOND in m for m in messages)
    assert any("annotated but have no video features" in m and "105222_noFeatures" in m
               for m in messages)
    assert any("narration files but no video features" in m and "105222_orphan" in m
               for m in messages)


def test_videos_with_narration_rejects_task_without_phrases():
    task = Task(name="t", videos=(video("t_a", 5, 0), video("t_b", 5, 0)))
    with pytest.raises(ValueError, match="task t: no video has narration phrases"):
        videos_with_narration(task)


def test_load_task_all_phrases_filtered_warns(tmp_path, caplog):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    # "pour the oil" scores 4.8, below a threshold of 4.85.
    with caplog.at_level(logging.WARNING):
        task = load_task(processed, "105222", data_dir=data, concreteness_threshold=4.85)
    assert not task.video(SECOND).has_narration
    assert any("lost every phrase to the concreteness threshold 4.85" in r.getMessage()
               and SECOND in r.getMessage() for r in caplog.records)
    assert [p.text for p in task.video(FIRST).phrases] == ["add the rice", "fry the kimchi"]


def test_load_task_logs_filtered_phrases(tmp_path, caplog):
    processed, data = make_layout(tmp_path, np.random.default_rng(0))
    with caplog.at_level(logging.DEBUG, logger="dwsa_jax.data"):
        load_task(processed, "105222", data_dir=data)
    messages = [r.getMessage() for r in caplog.records]
    # 5 phrases read, "think about life" (2.0) is the only one below 3.0.
    assert "task 105222: the concreteness threshold 3.0 kept 4 of 5 phrases" in messages
    assert any(m.endswith("below the concreteness threshold: think about life") for m in messages)
