"""Reading SubRip (.srt) and WebVTT (.vtt) caption files into timed captions.

Parsing is delegated to the maintained `srt` and `webvtt-py` packages. This module adds the
tolerance that automatic captions need. It accepts a byte-order mark, CRLF or CR line ends, and
a '.' or ',' before the milliseconds in either format. It skips empty cues, keeps overlapping
cues, and drops the repeated line of YouTube's rolling captions. Every parse failure becomes a `SubtitleError`
that names the file and the line.
"""

from __future__ import annotations

import html
import logging
import os
import re
from typing import NamedTuple

import srt
import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError
from webvtt.models import Timestamp

logger = logging.getLogger(__name__)

SUBTITLE_SUFFIXES = (".srt", ".vtt")

# Markup that carries no spoken words: HTML-like tags (<i>, <c>, <00:00:01.500>) and
# SubStation override blocks such as {\an8} that some SRT exporters leave in.
_MARKUP = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_SPACES = re.compile(r"\s+")
_TIMING_SEPARATOR = "-->"
_COMMA_DECIMAL = re.compile(r"(\d),(\d)")


class Caption(NamedTuple):
    """One caption cue.

    Attributes:
      start: start time in seconds.
      end: end time in seconds (>= start).
      text: spoken text of the cue, markup removed, lines joined by single spaces.
      line: 1-based line number of the cue's timing line in its file.
    """

    start: float
    end: float
    text: str
    line: int


class SubtitleError(ValueError):
    """A caption file that cannot be read, with the file and the 1-based line at fault."""

    def __init__(self, path: str | os.PathLike, line: int, reason: str):
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")


def read_subtitles(path: str | os.PathLike) -> list[Caption]:
    """Read a SubRip or WebVTT file, chosen by its suffix.

    Args:
      path: a `.srt` or `.vtt` file, UTF-8 with or without a byte-order mark.

    Returns:
      Captions sorted by start time (stable, so cues that start together keep file order),
      without empty cues.

    Raises:
      SubtitleError: the file is not valid UTF-8, a cue is malformed, or a cue ends before it
        starts. The message names the file and the line.
      ValueError: the suffix is neither `.srt` nor `.vtt`.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUBTITLE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported subtitle suffix {suffix!r}; convert the file to .srt or .vtt"
        )
    text = _decode(path)
    if suffix == ".srt":
        return parse_srt(text, path)
    return parse_vtt(text, path)


def parse_srt(text: str, path: str = "<string>") -> list[Caption]:
    """Parse SubRip text.

    Args:
      text: the file's content; a leading byte-order mark and any line ends are accepted.
      path: file name used in error messages.

    Returns:
      Captions as in `read_subtitles`.

    Raises:
      SubtitleError: a cue block does not parse or ends before it starts.
    """
    text = _normalise_line_ends(text)
    try:
        cues = list(srt.parse(text))
    except srt.SRTParseError as error:
        # The parser reports the character offset where unreadable content begins; point at
        # its first non-blank line.
        offset = error.expected_start
        while offset < len(text) and text[offset].isspace():
            offset += 1
        line = _line_number(text, offset)
        bad_line = text[offset:].split("\n", 1)[0]
        raise SubtitleError(
            path, line, f"invalid SubRip cue starting with {bad_line!r}; fix or remove this cue"
        ) from error
    except ValueError as error:  # timestamps whose fields overflow timedelta
        raise SubtitleError(path, 1, f"invalid SubRip timestamp ({error})") from error

    # srt.parse builds one cue per match of srt.SRT_REGEX, whose group 2 is the start time.
    timing_lines = [_line_number(text, match.start(2)) for match in srt.SRT_REGEX.finditer(text)]
    if len(timing_lines) != len(cues):
        timing_lines = _timing_line_numbers(text)
    lines = text.split("\n")
    timed_lines = []
    for number, cue in enumerate(cues):
        line = timing_lines[number] if number < len(timing_lines) else 1
        _check_srt_timing(lines[line - 1], path, line)
        start, end = cue.start.total_seconds(), cue.end.total_seconds()
        content = cue.content.split("\n")
        _check_srt_content(content, line, path)
        timed_lines.append((start, end, content, line))
    return _make_captions(timed_lines, path)


def parse_vtt(text: str, path: str = "<string>") -> list[Caption]:
    """Parse WebVTT text.

    Timing lines are checked one by one first, because webvtt-py's tolerant mode drops a cue
    with an unreadable timestamp without saying so.

    Args:
      text: the file's content; a leading byte-order mark and any line ends are accepted, and a
        ',' before the milliseconds is read as '.'.
      path: file name used in error messages.

    Returns:
      Captions as in `read_subtitles`.

    Raises:
      SubtitleError: the WEBVTT header is missing, a timing line does not parse, or a cue ends
        before it starts.
    """
    lines = _normalise_line_ends(text).split("\n")
    if not lines or not lines[0].startswith("WEBVTT"):
        raise SubtitleError(
            path, 1, f"a WebVTT file must start with 'WEBVTT', found {lines[0][:40]!r}"
        )
    timing_lines = []
    for index, line in enumerate(lines):
        if _TIMING_SEPARATOR not in line:
            continue
        lines[index] = line = _vtt_timing_with_dots(line)
        _check_vtt_timing(line, path, index + 1)
        timing_lines.append(index + 1)

    try:
        document = webvtt.WebVTT.from_string("\n".join(lines))
    except (MalformedFileError, MalformedCaptionError) as error:
        raise SubtitleError(path, 1, f"invalid WebVTT file ({error})") from error
    if len(document.captions) != len(timing_lines):
        # NOTE: only reachable if webvtt-py drops a block whose timing line passed the check
        # above. The parser does not say which block, so the first timing line is reported.
        raise SubtitleError(
            path,
            timing_lines[0] if timing_lines else 1,
            f"webvtt-py read {len(document.captions)} cues from {len(timing_lines)} timing "
            "lines; check that each cue is preceded by an empty line",
        )

    timed_lines = []
    for caption, line in zip(document.captions, timing_lines):
        start = caption.start_time.in_milliseconds() / 1000.0
        end = caption.end_time.in_milliseconds() / 1000.0
        timed_lines.append((start, end, caption.lines, line))
    return _make_captions(timed_lines, path)


def _decode(path: str) -> str:
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SubtitleError(
            path, line, f"invalid UTF-8 byte 0x{data[error.start]:02x}; re-encode the file as UTF-8"
        ) from error


def _normalise_line_ends(text: str) -> str:
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _line_number(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _timing_line_numbers(text: str) -> list[int]:
    return [n + 1 for n, line in enumerate(text.split("\n")) if _TIMING_SEPARATOR in line]


def _check_srt_content(content: list[str], timing_line: int, path: str) -> None:
    """Reject a cue index inside a cue's text, the sign of a cue with a garbled timing line.

    The srt package tolerates blank lines inside cues. When no valid cue follows, it keeps the
    text after an empty line in the cue above, so "2" followed by an unreadable timing line
    would be read as words of the previous cue.
    """
    for index in range(1, len(content)):
        if content[index - 1].strip() or not content[index].strip().isdigit():
            continue
        expected = content[index + 1] if index + 1 < len(content) else ""
        raise SubtitleError(
            path,
            timing_line + index + 2,
            f"cue {content[index].strip()} has no valid timing line (found {expected!r}); "
            "write it as 'HH:MM:SS,mmm --> HH:MM:SS,mmm'",
        )


def _vtt_timing_with_dots(line: str) -> str:
    # "00:00:01,500 --> 00:00:02,000" (SubRip style) -> "00:00:01.500 --> 00:00:02.000";
    # the cue settings after the end time are left alone.
    left, _, right = line.partition(_TIMING_SEPARATOR)
    end_time, space, settings = right.strip().partition(" ")
    left = _COMMA_DECIMAL.sub(r"\1.\2", left.strip())
    end_time = _COMMA_DECIMAL.sub(r"\1.\2", end_time)
    return f"{left} {_TIMING_SEPARATOR} {end_time}{space}{settings}"


# The srt package reads "00:00:1X,500" as 1 s and keeps "X,500" as display coordinates, so
# timing lines are checked against the strict format first. The arrow may be written "- >", as
# srt accepts, and coordinates may follow a space.
_SRT_TIMING = re.compile(
    r"^\s*\d+:\d{2}:\d{2}[,.]\d{1,3} *-[ -] *> *\d+:\d{2}:\d{2}[,.]\d{1,3}(\s.*)?$"
)


def _check_srt_timing(line: str, path: str, line_number: int) -> None:
    if not _SRT_TIMING.match(line):
        raise SubtitleError(
            path, line_number,
            f"invalid SubRip timing line {line.strip()!r}; write it as "
            "'HH:MM:SS,mmm --> HH:MM:SS,mmm'",
        )


def _check_vtt_timing(line: str, path: str, line_number: int) -> None:
    left, _, right = line.partition(_TIMING_SEPARATOR)
    fields = right.split()
    for value in (left.strip(), fields[0] if fields else ""):
        try:
            Timestamp.from_string(value)
        except MalformedCaptionError as error:
            raise SubtitleError(
                path, line_number, f"invalid WebVTT timestamp {value!r} in {line.strip()!r}"
            ) from error


def _make_captions(
    cues: list[tuple[float, float, list[str], int]], path: str
) -> list[Caption]:
    """Clean cue text, drop rolling repeats and empty cues, and sort by start time.

    Args:
      cues: (start seconds, end seconds, text lines, timing line number) in file order.
      path: file name used in error messages.
    """
    captions = []
    previous_line = ""
    for start, end, raw_lines, line in cues:
        if end < start:
            raise SubtitleError(
                path, line, f"cue ends at {end:.3f} s before it starts at {start:.3f} s; fix its times"
            )
        lines = [_clean_text(raw) for raw in raw_lines]
        lines = [text for text in lines if text]
        # YouTube's rolling captions repeat the previous cue's last line as the first line of
        # the next cue, and in 10 ms cues that contain only that line. The earlier cue has
        # already timed those words.
        while lines and lines[0] == previous_line:
            lines.pop(0)
        if raw_lines:
            last = [_clean_text(raw) for raw in raw_lines if _clean_text(raw)]
            previous_line = last[-1] if last else previous_line
        if lines:
            captions.append(Caption(start, end, " ".join(lines), line))
    if len(captions) < len(cues):
        logger.debug("%s: skipped %d empty or repeated cues", path, len(cues) - len(captions))
    return sorted(captions, key=lambda caption: caption.start)


def _clean_text(raw: str) -> str:
    text = html.unescape(_MARKUP.sub("", raw))
    return _SPACES.sub(" ", text).strip()
