"""`dwsa-jax demo`: simulate a task, train, localize and evaluate, end to end on a laptop.

Steps: simulate the demo task (simulate.default_demo_config()), write it to --out/processed and --out/data in the released layout, read it back with
data.load_task as real data is read, then score three methods on it:

  kmeans     k-means on the L2-normalised pretrained features, no time coordinate, no training
  sopl       the same with the time coordinate, no training (shows what time alone adds)
  sopl+dwsa  f_v and f_l trained with SOPL + DWSA for --epochs epochs, then localization with
             the time coordinate

Outputs in --out: metrics.json (one object per method with precision, recall, f1, mof and
mof_steps as fractions, plus "loss_history", the mean training loss per epoch), timeline.png
(annotated against predicted key-steps for a few videos), and model/, the trained parameters,
readable by `dwsa-jax segment --checkpoint`.

Demo defaults that differ from those of Shen, Wang and Elhamifar (CVPR 2021), chosen so that the run finishes in a few minutes on
2 CPU cores and training visibly helps:
  - DEMO_EPOCHS epochs instead of 50, localizing with the last epoch's parameters;
  - learning rate DEMO_LEARNING_RATE instead of 5e-4: the 36 simulated videos make 2 batches
    per epoch, so 30 epochs are 60 Adam steps, too few at 5e-4 to move the identity maps far.
All other hyperparameters are the paper's.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dwsa_jax.commands import common

logger = logging.getLogger(__name__)

DEMO_EPOCHS = 30
DEMO_LEARNING_RATE = 2e-3
DEMO_METHODS = ("kmeans", "sopl", "sopl+dwsa")
METRICS_FILE = "metrics.json"
TIMELINE_FILE = "timeline.png"
NUM_PLOTTED_VIDEOS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", metavar="DIR",
                        help="output folder (default: ./demo_out)")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, metavar="N",
                        help=f"training epochs; the paper trains 50 (default: {DEMO_EPOCHS})")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the simulation, training and localization (default: 0)")
    parser.add_argument("--learning-rate", type=float, default=DEMO_LEARNING_RATE, metavar="LR",
                        help=f"Adam step size; the paper uses 5e-4 (default: {DEMO_LEARNING_RATE})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from dwsa_jax import data, metrics, pipeline, plotting, simulate, training

    common.quiet_library_logs()
    if args.epochs < 1:
        raise SystemExit(f"error: --epochs {args.epochs} is invalid; pass at least 1")
    out = Path(args.out)
    processed_dir, data_dir = out / "processed", out / "data"

    simulated = simulate.simulate_task(simulate.default_demo_config(), args.seed)
    data.write_task(simulated, processed_dir, data_dir)
    task = data.load_task(processed_dir, simulated.name, data_dir=data_dir)
    print(f"simulated task {task.name}: {len(task.videos)} videos, {task.num_steps} key-steps, "
          f"written to {processed_dir} and {data_dir}")

    config = training.TrainConfig(
        num_epochs=args.epochs, eval_epoch=args.epochs, learning_rate=args.learning_rate,
        seed=args.seed,
    )
    results = {}
    for method in DEMO_METHODS:
        results[method] = pipeline.run_method(
            method, task, train_config=config, seed=args.seed, progress=not args.no_progress
        )
    trained = results["sopl+dwsa"]
    training.save_model(out / "model", training.split_model(trained.model)[1], {
        "task": task.name,
        "dim": task.feature_dim,
        "num_prototypes": training.resolve_num_prototypes(config, task),
        "epoch": args.epochs,
        "config": config.to_dict(),
    })

    summary = {name: pipeline.scores_to_dict(result.scores) for name, result in results.items()}
    summary["loss_history"] = [float(x) for x in trained.loss_history]
    training.write_json_atomic(out / METRICS_FILE, summary)

    annotated = [v for v in pipeline.localization_videos(task) if v.steps is not None]
    predictions = {name: [] for name in results}
    truth = []
    for video in annotated:
        frames = None
        for name, result in results.items():
            frames = metrics.segments_to_frames(result.labels[video.vid])
            predictions[name].append(frames)
        truth.append(metrics.steps_to_frames(video.steps, len(frames)))
    matchings = {
        name: plotting.match_clusters_to_steps(predictions[name], truth) for name in results
    }
    plotted = slice(0, NUM_PLOTTED_VIDEOS)
    plotting.plot_timelines(
        out / TIMELINE_FILE,
        [v.vid for v in annotated[plotted]],
        truth[plotted],
        {name: frames[plotted] for name, frames in predictions.items()},
        matchings=matchings,
        step_names=task.step_names,
        title=f"task {task.name}: annotated and predicted key-steps",
    )

    print(pipeline.format_table({name: result.scores for name, result in results.items()}))
    print(f"training loss: {trained.loss_history[0]:.4f} (epoch 1) -> "
          f"{trained.loss_history[-1]:.4f} (epoch {len(trained.loss_history)})")
    print(f"wrote {out / METRICS_FILE}, {out / TIMELINE_FILE} and {out / 'model'}")
    return 0
