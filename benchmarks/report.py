"""Timing, machine description and docs/benchmarks.md sections shared by the benchmark scripts."""

import collections
import datetime
import gzip
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

DOC_HEADER = """# Benchmarks

Each section below is written by the script it names (`--write docs/benchmarks.md`), which
replaces only its own section. Every ratio in a section was measured in one run of that
script, on the machine the section describes.
"""


def median_seconds(function, *, min_repeats=3, max_repeats=20, budget_seconds=2.0):
    """Call ``function`` repeatedly and return the median wall time of one call, in seconds.

    ``function`` must block until its work is done (call ``block_until_ready`` on JAX
    outputs). Calls stop after ``max_repeats``, or once ``min_repeats`` calls have run and
    together took longer than ``budget_seconds``. Compilation and warm-up are the caller's job.
    """
    durations = []
    started = time.perf_counter()
    while len(durations) < max_repeats:
        begin = time.perf_counter()
        function()
        durations.append(time.perf_counter() - begin)
        if len(durations) >= min_repeats and time.perf_counter() - started > budget_seconds:
            break
    return statistics.median(durations)


def interleaved_median_seconds(functions, *, min_repeats=3, max_repeats=20, budget_seconds=2.0):
    """Time several functions in turn, round after round; return each one's median, in seconds.

    Alternating the calls exposes every function to the same background load, so the ratios of
    the medians stay meaningful on a shared machine. Rounds stop after ``max_repeats``, or once
    ``min_repeats`` rounds have run and together took longer than ``budget_seconds`` times the
    number of functions. Each function must block until its work is done.
    """
    durations = [[] for _ in functions]
    started = time.perf_counter()
    for round_index in range(max_repeats):
        # Each round starts one function later, so no function always runs right after the
        # same other one (torch's OpenMP threads, for example, spin for a while after a call).
        for offset in range(len(functions)):
            index = (round_index + offset) % len(functions)
            begin = time.perf_counter()
            functions[index]()
            durations[index].append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
        if round_index + 1 >= min_repeats and elapsed > budget_seconds * len(functions):
            break
    return [statistics.median(function_durations) for function_durations in durations]


def xla_event_table(call, *, calls=3, top=15):
    """Profile ``call`` and return a markdown table of the XLA events that take its time.

    Runs ``call`` (already compiled, blocking) ``calls`` times under ``jax.profiler.trace`` and
    sums the durations of each named event of the Perfetto trace. Events nest (a ``while``
    loop contains its body's fusions), so the times of nested rows overlap.
    """
    import jax

    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(calls):
                call()
        trace_path = next(pathlib.Path(folder).rglob("*.trace.json.gz"))
        with gzip.open(trace_path) as stream:
            trace = json.load(stream)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    durations = collections.Counter()
    counts = collections.Counter()
    for event in events:
        name = event.get("name", "")
        # Complete events of XLA's CPU runtime; "$" marks Python frames of the profiler.
        if event.get("ph") == "X" and not name.startswith("$"):
            durations[name] += event.get("dur", 0)
            counts[name] += 1
    rows = [
        [name, f"{total / 1e3 / calls:.2f}", f"{counts[name] / calls:.0f}"]
        for name, total in durations.most_common(top)
    ]
    return markdown_table(["event", "ms per call", "calls per call"], rows)


def cpu_model():
    """Return the CPU model name from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average():
    """Return the 1-minute load average as text, or "n/a" where the OS has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def package_version(name):
    """Return an installed distribution's version, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(packages):
    """Return markdown bullet lines naming the machine, its load and the package versions."""
    memory_gib = "n/a"
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    versions = ", ".join(f"{name} {package_version(name)}" for name in packages)
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, {memory_gib} memory",
        f"- OS: {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- packages: {versions}",
    ]


def markdown_table(headers, rows):
    """Format a list of rows (sequences of cells, already text) as a markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_section(path, name, body):
    """Replace the section ``name`` of the markdown file at ``path`` with ``body``.

    A section runs from ``<!-- name:start -->`` to ``<!-- name:end -->``. A missing file is
    created with a short header, and a missing section is appended at the end.
    """
    path = pathlib.Path(path)
    start_marker = f"<!-- {name}:start -->"
    end_marker = f"<!-- {name}:end -->"
    section = f"{start_marker}\n{body.rstrip()}\n{end_marker}"
    text = path.read_text() if path.exists() else DOC_HEADER
    start = text.find(start_marker)
    end = text.find(end_marker)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(end_marker):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(section, name, path=None):
    """Print a markdown section and, when ``path`` is given, write it as section ``name``."""
    print(section)
    if path:
        write_section(path, name, section)


def format_rate(value):
    """Format a throughput: whole numbers with thousands separators from 100 up ("12,345"),
    three significant digits below."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
