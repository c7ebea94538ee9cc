"""Throughput of DWSA forward + backward: jitted, vmapped JAX against a per-pair numba loop.

Run from the repository root:

    .venv/bin/python benchmarks/bench_dwsa.py            # full run, prints markdown
    .venv/bin/python benchmarks/bench_dwsa.py --quick    # a few seconds per row
    .venv/bin/python benchmarks/bench_dwsa.py --write docs/benchmarks.md

The JAX side is ``jax.jit(jax.vmap(jax.value_and_grad(lambda c: dwsa(c, gamma))))`` on a
batch of cost matrices, in float32 and float64. The baseline is the naive O(q * N^2) float64
numba implementation in ``benchmarks/baselines/numba_dwsa.py``, called once per pair from
Python on the same matrices. Compilation and warm-up are excluded from every timing, and each
time is the median of repeated calls. The numba, float32 and float64 calls of a row alternate,
so that all three see the same load.

The numba loop costs the same per pair at every batch size. So it runs over the first pairs
of the batch, as many as fit its time budget, and its pairs per second stand for the whole
batch. Table rows give the number of pairs it timed.
"""

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

# float64 must be enabled before any array is created; float32 inputs stay float32.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.baselines import numba_dwsa  # noqa: E402
from dwsa_jax.alignment import dwsa  # noqa: E402

SECTION = "bench_dwsa"
SIZES = [(7, 17), (15, 25), (100, 20), (300, 40)]
BATCHES = [1, 64, 1024]
# (q, q_text, batch) -> the minimum ratio of JAX float32 to numba throughput that is the goal.
TARGETS = {(15, 25, 1024): 30.0, (300, 40, 64): 20.0}
# The "N doubles" series: q fixed, q_text doubling, so N = 2 * q_text + 1 about doubles.
SCALING_Q = 15
SCALING_TEXT = [10, 20, 40, 80, 160]
SCALING_BATCH = 64


def make_costs(rng, batch, num_rows, num_text):
    """Return (batch, q, 2 * q_text + 1) float64 cost matrices shaped like real DWSA inputs.

    Prototype columns hold 1 - cosine similarity of random unit vectors, in [0, 2]; empty-slot
    columns hold delta_e = 1, the default.
    """
    dim = 64
    visual = rng.normal(size=(batch, num_rows, dim))
    text = rng.normal(size=(batch, num_text, dim))
    visual /= np.linalg.norm(visual, axis=-1, keepdims=True)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    costs = np.ones((batch, num_rows, 2 * num_text + 1))
    costs[:, :, 1::2] = 1.0 - np.einsum("bqd,bmd->bqm", visual, text)
    return costs


def compile_jax(costs, dtype, gamma):
    """Compile jitted vmapped value_and_grad for ``costs``; return (call, compile seconds).

    ``call()`` runs one batch and blocks until its outputs are ready.
    """
    function = jax.jit(jax.vmap(jax.value_and_grad(lambda cost: dwsa(cost, gamma))))
    inputs = jnp.asarray(costs, dtype=dtype)
    begin = time.perf_counter()
    jax.block_until_ready(function(inputs))
    compile_seconds = time.perf_counter() - begin

    def call():
        jax.block_until_ready(function(inputs))

    return call, compile_seconds


def prepare_numba(costs, gamma, budget):
    """Compile the numba baseline; return (call over the first pairs, number of those pairs)."""
    numba_dwsa.dwsa_value_and_grad(costs[0], gamma)  # numba compiles on the first call
    begin = time.perf_counter()
    numba_dwsa.dwsa_value_and_grad(costs[0], gamma)
    one_pair = time.perf_counter() - begin
    # Enough pairs for about a third of the budget per call, so that three calls fit.
    num_pairs = int(min(len(costs), max(1, budget / 3 / max(one_pair, 1e-9))))
    subset = costs[:num_pairs]

    def call():
        for cost in subset:
            numba_dwsa.dwsa_value_and_grad(cost, gamma)

    return call, num_pairs


def measure_row(rng, num_rows, num_text, batch, gamma, budget):
    """Time numba, JAX float32 and JAX float64 on one batch; return a dict of results.

    The three calls alternate round by round, so that all see the same background load.
    """
    costs = make_costs(rng, batch, num_rows, num_text)
    numba_call, numba_pairs = prepare_numba(costs, gamma, budget)
    f32_call, f32_compile = compile_jax(costs, jnp.float32, gamma)
    f64_call, f64_compile = compile_jax(costs, jnp.float64, gamma)
    numba_seconds, f32_seconds, f64_seconds = report.interleaved_median_seconds(
        [numba_call, f32_call, f64_call], budget_seconds=budget
    )
    return {
        "q": num_rows,
        "q_text": num_text,
        "batch": batch,
        "numba_rate": numba_pairs / numba_seconds,
        "numba_pairs": numba_pairs,
        "f32_rate": batch / f32_seconds,
        "f64_rate": batch / f64_seconds,
        "f32_compile": f32_compile,
        "f64_compile": f64_compile,
    }


def throughput_table(rows):
    """Format the throughput rows as markdown, with ratios and target checks."""
    headers = [
        "q", "q_text", "pairs", "numba f64 pairs/s (pairs timed)", "JAX f32 pairs/s",
        "JAX f64 pairs/s", "f32 / numba", "f64 / numba", "compile s (f32, f64)", "target",
    ]
    cells = []
    for row in rows:
        f32_ratio = row["f32_rate"] / row["numba_rate"]
        f64_ratio = row["f64_rate"] / row["numba_rate"]
        target = TARGETS.get((row["q"], row["q_text"], row["batch"]))
        if target is None:
            verdict = ""
        else:
            verdict = f">= {target:.0f}x: {'met' if f32_ratio >= target else 'NOT met'}"
        cells.append([
            row["q"], row["q_text"], row["batch"],
            f"{report.format_rate(row['numba_rate'])} ({row['numba_pairs']})",
            report.format_rate(row["f32_rate"]), report.format_rate(row["f64_rate"]),
            f"{f32_ratio:.1f}x", f"{f64_ratio:.1f}x",
            f"{row['f32_compile']:.1f}, {row['f64_compile']:.1f}", verdict,
        ])
    return report.markdown_table(headers, cells)


def scaling_table(rows):
    """Format the "N doubles" rows: microseconds per pair and the growth from the row above."""
    headers = [
        "q", "q_text", "N", "numba f64 us/pair", "growth", "JAX f32 us/pair", "growth",
        "JAX f64 us/pair", "growth",
    ]
    cells = []
    previous = None
    for row in rows:
        times = [1e6 / row["numba_rate"], 1e6 / row["f32_rate"], 1e6 / row["f64_rate"]]
        cell = [row["q"], row["q_text"], 2 * row["q_text"] + 1]
        for index, value in enumerate(times):
            growth = "" if previous is None else f"{value / previous[index]:.2f}x"
            cell += [f"{value:,.1f}", growth]
        cells.append(cell)
        previous = times
    return report.markdown_table(headers, cells)


def build_section(args, rows, scaling_rows, load_before, load_after):
    """Return the markdown section: machine, command, both tables and the load."""
    command = "python benchmarks/bench_dwsa.py" + (" --quick" if args.quick else "")
    lines = [
        "## DWSA forward + backward throughput",
        "",
        f"Command: `{command}`, gamma = {args.gamma:g}. Measured on:",
        "",
        *report.machine_lines(["jax", "jaxlib", "numba", "numpy"]),
        f"- 1-minute load average: {load_before} before, {load_after} after the run",
        "",
        "Pairs per second of value and gradient together. JAX:"
        " `jax.jit(jax.vmap(jax.value_and_grad(lambda c: dwsa(c, gamma))))` over the batch."
        " numba: the O(q * N^2) float64 baseline called once per pair in a Python loop, timed"
        " on the first pairs of the same batch (count in brackets). Compilation excluded,"
        " median of repeated calls, the three implementations of a row called in turn.",
        "",
        throughput_table(rows),
        "",
        f"### Time per pair as N doubles (q = {SCALING_Q}, {SCALING_BATCH} pairs per batch)",
        "",
        "N = 2 * q_text + 1 columns. An O(q * N) algorithm should about double per row, the"
        " O(q * N^2) baseline about quadruple.",
        "",
        scaling_table(scaling_rows),
    ]
    return "\n".join(lines)


def profile_ops(num_rows, num_text, batch, gamma, *, dtype=jnp.float32):
    """Return a markdown table of the XLA CPU operations that take the time of one batch."""
    costs = make_costs(np.random.default_rng(0), batch, num_rows, num_text)
    call, _ = compile_jax(costs, dtype, gamma)
    title = (f"XLA CPU events of one call at q = {num_rows}, q_text = {num_text}, "
             f"{batch} pairs, {jnp.dtype(dtype).name}:")
    return title + "\n\n" + report.xla_event_table(call)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run: 0.3 s time budget per measurement instead of 2 s, "
                             "and no untargeted rows at q >= 100")
    parser.add_argument("--gamma", type=float, default=1e-3,
                        help="soft-min temperature of DWSA (default 1e-3, the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cost matrices")
    parser.add_argument("--profile", metavar="Q,Q_TEXT,PAIRS",
                        help="only profile one size (e.g. 15,25,1024) and print its XLA ops")
    parser.add_argument("--write", metavar="PATH",
                        help="replace this script's section of a markdown file, e.g. "
                             "docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    budget = 0.3 if args.quick else 2.0
    rng = np.random.default_rng(args.seed)
    if args.profile:
        num_rows, num_text, batch = (int(value) for value in args.profile.split(","))
        print(profile_ops(num_rows, num_text, batch, args.gamma))
        return 0
    load_before = report.load_average()

    rows = []
    for num_rows, num_text in SIZES:
        for batch in BATCHES:
            if args.quick and num_rows >= 100 and (num_rows, num_text, batch) not in TARGETS:
                continue  # --quick skips the large sizes' rows that carry no target
            row = measure_row(rng, num_rows, num_text, batch, args.gamma, budget)
            print(f"# q={num_rows} q_text={num_text} pairs={batch}: "
                  f"f32 {row['f32_rate'] / row['numba_rate']:.1f}x numba", file=sys.stderr)
            rows.append(row)
    scaling_rows = []
    for num_text in SCALING_TEXT:
        scaling_rows.append(
            measure_row(rng, SCALING_Q, num_text, SCALING_BATCH, args.gamma, budget))

    section = build_section(args, rows, scaling_rows, load_before, report.load_average())
    report.publish(section, SECTION, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
