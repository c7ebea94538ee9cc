"""Run an experiment: every planned run of every task and seed, resumable, into one folder.

Layout of the output folder:

  results.csv                 one row per run (see `plan`), appended whole as each run ends
  tasks.csv                   per task: annotated videos, K, OCE and repeat frequency
  convergence.csv             SOPL mean squared error per iteration at several epochs
  failures.csv                runs whose training loss was not finite, with the error
  models/<task>/*.npz         trained parameters, reused by later runs and on resume
  labels/<task>/seed<s>/*.npz segment labels of each method's default run, for timelines
  alignment.md                DWSA-aligned prototypes with their phrases and segments

Trained models are keyed by everything that changes training (task, method, seed, K, p,
delta_e, narration mode), so the b sweep and the untrained methods never retrain. A restarted
run skips the rows already in results.csv and loads the models it has already trained.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from dwsa_jax import data, fileio, pipeline, prototypes
from dwsa_jax.experiments import alignment_report, fit, plan, store
from dwsa_jax.experiments.suite import TrainingSettings, task_statistics
from dwsa_jax.localization import LocalizationConfig
from dwsa_jax.model import LossConfig
from dwsa_jax.training import TrainConfig

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
TASKS_FILE = "tasks.csv"
CONVERGENCE_FILE = "convergence.csv"
FAILURES_FILE = "failures.csv"
ALIGNMENT_FILE = "alignment.md"
MODELS_DIR = "models"
LABELS_DIR = "labels"
CONVERGENCE_ITERATIONS = 20


class ExperimentSummary(NamedTuple):
    """Counts and wall time of one `run_experiment` call.

    Attributes:
      num_runs: runs planned.
      num_skipped: runs already in results.csv, not run again.
      num_trained: models trained in this call (not loaded from the cache).
      seconds: wall time of the call.
    """

    num_runs: int
    num_skipped: int
    num_trained: int
    seconds: float


def _train_config(run: plan.Run, settings: TrainingSettings) -> TrainConfig:
    loss = LossConfig(alignment=plan.TRAINED[run.method], sopl_iterations=run.sopl_iterations,
                      delta_e=run.delta_e)
    return TrainConfig(
        loss=loss, num_prototypes=run.num_clusters, learning_rate=settings.learning_rate,
        num_epochs=settings.num_epochs, eval_epoch=settings.eval_epoch,
        batch_size=settings.batch_size, seed=run.seed,
    )


def _model_path(out_dir: Path, run: plan.Run) -> Path:
    mode = run.narration or "task"
    name = (f"{run.method}_K{run.num_clusters}_p{run.sopl_iterations}"
            f"_de{plan.format_value(run.model_key[5])}_{mode}_seed{run.seed}.npz")
    return out_dir / MODELS_DIR / run.task / name


def _is_default(run: plan.Run) -> bool:
    return run.parameter == "K" and run.value == plan.GROUND_TRUTH_K


class _Experiment:
    """State of one `run_experiment` call: output files, caches and counters."""

    def __init__(self, out_dir: Path, settings: TrainingSettings, sweeps: plan.Sweeps,
                 pad_to, narration_tasks):
        self.out_dir = out_dir
        self.settings = settings
        self.sweeps = sweeps
        self.pad_to = pad_to
        self.narration_tasks = narration_tasks
        self.results = store.ResultsTable(out_dir / RESULTS_FILE)
        self.convergence = store.AppendOnlyTable(out_dir / CONVERGENCE_FILE,
                                                 store.CONVERGENCE_FIELDS)
        self.converged = {(row["task"], row["seed"]) for row in self.convergence.rows}
        self.failures = store.AppendOnlyTable(out_dir / FAILURES_FILE, store.FAILURE_FIELDS)
        self.models: dict[tuple, object] = {}
        self.num_trained = 0

    def task_for(self, task: data.Task, run: plan.Run) -> data.Task:
        if run.narration is None:
            return task
        return self.narration_tasks(task, run.narration)

    def model(self, task: data.Task, run: plan.Run, default_k: int):
        """Return the trained FeatureMaps of a run, from memory, disk, or by training."""
        key = run.model_key
        if key in self.models:
            if isinstance(self.models[key], FloatingPointError):
                raise self.models[key]
            return self.models[key]
        path = _model_path(self.out_dir, run)
        wants_snapshots = (run.method == "sopl+dwsa" and run.narration is None
                           and run.num_clusters == default_k
                           and run.sopl_iterations == plan.DEFAULT_SOPL_ITERATIONS
                           and run.delta_e == plan.DEFAULT_DELTA_E
                           and (task.name, str(run.seed)) not in self.converged)
        train_task = self.task_for(task, run)
        if path.is_file() and not wants_snapshots:
            params, _ = fit.load_fit(path)
        else:
            config = _train_config(run, self.settings)
            epochs = [e for e in self.sweeps.snapshot_epochs if e <= config.num_epochs]
            pad_to = self.pad_to if run.narration is None else None
            self.num_trained += 1
            try:
                result = fit.fit(train_task, config, pad_to=pad_to,
                                 snapshot_epochs=epochs if wants_snapshots else ())
            except FloatingPointError as error:
                # Remembered, so the runs sharing this model fail at once instead of retraining.
                logger.warning("training %s failed, so its runs get NaN scores: %s",
                               path.name, error)
                self.models[key] = error
                raise
            params = result.params
            fit.save_fit(path, params, result.loss_history)
            if wants_snapshots:
                self.record_convergence(train_task, config, result.snapshots)
        model = fit.model_from_params(params, task.feature_dim)
        self.models = {k: v for k, v in self.models.items() if k[:3] == key[:3]}
        self.models[key] = model
        return model

    def record_convergence(self, task: data.Task, config: TrainConfig, snapshots) -> None:
        """Append SOPL's error per iteration on the first batch at each snapshot epoch."""
        videos = data.videos_with_narration(task)[: config.batch_size]
        features = np.concatenate([v.features for v in videos])
        times = np.concatenate([np.asarray(prototypes.segment_times(v.num_segments))
                                for v in videos])
        key = jax.random.PRNGKey(config.seed)
        for epoch in sorted(snapshots):
            model = fit.model_from_params(snapshots[epoch], task.feature_dim)
            errors = prototypes.sopl(
                key, model.embed_visual(features), times, config.num_prototypes,
                num_iterations=CONVERGENCE_ITERATIONS, beta=config.loss.beta,
                time_weight=config.loss.time_weight,
            ).errors
            for iteration, error in enumerate(np.asarray(errors), start=1):
                self.convergence.append({"task": task.name, "seed": config.seed, "epoch": epoch,
                                         "iteration": iteration, "mse": f"{float(error):.6g}"})
        self.converged.add((task.name, str(config.seed)))

    def execute(self, task: data.Task, run: plan.Run, default_k: int) -> None:
        """Localize and score one run, append its row, save default runs' labels.

        A run whose training loss is not finite gets a row of NaN scores, so that a restart
        does not repeat it, and a line in failures.csv with the error.
        """
        try:
            model = self.model(task, run, default_k) if run.trained else None
        except FloatingPointError as error:
            logger.debug("run %s failed: %s", "/".join(run.key), error)
            row = dict(zip(store.KEY_FIELDS, run.key))
            row.update({name: "nan" for name in ("precision", "recall", "f1", "mof")})
            self.failures.append(dict(row, error=str(error)))
            self.results.append(row)
            return
        time_weight = 0.0 if run.method == "kmeans" else 1.0
        config = LocalizationConfig(background_ratio=run.background_ratio,
                                    time_weight=time_weight)
        labels = pipeline.localize(task, run.num_clusters, jax.random.PRNGKey(run.seed),
                                   model=model, config=config)
        scores = pipeline.evaluate_labels(task, labels)
        if scores is None:
            raise ValueError(f"task {task.name} has no annotated video; experiments need "
                             "annotations to score the runs")
        if _is_default(run):
            save_labels(self.out_dir / LABELS_DIR / task.name / f"seed{run.seed}"
                        / f"{run.method}.npz", task, labels)
        row = dict(zip(store.KEY_FIELDS, run.key))
        row.update({name: f"{getattr(scores, name):.6f}"
                    for name in ("precision", "recall", "f1", "mof")})
        self.results.append(row)


def save_labels(path: Path, task: data.Task, labels: dict[str, np.ndarray]) -> None:
    """Save segment labels and annotated steps (step_id, start, end) of a task's videos."""
    arrays = {}
    for vid, label in labels.items():
        arrays[f"labels/{vid}"] = np.asarray(label)
        steps = task.video(vid).steps
        if steps is not None:
            arrays[f"steps/{vid}"] = np.asarray([tuple(s) for s in steps], dtype=np.float64
                                                ).reshape(-1, 3)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fileio.write_bytes_atomic(path, buffer.getvalue())


def load_labels(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read (labels, steps) written by `save_labels`; both map video id -> array."""
    labels, steps = {}, {}
    with np.load(path) as stored:
        for name in stored.files:
            kind, vid = name.split("/", 1)
            (labels if kind == "labels" else steps)[vid] = stored[name]
    return labels, steps


def shared_batch_shape(tasks: Sequence[data.Task], settings: TrainingSettings) -> tuple[int, int]:
    """Return the largest (segments, phrases) pooled batch over tasks, to pad every task to."""
    shapes = []
    for task in tasks:
        config = TrainConfig(num_prototypes=task.num_steps or 1, batch_size=settings.batch_size,
                             loss=LossConfig(num_background_prototypes=0))
        shapes.append(fit.batch_shape(task, config))
    return max(s[0] for s in shapes), max(s[1] for s in shapes)


def run_experiment(
    tasks: Sequence[data.Task],
    out_dir: str | Path,
    *,
    seeds: Sequence[int],
    sweeps: plan.Sweeps,
    settings: TrainingSettings,
    shared_shapes: bool = False,
    narration_tasks=None,
    progress: bool = True,
) -> ExperimentSummary:
    """Run every planned run of every task and seed, skipping the rows already written.

    Args:
      tasks: annotated tasks with segment and phrase features.
      out_dir: output folder (see the module docstring); created if missing.
      seeds: run seeds.
      sweeps: swept values.
      settings: training settings.
      shared_shapes: pad every task's training batches to the largest batch of all tasks, so
        that the train step compiles once per loss configuration (simulated suites).
      narration_tasks: callable (task, mode) -> task with that narration mode's phrases, or
        None to skip the narration runs.
      progress: show a progress bar with the estimated time left.

    Returns:
      ExperimentSummary.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    statistics = [task_statistics(task) for task in tasks]
    store.write_rows_atomic(out_dir / TASKS_FILE, store.TASK_FIELDS, [
        {"task": s.task, "num_videos": s.num_videos, "num_steps": s.num_steps or "",
         "oce": f"{s.order_consistency_error:.6f}",
         "repeat_frequency": f"{s.repeat_frequency:.6f}"} for s in statistics])

    pad_to = shared_batch_shape(tasks, settings) if shared_shapes else None
    experiment = _Experiment(out_dir, settings, sweeps, pad_to, narration_tasks)
    planned = [(task, plan.plan_runs(task.name, task.num_steps, seeds, sweeps,
                                     with_narration=narration_tasks is not None))
               for task in tasks]
    num_runs = sum(len(runs) for _, runs in planned)
    todo = [(task, run) for task, runs in planned for run in runs
            if run.key not in experiment.results.done]
    logger.info("%d runs planned, %d already in %s", num_runs, num_runs - len(todo),
                out_dir / RESULTS_FILE)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_runs, initial=num_runs - len(todo), unit="run", desc="experiment")
    try:
        for task, run in todo:
            default_k = task.num_steps or sweeps.num_prototypes[0]
            experiment.execute(task, run, default_k)
            if bar is not None:
                bar.set_postfix_str(f"{task.name} {run.method} {run.parameter}={run.value}",
                                    refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    write_alignment_report(experiment, tasks, seeds[0], sweeps)
    return ExperimentSummary(num_runs, num_runs - len(todo), experiment.num_trained,
                             time.perf_counter() - start)


def write_alignment_report(experiment: _Experiment, tasks, seed: int, sweeps) -> None:
    """Write alignment.md from each task's default sopl+dwsa model of the first seed."""
    sections = ["# Prototypes aligned by DWSA", "",
                f"Default sopl+dwsa model of seed {seed} for each task. Phrases are drawn at random "
                "from those assigned to the linguistic prototype; segments from the half of the "
                "visual prototype's segments closest to it.", ""]
    for task in tasks:
        default_k = task.num_steps or sweeps.num_prototypes[0]
        run = plan.Run(task.name, "sopl+dwsa", seed, "K", plan.GROUND_TRUTH_K, default_k)
        try:
            model = experiment.model(task, run, default_k)
        except FloatingPointError as error:
            sections += [f"## Task {task.name}", "", f"No report: training failed ({error}).", ""]
            continue
        loss = _train_config(run, experiment.settings).loss
        pairs = alignment_report.aligned_pairs(task, model, default_k, loss, seed)
        sections.append(alignment_report.format_pairs(task.name, pairs, default_k))
    fileio.write_text_atomic(experiment.out_dir / ALIGNMENT_FILE, "\n".join(sections))
