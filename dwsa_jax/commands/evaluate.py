"""`dwsa-jax evaluate`: score predicted segment labels against annotated key-steps.

Reads the predictions.json written by `dwsa-jax segment` and the annotations under
--data/<task>/annotations, prints precision, recall, F1, MoF and MoF on step frames, and writes
them to --out (default: metrics.json next to the predictions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, metavar="PATH",
                        help="predictions.json from `dwsa-jax segment`, or the folder holding it")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="root with <task>/mapping.txt and <task>/annotations/<vid>.csv")
    parser.add_argument("--task", required=True, metavar="ID", help="task id, a folder under --data")
    parser.add_argument("--out", metavar="FILE",
                        help="metrics JSON to write (default: metrics.json beside the predictions)")


def run(args: argparse.Namespace) -> int:
    from dwsa_jax import data, pipeline, training

    path = Path(args.predictions)
    if path.is_dir():
        path = path / "predictions.json"
    if not path.is_file():
        raise SystemExit(f"error: predictions file {path} not found; run `dwsa-jax segment` first")
    try:
        predictions = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rerun `dwsa-jax segment` to "
                         "write it again") from error
    if str(predictions.get("task")) != str(args.task):
        raise SystemExit(
            f"error: {path} contains predictions for task {predictions.get('task')!r}, not "
            f"{args.task!r}; pass the matching --task or predictions file"
        )

    annotation_dir = Path(args.data) / str(args.task) / data.ANNOTATION_DIR
    if not annotation_dir.is_dir():
        available = sorted(p.name for p in Path(args.data).iterdir() if (p / data.ANNOTATION_DIR).is_dir()) \
            if Path(args.data).is_dir() else []
        raise SystemExit(
            f"error: task {args.task!r} has no annotation folder {annotation_dir}; tasks under "
            f"{args.data}: {', '.join(available) or 'none'}"
        )
    labels = {vid: np.asarray(values, dtype=np.int64) for vid, values in predictions["labels"].items()}
    steps = {}
    for vid in sorted(labels):
        csv_path = annotation_dir / f"{vid}.csv"
        if csv_path.is_file():
            steps[vid] = data.read_annotation_csv(csv_path)
    scores = pipeline.evaluate_steps(labels, steps, task_name=str(args.task))
    if scores is None:
        raise SystemExit(f"error: no predicted video of task {args.task} has an annotation in {annotation_dir}")

    out = Path(args.out) if args.out else path.with_name("metrics.json")
    result = {"task": str(args.task), "method": predictions.get("method"),
              "num_videos": len(steps), **pipeline.scores_to_dict(scores)}
    training.write_json_atomic(out, result)
    print(pipeline.format_table({predictions.get("method") or "predictions": scores}))
    print(f"scored {len(steps)} annotated videos; wrote {out}")
    return 0
