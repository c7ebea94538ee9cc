"""CSV files of an experiment directory, written so that an interrupted run can resume.

results.csv grows by whole rows. Each row is one `write` of a complete line, followed by
flush and fsync, so a killed run leaves either the whole row or none of it. A partial last
line, left by a crash during the write, is dropped when the file is read back. tasks.csv and
the other small tables are rewritten through a temporary file and `os.replace`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dwsa_jax.fileio import write_text_atomic

logger = logging.getLogger(__name__)

RESULT_FIELDS = ("task", "method", "seed", "parameter", "value",
                 "precision", "recall", "f1", "mof")
KEY_FIELDS = ("task", "method", "seed", "parameter", "value")
TASK_FIELDS = ("task", "num_videos", "num_steps", "oce", "repeat_frequency")
CONVERGENCE_FIELDS = ("task", "seed", "epoch", "iteration", "mse")
FAILURE_FIELDS = KEY_FIELDS + ("error",)


def _format_line(fields: Sequence[str], row: Mapping[str, object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([row[name] for name in fields])
    return buffer.getvalue()


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV file written by this module as dicts of strings; a missing file is empty.

    A last line without its newline is an interrupted write and is skipped with a warning.
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        logger.warning("%s: dropping an incomplete last line %r", path, text[cut:][:80])
        text = text[:cut]
    return list(csv.DictReader(io.StringIO(text)))


def write_rows_atomic(path: str | os.PathLike, fields: Sequence[str],
                      rows: Iterable[Mapping[str, object]]) -> None:
    """Rewrite a whole CSV file through a temporary file and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _format_line(fields, {name: name for name in fields})
    text += "".join(_format_line(fields, row) for row in rows)
    write_text_atomic(path, text)


class AppendOnlyTable:
    """A CSV file that grows one complete, synced row at a time.

    Attributes:
      path: the CSV file.
      fields: its columns, written as the header when the file is created.
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str]):
        self.path = Path(path)
        self.fields = tuple(fields)
        rows = read_rows(self.path)
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open() as stream:
                header = tuple(next(csv.reader(stream), ()))
            if header != self.fields:
                raise ValueError(
                    f"{self.path} has columns {header}, expected {self.fields}; it was written "
                    "by another tool or version, so use a new output directory"
                )
            # Rewrite without a partial last line, so that appends start on a fresh line.
            write_rows_atomic(self.path, self.fields, rows)
        else:
            write_rows_atomic(self.path, self.fields, [])
        self.rows = rows

    def append(self, row: Mapping[str, object]) -> None:
        """Append one row as a single write, then flush and fsync."""
        line = _format_line(self.fields, row)
        with self.path.open("a") as stream:
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())
        self.rows.append({name: str(row[name]) for name in self.fields})


class ResultsTable(AppendOnlyTable):
    """results.csv: one row per (task, method, seed, parameter, value) run."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, RESULT_FIELDS)
        self.done = {self.key(row) for row in self.rows}

    @staticmethod
    def key(row: Mapping[str, object]) -> tuple[str, ...]:
        """Return the identity of a run: its task, method, seed, parameter and value."""
        return tuple(str(row[name]) for name in KEY_FIELDS)

    def append(self, row: Mapping[str, object]) -> None:
        key = self.key(row)
        if key in self.done:
            raise ValueError(f"results.csv already contains the run {key}; skip finished runs")
        super().append(row)
        self.done.add(key)
