"""Reading SubRip and WebVTT captions: real CrossTask files and the faults real files contain."""

from pathlib import Path

import pytest

from dwsa_jax.narration.sentences import (
    build_transcript,
    caption_words,
    span_times,
    transcript_from_captions,
)
from dwsa_jax.narration.subtitles import Caption, SubtitleError, parse_srt, parse_vtt, read_subtitles

SUBTITLES = Path(__file__).parent / "data" / "crosstask-105222-sample" / "subtitles"
FIRST = SUBTITLES / "105222_5sOPNTbFe6A.srt"
SECOND = SUBTITLES / "105222_L0MVdMNihGI.srt"


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_real_srt_cues_and_times():
    captions = read_subtitles(FIRST)
    # The file has 44 cues; the first two overlap (0-7.5 s and 3.959-9.96 s).
    assert len(captions) == 44
    assert captions[0] == Caption(0.0, 7.5, "hi my name is Sophie and today I'm going", 2)
    assert captions[1] == Caption(3.959, 9.96, "to make him deep fried rice so one day I", 6)
    assert captions[-1].start == pytest.approx(188.6)
    assert captions[-1].end == pytest.approx(194.57)
    assert captions[-1].text == "enjoy your kimchi fried rice thank you"


def test_real_srt_second_video():
    captions = read_subtitles(SECOND)
    assert len(captions) == 52
    assert captions[-1] == Caption(127.57, 129.63, "you", 206)


def test_bom_crlf_copy_reads_identically(tmp_path):
    original = FIRST.read_text(encoding="utf-8")
    copy = _write(tmp_path, FIRST.name, "\ufeff" + original.replace("\n", "\r\n"))
    assert read_subtitles(copy) == read_subtitles(FIRST)


def test_lone_cr_line_ends(tmp_path):
    original = FIRST.read_text(encoding="utf-8")
    copy = _write(tmp_path, FIRST.name, original.replace("\n", "\r"))
    assert read_subtitles(copy) == read_subtitles(FIRST)


def test_srt_dot_before_milliseconds():
    comma = parse_srt("1\n00:00:01,250 --> 00:00:02,500\nadd rice\n")
    dot = parse_srt("1\n00:00:01.250 --> 00:00:02.500\nadd rice\n")
    assert dot == comma == [Caption(1.25, 2.5, "add rice", 2)]


def test_srt_empty_cues_skipped():
    text = (
        "1\n00:00:01,000 --> 00:00:02,000\n\n"
        "2\n00:00:02,000 --> 00:00:03,000\nadd rice\n\n"
        "3\n00:00:03,000 --> 00:00:04,000\n   \n\n"
        "4\n00:00:04,000 --> 00:00:05,000\nstir\n"
    )
    captions = parse_srt(text)
    assert [caption.text for caption in captions] == ["add rice", "stir"]
    assert [caption.line for caption in captions] == [5, 13]


def test_srt_overlapping_cues_keep_times():
    text = (
        "1\n00:00:01,000 --> 00:00:06,000\nadd the rice\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\nstir\n"
    )
    captions = parse_srt(text)
    assert [(c.start, c.end) for c in captions] == [(1.0, 6.0), (3.0, 4.0)]


def test_srt_out_of_order_cues_sorted():
    text = (
        "2\n00:00:05,000 --> 00:00:06,000\nsecond\n\n"
        "1\n00:00:01,000 --> 00:00:02,000\nfirst\n"
    )
    assert [caption.text for caption in parse_srt(text)] == ["first", "second"]


def test_srt_markup_removed():
    captions = parse_srt("1\n00:00:01,000 --> 00:00:02,000\n{\\an8}<i>add</i> rice &amp; salt\n")
    assert captions[0].text == "add rice & salt"


def test_srt_garbled_cue_names_file_and_line(tmp_path):
    path = _write(
        tmp_path,
        "bad.srt",
        "1\n00:00:01,000 --> 00:00:02,000\nadd rice\n\n"
        "2\n00:00:0x,000 --> 00:00:03,000\nstir\n\n"
        "3\n00:00:04,000 --> 00:00:05,000\nserve\n",
    )
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 5
    assert caught.value.path == str(path)
    assert "bad.srt, line 5" in str(caught.value)


def test_srt_not_subrip_rejected(tmp_path):
    path = _write(tmp_path, "notes.srt", "\n\nthese are not captions\n")
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 3


def test_srt_garbled_timestamp_rejected(tmp_path):
    path = _write(
        tmp_path,
        "garbled.srt",
        "1\n00:00:01,000 --> 00:00:02,000\nadd\n\n2\n00:00:03,000 --> 00:00:1X,500\nrice\n",
    )
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 6
    assert "00:00:1X,500" in caught.value.reason


def test_srt_coordinates_after_timing_accepted():
    captions = parse_srt("1\n00:00:01,000 --> 00:00:02,500 X1:10 X2:20\nadd rice\n")
    assert [(c.start, c.end, c.text) for c in captions] == [(1.0, 2.5, "add rice")]


def test_srt_end_before_start_rejected(tmp_path):
    path = _write(
        tmp_path,
        "reversed.srt",
        "1\n00:00:01,000 --> 00:00:02,000\nadd\n\n2\n00:00:09,000 --> 00:00:03,000\nrice\n",
    )
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 6
    assert "before it starts" in caught.value.reason


def test_invalid_utf8_names_line(tmp_path):
    path = _write(tmp_path, "latin1.srt", "1\n00:00:01,000 --> 00:00:02,000\nsaut".encode() + b"\xe9\n")
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 3
    assert "UTF-8" in caught.value.reason


def test_unknown_suffix_rejected(tmp_path):
    path = _write(tmp_path, "captions.txt", "hello")
    with pytest.raises(ValueError, match="unsupported subtitle suffix"):
        read_subtitles(path)


VTT = (
    "WEBVTT\nKind: captions\nLanguage: en\n\n"
    "NOTE exported by hand\n\n"
    "cue-1\n00:00:01.000 --> 00:00:03.000 align:start position:0%\n<v Cook>add the <c>rice</c></v>\n\n"
    "00:03.000 --> 00:05.500\nand stir\n"
)


def test_vtt_cues_identifiers_and_tags():
    captions = parse_vtt(VTT)
    assert captions == [
        Caption(1.0, 3.0, "add the rice", 8),
        Caption(3.0, 5.5, "and stir", 11),
    ]


def test_vtt_bom_crlf_and_comma(tmp_path):
    text = "\ufeff" + VTT.replace("00:00:01.000", "00:00:01,000").replace("\n", "\r\n")
    path = _write(tmp_path, "cook.vtt", text)
    assert read_subtitles(path) == parse_vtt(VTT)


def test_vtt_rolling_captions_deduplicated():
    # YouTube's automatic WebVTT: each line appears as new text, then again on top of the next
    # cue, with 10 ms cues holding only the old line in between.
    text = (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.000\nadd<00:00:00.500><c> the</c><00:00:01.000><c> rice</c>\n\n"
        "00:00:02.000 --> 00:00:02.010\nadd the rice\n\n"
        "00:00:02.010 --> 00:00:04.000\nadd the rice\nand<00:00:03.000><c> stir</c>\n\n"
        "00:00:04.000 --> 00:00:04.010\nand stir\n\n"
        "00:00:04.010 --> 00:00:06.000\nand stir\nserve\n"
    )
    assert [(c.start, c.text) for c in parse_vtt(text)] == [
        (0.0, "add the rice"),
        (2.01, "and stir"),
        (4.01, "serve"),
    ]


def test_vtt_empty_cue_skipped():
    text = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n\n00:00:02.000 --> 00:00:03.000\nstir\n"
    assert parse_vtt(text) == [Caption(2.0, 3.0, "stir", 5)]


def test_vtt_bad_timestamp_names_line(tmp_path):
    path = _write(
        tmp_path,
        "bad.vtt",
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nadd\n\n00:00:03.000 --> 00:00:0x.000\nrice\n",
    )
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 6
    assert "bad.vtt, line 6" in str(caught.value)


def test_vtt_missing_header_rejected(tmp_path):
    path = _write(tmp_path, "noheader.vtt", "00:00:01.000 --> 00:00:02.000\nadd rice\n")
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 1
    assert "WEBVTT" in caught.value.reason


def test_caption_words_share_duration_by_character():
    # "please add" lasts 4 s over 10 characters: 0.4 s per character.
    words = caption_words([Caption(0.0, 4.0, "please add", 1), Caption(4.0, 8.0, "the rice now", 3)])
    assert [w.text for w in words] == ["please", "add", "the", "rice", "now"]
    assert words[0].start == pytest.approx(0.0)
    assert words[0].end == pytest.approx(2.4)
    assert words[1].start == pytest.approx(2.8)
    assert words[1].end == pytest.approx(4.0)
    # "the rice now" lasts 4 s over 12 characters: 1/3 s per character; "rice" is characters 4-7.
    assert words[3].start == pytest.approx(4.0 + 4 / 3)
    assert words[3].end == pytest.approx(4.0 + 8 / 3)


def test_span_times_inside_words():
    transcript = transcript_from_captions([Caption(10.0, 14.0, "add rice", 1)])
    # 8 characters over 4 s: 0.5 s each; "ric" is characters 4-6.
    assert span_times(transcript, 4, 7) == pytest.approx((12.0, 13.5))
    assert span_times(transcript, 0, 8) == pytest.approx((10.0, 14.0))


def _punctuate(texts):
    # A stand-in punctuation model: two sentences of two words each.
    return [texts[0].capitalize(), texts[1] + ".", texts[2].capitalize(), texts[3] + "."]


def test_hooks_keep_word_times():
    words = caption_words([Caption(0.0, 8.0, "add rice stir it", 1)])
    transcript = build_transcript(
        words,
        restore_punctuation=_punctuate,
        resolve_coreference=lambda texts: ["the rice." if t == "it." else t for t in texts],
    )
    assert transcript.text == "Add rice. Stir the rice."
    assert [w.start for w in transcript.words] == [w.start for w in words]
    assert [w.end for w in transcript.words] == [w.end for w in words]
    # The replacement "the rice." spreads the time of "it" over its 9 characters.
    start, end = span_times(transcript, transcript.text.rindex("rice."), len(transcript.text))
    assert start == pytest.approx(words[3].start + (words[3].end - words[3].start) * 4 / 9)
    assert end == pytest.approx(words[3].end)


def test_hook_changing_word_count_rejected():
    words = caption_words([Caption(0.0, 2.0, "add rice", 1)])
    with pytest.raises(ValueError, match="restore_punctuation hook returned 1 words for 2"):
        build_transcript(words, restore_punctuation=lambda texts: ["add rice."])


def test_srt_cue_without_timing_line_rejected(tmp_path):
    # srt.parse alone would read "2 not a timing line stir" as text of cue 1.
    path = _write(
        tmp_path,
        "garbled.srt",
        "1\n00:00:01,000 --> 00:00:02,000\nadd rice\n\n2\nnot a timing line\nstir\n",
    )
    with pytest.raises(SubtitleError) as caught:
        read_subtitles(path)
    assert caught.value.line == 6
    assert "'not a timing line'" in caught.value.reason


def test_srt_blank_line_inside_cue_tolerated():
    captions = parse_srt(
        "1\n00:00:01,000 --> 00:00:02,000\nadd rice\n\nand salt\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\nstir\n"
    )
    assert [caption.text for caption in captions] == ["add rice and salt", "stir"]


def test_srt_timing_lines_with_arrow_in_text():
    captions = parse_srt(
        "1\n00:00:01,000 --> 00:00:02,000\nsay --> this\n\n2\n00:00:03,000 - > 00:00:04,000\nok\n"
    )
    assert captions == [Caption(1.0, 2.0, "say --> this", 2), Caption(3.0, 4.0, "ok", 6)]
