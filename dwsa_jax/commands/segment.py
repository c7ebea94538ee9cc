"""`dwsa-jax segment`: label every segment of a task's videos with a key-step or background.

Writes --out/predictions.json:
  {"task": ID, "method": NAME, "num_clusters": K, "labels": {video id: [label per segment]}}
with -1 for background and cluster ids 0..K-1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dwsa_jax.commands import common

PREDICTIONS_FILE = "predictions.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processed", required=True, metavar="DIR",
                        help="root with <task>/video_embd (segment features)")
    parser.add_argument("--task", required=True, metavar="ID", help="task id, a folder under --processed")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="model folder written by `dwsa-jax train` (OUT/model); required "
                             "unless --method is kmeans or sopl")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for predictions.json")
    parser.add_argument("--method", default="sopl+dwsa", choices=("kmeans", "sopl", "sopl+dwsa"),
                        help="sopl+dwsa: the trained f_v from --checkpoint; kmeans and sopl: the "
                             "pretrained features without and with the time coordinate (default: sopl+dwsa)")
    parser.add_argument("--num-prototypes", "--K", dest="num_clusters", type=int,
                        help="K, key-step clusters (default: the K the checkpoint was trained with)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means++ initialisations (default: 0)")
    common.add_localization_arguments(parser)


def run(args: argparse.Namespace) -> int:
    common.quiet_library_logs()
    from dwsa_jax import pipeline, training

    try:
        localization_config = common.localization_config_from_args(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    task = common.load_task_or_exit(args.processed, args.task, concreteness_threshold=0.0)

    model = None
    num_clusters = args.num_clusters
    if args.method == "sopl+dwsa":
        if args.checkpoint is None:
            raise SystemExit("error: --checkpoint is required with --method sopl+dwsa; pass "
                             "the model folder written by `dwsa-jax train` (OUT/model)")
        try:
            loaded = training.load_model(args.checkpoint)
        except FileNotFoundError as error:
            raise SystemExit(f"error: {error}") from error
        model = loaded.model
        if num_clusters is None:
            num_clusters = int(loaded.metadata["num_prototypes"])
    elif args.method == "kmeans":
        localization_config = dataclasses.replace(localization_config, time_weight=0.0)
    if num_clusters is None:
        raise SystemExit(f"error: --num-prototypes is required with --method {args.method}")

    import jax

    try:
        labels = pipeline.localize(
            task, num_clusters, jax.random.PRNGKey(args.seed), model=model,
            config=localization_config,
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    out = Path(args.out)
    training.write_json_atomic(out / PREDICTIONS_FILE, {
        "task": task.name,
        "method": args.method,
        "num_clusters": num_clusters,
        "labels": {vid: [int(x) for x in label] for vid, label in labels.items()},
    })
    print(f"labelled {len(labels)} videos of task {task.name}; wrote {out / PREDICTIONS_FILE}")
    return 0
