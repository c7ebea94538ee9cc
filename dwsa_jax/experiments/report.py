"""Tables (markdown) and figures (PNG) of an experiment folder, rebuilt from its files.

Everything here reads results.csv, tasks.csv, convergence.csv and labels/ only, so the report
can be regenerated without rerunning anything. F1 is averaged over tasks per seed, then shown
as mean +- standard deviation over seeds (the supplement's convention), in percent.

Tables: table1_f1_by_K.md (methods x K), table2_time_stamp_gain.md (per task: gain of
time-stamp prototypes with OCE and repeat frequency), table3_sopl_iterations.md (F1 against p),
table4_narration.md (F1 per narration mode). report.md contains them all.
Figures: fig1_sopl_convergence.png, fig2_background_ratio.png, fig3_delta_e.png,
fig4_timelines.png.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from dwsa_jax import fileio, metrics, plotting
from dwsa_jax.experiments import plan, store
from dwsa_jax.experiments.runner import (CONVERGENCE_FILE, LABELS_DIR, RESULTS_FILE,
                                         TASKS_FILE, load_labels)

logger = logging.getLogger(__name__)

TABLE_FILES = {
    "K": "table1_f1_by_K.md",
    "gain": "table2_time_stamp_gain.md",
    "p": "table3_sopl_iterations.md",
    "narration": "table4_narration.md",
}
REPORT_FILE = "report.md"
FIGURE_FILES = {
    "convergence": "fig1_sopl_convergence.png",
    "b": "fig2_background_ratio.png",
    "delta_e": "fig3_delta_e.png",
    "timelines": "fig4_timelines.png",
}
NUM_TIMELINE_VIDEOS = 3


class Results:
    """The rows of results.csv, indexed for averaging.

    Attributes:
      scores: (method, parameter, value) -> seed -> task -> {"precision", "recall", "f1",
        "mof"} as floats.
      tasks: task ids in file order.
      failed: rows with NaN scores (training failed); they are left out of every average.
    """

    def __init__(self, rows: Sequence[dict[str, str]]):
        self.scores = defaultdict(lambda: defaultdict(dict))
        self.tasks = []
        self.failed = []
        for row in rows:
            fields = {name: float(row[name]) for name in ("precision", "recall", "f1", "mof")}
            if not np.isfinite(fields["f1"]):
                self.failed.append(row)
                continue
            self.scores[(row["method"], row["parameter"], row["value"])][row["seed"]][row["task"]] = fields
            if row["task"] not in self.tasks:
                self.tasks.append(row["task"])

    def per_seed(self, method: str, parameter: str, value: str, field: str = "f1") -> np.ndarray:
        """Return the field averaged over tasks, one value per seed that has the run."""
        by_seed = self.scores.get((method, parameter, value), {})
        return np.asarray([np.mean([s[field] for s in tasks.values()])
                           for tasks in by_seed.values()], dtype=np.float64)

    def per_task(self, method: str, parameter: str, value: str, field: str = "f1") -> dict:
        """Return task -> the field averaged over seeds."""
        values = defaultdict(list)
        for tasks in self.scores.get((method, parameter, value), {}).values():
            for task, fields in tasks.items():
                values[task].append(fields[field])
        return {task: float(np.mean(v)) for task, v in values.items()}

    def values(self, method: str, parameter: str) -> list[str]:
        """Return the values of a parameter run for a method, numeric ones sorted."""
        found = [value for (m, p, value) in self.scores if m == method and p == parameter]
        numeric = sorted((v for v in found if _is_number(v)), key=float)
        return numeric + [v for v in found if not _is_number(v)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def mean_std(values: np.ndarray) -> str:
    """Format fractions as "mean +- std" in percent, or "-" when there are none."""
    if values.size == 0:
        return "-"
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{100 * values.mean():.2f} ± {100 * std:.2f}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                    align: Sequence[str] | None = None) -> str:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _failure_note(results: Results, parameter: str) -> str:
    """Return a sentence counting the failed runs of a parameter, or "" when there are none."""
    failed = [row for row in results.failed if row["parameter"] == parameter]
    if not failed:
        return ""
    return (f"\n\n{len(failed)} runs of this table failed (training loss not finite, see "
            "failures.csv); each mean covers the tasks whose run succeeded.")


def _num_seeds(results: Results) -> int:
    return len({seed for by_seed in results.scores.values() for seed in by_seed})


def table_methods_by_k(results: Results) -> str:
    """Table 1: F1 (mean ± std over seeds of the mean over tasks) per method and K."""
    values = [v for v in results.values("kmeans", "K") if v != plan.GROUND_TRUTH_K]
    columns = ([plan.GROUND_TRUTH_K] if plan.GROUND_TRUTH_K in results.values("kmeans", "K")
               else []) + values
    header = ["method"] + ["K = key-steps" if v == plan.GROUND_TRUTH_K else f"K = {v}"
                           for v in columns]
    rows = [[method] + [mean_std(results.per_seed(method, "K", v)) for v in columns]
            for method in plan.METHODS]
    return ("## Table 1: F1 (%) per method and number of prototypes K\n\n"
            f"Mean ± std over {_num_seeds(results)} seeds of the F1 averaged over "
            f"{len(results.tasks)} tasks; b = 0.4, p = 5, delta_e = 1.\n\n"
            + _markdown_table(header, rows) + _failure_note(results, "K"))


def table_time_stamp_gain(results: Results, task_rows: Sequence[dict[str, str]]) -> str:
    """Table 2: per task, F1 of kmeans and SOPL (visual), relative gain, OCE and R."""
    kmeans = results.per_task("kmeans", "K", plan.GROUND_TRUTH_K)
    sopl = results.per_task("sopl", "K", plan.GROUND_TRUTH_K)
    dwsa = results.per_task("sopl+dwsa", "K", plan.GROUND_TRUTH_K)
    statistics = {row["task"]: row for row in task_rows}
    ordered = sorted((t for t in kmeans if t in sopl and t in statistics),
                     key=lambda t: float(statistics[t]["oce"]))
    rows, gains, oces, repeats = [], [], [], []
    for task in ordered:
        gain = 100 * (sopl[task] - kmeans[task]) / kmeans[task] if kmeans[task] > 0 else np.nan
        oce = 100 * float(statistics[task]["oce"])
        repeat = 100 * float(statistics[task]["repeat_frequency"])
        gains.append(gain), oces.append(oce), repeats.append(repeat)
        rows.append([task, f"{100 * kmeans[task]:.2f}", f"{100 * sopl[task]:.2f}",
                     f"{gain:.1f}", f"{100 * dwsa[task]:.2f}" if task in dwsa else "-",
                     f"{oce:.1f}", f"{repeat:.1f}"])
    text = ("## Table 2: gain of time-stamp prototypes per task\n\n"
            "F1 (%) at K = key-steps, mean over seeds; gain = relative F1 gain (%) of SOPL "
            "(visual) over kmeans (visual); OCE and repeat frequency (%) measured on the "
            "annotation.\n\n"
            + _markdown_table(["task", "kmeans", "SOPL", "gain", "sopl+dwsa", "OCE",
                               "repeat freq."], rows))
    if len(rows) >= 3:
        rho_oce = stats.spearmanr(gains, oces).statistic
        rho_repeat = stats.spearmanr(gains, repeats).statistic
        text += (f"\n\nSpearman rank correlation of the gain with OCE: {rho_oce:.2f}; with "
                 f"the repeat frequency: {rho_repeat:.2f} ({len(rows)} tasks).")
    return text


def table_sopl_iterations(results: Results) -> str:
    """Table 3: F1 of sopl+dwsa against the number of SOPL iterations p."""
    rows = [[f"p = {v}", mean_std(results.per_seed("sopl+dwsa", "p", v))]
            for v in results.values("sopl+dwsa", "p")]
    return ("## Table 3: F1 (%) of sopl+dwsa against SOPL iterations p\n\n"
            "Mean ± std over seeds of the F1 averaged over tasks; K = key-steps.\n\n"
            + _markdown_table(["p", "F1"], rows) + _failure_note(results, "p"))


def table_narration(results: Results) -> str:
    """Table 4: F1 of sopl+dwsa per narration mode, or a note when none was run."""
    title = "## Table 4: F1 (%) of sopl+dwsa per narration mode\n\n"
    modes = results.values("sopl+dwsa", "narration")
    if not modes:
        return (title + "Not run: narration modes need subtitles (`dwsa-jax experiment --data "
                "DIR --processed DIR --subtitles DIR --embedder NAME`). Simulated tasks have "
                "phrases but no subtitles.")
    rows = [[mode, mean_std(results.per_seed("sopl+dwsa", "narration", mode))] for mode in modes]
    return (title + "Mean ± std over seeds of the F1 averaged over tasks.\n\n"
            + _markdown_table(["narration", "F1"], rows) + _failure_note(results, "narration"))


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=80)
    logger.info("wrote %s", path)
    return path


def figure_convergence(rows: Sequence[dict[str, str]], path: Path) -> Path | None:
    """Figure 1: SOPL mean squared error against iteration, one line per training epoch."""
    if not rows:
        return None
    seed = min(row["seed"] for row in rows)
    curves = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["seed"] == seed:
            curves[row["task"]][int(row["epoch"])].append((int(row["iteration"]), float(row["mse"])))
    tasks = list(curves)
    columns = min(3, len(tasks))
    lines = -(-len(tasks) // columns)
    figure = Figure(figsize=(3.6 * columns, 2.8 * lines), layout="constrained")
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax, task in zip(axes, tasks):
        for epoch, points in sorted(curves[task].items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".",
                    label=f"epoch {epoch}")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("SOPL iteration")
        ax.set_ylabel("MSE")
        ax.legend(fontsize=6)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    figure.suptitle(f"SOPL error per iteration, first batch, seed {seed}", fontsize=9)
    return _save(figure, path)


def figure_background_ratio(results: Results, path: Path) -> Path | None:
    """Figure 2: precision, recall and F1 of sopl+dwsa against b; F1 of the other methods."""
    values = results.values("sopl+dwsa", "b")
    if not values:
        return None
    b = [float(v) for v in values]
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    for field in ("precision", "recall", "f1"):
        means = [100 * results.per_seed("sopl+dwsa", "b", v, field).mean() for v in values]
        left.plot(b, means, marker="o", label=field)
    left.set_title("sopl+dwsa", fontsize=9)
    for method in plan.METHODS:
        method_values = results.values(method, "b")
        means = [100 * results.per_seed(method, "b", v).mean() for v in method_values]
        right.plot([float(v) for v in method_values], means, marker="o", label=method)
    right.set_title("F1 per method", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("background ratio b")
        ax.set_ylabel("%")
        ax.legend(fontsize=7)
    return _save(figure, path)


def figure_delta_e(results: Results, path: Path) -> Path | None:
    """Figure 3: F1 of sopl+dwsa against the empty-slot cost delta_e, mean ± std over seeds."""
    values = results.values("sopl+dwsa", "delta_e")
    if not values:
        return None
    per_seed = [results.per_seed("sopl+dwsa", "delta_e", v) for v in values]
    means = np.asarray([100 * s.mean() for s in per_seed])
    stds = np.asarray([100 * s.std(ddof=1) if s.size > 1 else 0.0 for s in per_seed])
    figure = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = figure.subplots()
    ax.errorbar([float(v) for v in values], means, yerr=stds, marker="o", capsize=3)
    ax.set_xlabel("empty-slot cost delta_e (1 - cos units)")
    ax.set_ylabel("F1 (%)")
    ax.set_title("sopl+dwsa", fontsize=9)
    return _save(figure, path)


def figure_timelines(out_dir: Path, path: Path) -> Path | None:
    """Figure 4: annotated and predicted key-steps of a few videos of the first task."""
    task_dirs = sorted(p for p in (out_dir / LABELS_DIR).glob("*/seed*") if p.is_dir())
    if not task_dirs:
        return None
    folder = task_dirs[0]
    predictions, steps = {}, {}
    for method in plan.METHODS:
        file = folder / f"{method}.npz"
        if file.is_file():
            predictions[method], steps = load_labels(file)
    vids = sorted(steps)[:NUM_TIMELINE_VIDEOS]
    if not vids or not predictions:
        return None
    frames = {m: [metrics.segments_to_frames(labels[v]) for v in vids]
              for m, labels in predictions.items()}
    truth = [metrics.steps_to_frames([tuple(r) for r in steps[v]], len(frames[next(iter(frames))][i]))
             for i, v in enumerate(vids)]
    return plotting.plot_timelines(
        path, vids, truth, frames,
        title=f"task {folder.parent.name}, {folder.name}: annotated and predicted key-steps",
    )


def write_report(out_dir: str | Path) -> dict[str, Path]:
    """Write every table and figure of an experiment folder; return name -> path written."""
    out_dir = Path(out_dir)
    results = Results(store.read_rows(out_dir / RESULTS_FILE))
    task_rows = store.read_rows(out_dir / TASKS_FILE)
    tables = {
        "K": table_methods_by_k(results),
        "gain": table_time_stamp_gain(results, task_rows),
        "p": table_sopl_iterations(results),
        "narration": table_narration(results),
    }
    written = {}
    for name, text in tables.items():
        written[name] = out_dir / TABLE_FILES[name]
        fileio.write_text_atomic(written[name], text + "\n")

    figures = {
        "convergence": figure_convergence(store.read_rows(out_dir / CONVERGENCE_FILE),
                                          out_dir / FIGURE_FILES["convergence"]),
        "b": figure_background_ratio(results, out_dir / FIGURE_FILES["b"]),
        "delta_e": figure_delta_e(results, out_dir / FIGURE_FILES["delta_e"]),
        "timelines": figure_timelines(out_dir, out_dir / FIGURE_FILES["timelines"]),
    }
    written.update({name: p for name, p in figures.items() if p is not None})

    parts = ["# Experiment report", ""]
    if results.failed:
        runs = ", ".join("/".join(store.ResultsTable.key(row)) for row in results.failed[:10])
        parts += [f"{len(results.failed)} runs failed because their training loss was not finite "
                  f"(see failures.csv) and are left out of the averages below: {runs}"
                  + (", ..." if len(results.failed) > 10 else "") + ".", ""]
    parts += [tables[name] + "\n" for name in tables]
    parts += [f"![{name}]({FIGURE_FILES[name]})\n" for name, p in figures.items() if p is not None]
    written["report"] = out_dir / REPORT_FILE
    fileio.write_text_atomic(written["report"], "\n".join(parts))
    return written
