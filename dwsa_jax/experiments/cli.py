"""`dwsa-jax experiment`: the paper's baselines, ablations and sweeps, with tables and figures.

Runs, per task and seed, the four methods (kmeans, sopl, sopl+softdtw, sopl+dwsa) at every K of
the sweep and at the task's number of key-steps, the background ratio sweep for every method,
and the SOPL iteration, delta_e and (with subtitles) narration mode sweeps for sopl+dwsa. Rows
go to OUT/results.csv as each run ends; restarting the same command skips finished rows and
reuses trained models. Tables, figures and the alignment report are written at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from dwsa_jax.experiments import plan, suite

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options on its subparser."""
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder; an existing one is resumed")
    source = parser.add_argument_group("tasks (default: --simulated paper)")
    source.add_argument("--simulated", choices=suite.suite_names(), default=None,
                        help="run on a simulated suite")
    source.add_argument("--processed", type=Path, metavar="DIR",
                        help="processed folder of real data (video_embd/, verb_phrases/, ...)")
    source.add_argument("--data", type=Path, metavar="DIR",
                        help="annotation folder of real data (annotations/, mapping.txt)")
    source.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="task ids to run from --processed (default: all)")
    source.add_argument("--subtitles", type=Path, metavar="DIR",
                        help="folder with one subfolder of <vid>.srt/.vtt files per task; adds "
                        "the narration mode runs (needs --embedder)")
    source.add_argument("--embedder", metavar="NAME",
                        help="text encoder for the narration modes, as for `dwsa-jax "
                        "narrations --embedder`; it must embed into the video features' space")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help=f"run seeds 0..N-1 (default: {DEFAULT_SEEDS}, 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="one seed and a few sweep points; without --processed, on one "
                        "small simulated task")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="training epochs (default: the suite's, 50 on real data)")
    parser.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                        help="Adam step size (default: the suite's, 5e-4 on real data)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="videos per pooled batch (default: the suite's, 30 on real data)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _settings(args, base: suite.TrainingSettings) -> suite.TrainingSettings:
    changes = {}
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit(f"error: --epochs {args.epochs} is invalid; pass at least 1")
        changes["num_epochs"] = args.epochs
        if base.eval_epoch is not None and base.eval_epoch > args.epochs:
            changes["eval_epoch"] = None
    if args.learning_rate is not None:
        changes["learning_rate"] = args.learning_rate
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    return dataclasses.replace(base, **changes)


def run(args: argparse.Namespace) -> int:
    from dwsa_jax import data
    from dwsa_jax.commands import common
    from dwsa_jax.experiments import narration_modes, report, runner

    common.quiet_library_logs()
    real = args.processed is not None or args.data is not None
    if real and args.simulated:
        raise SystemExit("error: pass either --processed/--data or --simulated, not both")
    if real and args.processed is None:
        raise SystemExit("error: --data needs --processed, the folder with the features")
    if args.subtitles is not None and (not real or args.embedder is None):
        raise SystemExit("error: --subtitles needs --processed, --data and --embedder")
    seeds = args.seeds
    if seeds is None:
        seeds = 1 if args.quick else DEFAULT_SEEDS
    if seeds < 1:
        raise SystemExit(f"error: --seeds {seeds} is invalid; pass at least 1")

    narration_tasks = None
    if real:
        names = args.tasks or data.list_tasks(args.processed)
        if not names:
            raise SystemExit(f"error: no task folder found in {args.processed}; pass the processed folder")
        tasks = [data.load_task(args.processed, name, data_dir=args.data) for name in names]
        settings = _settings(args, suite.TrainingSettings())
        sweeps = plan.QUICK_SWEEPS if args.quick else plan.Sweeps()
        shared_shapes = False
        if args.subtitles is not None:
            narration_tasks = narration_modes.NarrationTasks(
                args.processed, args.data, args.subtitles, args.embedder, args.out)
    else:
        chosen = suite.SUITES["quick" if args.quick else (args.simulated or "paper")]
        tasks = chosen.simulate()
        settings = _settings(args, chosen.training)
        sweeps = plan.QUICK_SWEEPS if chosen.name == "quick" else plan.Sweeps()
        shared_shapes = True
    print(f"{len(tasks)} tasks ({', '.join(t.name for t in tasks)}), {seeds} seeds, "
          f"{settings.num_epochs} epochs; writing to {args.out}")

    summary = runner.run_experiment(
        tasks, args.out, seeds=list(range(seeds)), sweeps=sweeps, settings=settings,
        shared_shapes=shared_shapes, narration_tasks=narration_tasks,
        progress=not args.no_progress,
    )
    written = report.write_report(args.out)
    print(f"{summary.num_runs} runs ({summary.num_skipped} already done), "
          f"{summary.num_trained} models trained, {summary.seconds:.0f} s")
    print((args.out / report.TABLE_FILES["K"]).read_text())
    print(f"wrote {len(written)} tables and figures; see {args.out / report.REPORT_FILE}")
    return 0
