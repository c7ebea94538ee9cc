"""`dwsa-jax train`: train f_v and f_l on one task of a dataset in the released layout.

Writes to --out:
  model/         parameters after --eval-epoch epochs (read by `dwsa-jax segment`)
  model_last/    parameters after the last epoch
  train_state/   orbax checkpoints of the training state, for --resume
  training.json  configuration, K, and the training loss per epoch
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dwsa_jax.commands import common

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processed", required=True, metavar="DIR",
                        help="root with <task>/video_embd, verb_phrases, text_embd")
    parser.add_argument("--data", metavar="DIR",
                        help="root with <task>/mapping.txt and annotations; gives K when "
                             "--num-prototypes is not set")
    parser.add_argument("--task", required=True, metavar="ID", help="task id, a folder under --processed")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for checkpoints and the model")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest training state in --out")
    parser.add_argument("--concreteness-threshold", type=float, default=3.0,
                        help="keep phrases scoring at least this (1-5 scale; 0 keeps all) (default: 3.0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--distributed", action="store_true",
                        help="join a multi-process run with jax.distributed.initialize(); "
                             "implied when JAX_COORDINATOR_ADDRESS is set (see docs/training.md)")
    common.add_train_arguments(parser)


def run(args: argparse.Namespace) -> int:
    common.quiet_library_logs()
    from dwsa_jax import parallel, training

    # Must run before any computation initialises JAX's backends.
    try:
        parallel.initialize_distributed(required=args.distributed)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error

    try:
        config = common.train_config_from_args(args)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    task = common.load_task_or_exit(
        args.processed, args.task, args.data, concreteness_threshold=args.concreteness_threshold
    )
    out = Path(args.out)
    try:
        result = training.train(
            task, config, checkpoint_dir=out, resume=args.resume, progress=not args.no_progress
        )
    except ValueError as error:
        # Invalid settings, too few points for the prototypes, or an existing training state.
        raise SystemExit(f"error: {error}") from error
    training.write_json_atomic(out / "training.json", {
        "task": task.name,
        "num_prototypes": result.num_prototypes,
        "config": config.to_dict(),
        "loss_history": [float(x) for x in result.loss_history],
    })
    print(f"trained task {task.name} for {config.num_epochs} epochs "
          f"(final loss {result.loss_history[-1]:.4f}); model for localization: {out / 'model'}")
    return 0
