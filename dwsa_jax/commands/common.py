"""Command-line options shared by the commands: one flag per configuration field.

Every flag defaults to None on the command line, so only the fields a user sets replace the
dataclass defaults, and `--help` shows those defaults. The defaults are the values of Shen,
Wang and Elhamifar (CVPR 2021).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, NamedTuple

from dwsa_jax.localization import LocalizationConfig
from dwsa_jax.model import ALIGNMENTS, LossConfig
from dwsa_jax.training import BATCHING_MODES, TrainConfig

logger = logging.getLogger(__name__)


class Option(NamedTuple):
    """One command-line flag for one dataclass field."""

    flags: tuple[str, ...]
    field: str
    type: Any
    help: str
    choices: tuple | None = None


TRAIN_OPTIONS = (
    Option(("--num-prototypes", "--K"), "num_prototypes", int,
           "K, visual prototypes per batch and key-step clusters (default: the task's number "
           "of key-steps)"),
    Option(("--learning-rate",), "learning_rate", float, "Adam step size"),
    Option(("--weight-decay",), "weight_decay", float,
           "L2 coefficient added to the gradient, as torch's Adam weight_decay"),
    Option(("--num-epochs", "--epochs"), "num_epochs", int, "training epochs (passes over the videos)"),
    Option(("--eval-epoch",), "eval_epoch", int,
           "completed epochs whose parameters are exported to OUT/model for localization; "
           "29 matches the authors' release, whose 'epoch 30' checkpoint contains 29 epochs "
           "(default: 30, or the last epoch when --num-epochs is below 30)"),
    Option(("--batch-size",), "batch_size", int, "videos per batch, consecutive in sorted id order"),
    Option(("--batching",), "batching", str, "how a batch forms SOPL problems", BATCHING_MODES),
    Option(("--seed",), "seed", int, "seed of the PRNG key for SOPL's k-means++ initialisations"),
    Option(("--checkpoint-every",), "checkpoint_every", int, "save the training state every N epochs"),
)

LOSS_OPTIONS = (
    Option(("--num-background-prototypes", "--K-bg"), "num_background_prototypes", int,
           "K_bg, extra linguistic prototypes for narration unrelated to key-steps"),
    Option(("--gamma",), "gamma", float, "soft-min temperature of DWSA and soft-DTW (cost units)"),
    Option(("--beta",), "beta", float, "SOPL soft-assignment temperature (squared-distance units)"),
    Option(("--sopl-iterations",), "sopl_iterations", int, "SOPL refinement iterations"),
    Option(("--time-weight",), "time_weight", float,
           "w; SOPL appends sqrt(w) * tau, tau in [0, 1], to each feature (0 ignores time)"),
    Option(("--delta-e",), "delta_e", float, "DWSA cost of leaving a visual prototype unmatched (1 - cos units)"),
    Option(("--row-softmax",), "row_softmax", bool,
           "apply a softmax over each row of the DWSA cost matrix, as the authors' release does"),
    Option(("--alignment",), "alignment", str, "sequence alignment between prototypes", ALIGNMENTS),
)

LOCALIZATION_OPTIONS = (
    Option(("--background-ratio",), "background_ratio", float,
           "fraction b in [0, 1] of each cluster, farthest from its centre, labelled background"),
    Option(("--localization-time-weight",), "time_weight", float,
           "w of the time coordinate when clustering segments (default: 1, or --time-weight "
           "where the command has that option and it is given)"),
    Option(("--kmeans-restarts",), "num_init", int, "k-means restarts; the lowest-error run is kept"),
    Option(("--kmeans-iterations",), "max_iterations", int, "maximum Lloyd iterations per k-means restart"),
)


def _dest(option: Option, prefix: str) -> str:
    return f"{prefix}{option.field}"


def _add_options(group, options, defaults, prefix: str) -> None:
    for option in options:
        default = getattr(defaults, option.field)
        help_text = option.help if "default:" in option.help else f"{option.help} (default: {default})"
        if option.type is bool:
            group.add_argument(
                *option.flags, dest=_dest(option, prefix), action="store_const", const=True,
                default=None, help=help_text,
            )
            continue
        metavar = "N" if option.type is int else "VALUE"
        if option.choices:
            metavar = None  # argparse shows the choices
        group.add_argument(
            *option.flags, dest=_dest(option, prefix), type=option.type, default=None,
            choices=option.choices, help=help_text, metavar=metavar,
        )


def add_train_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per TrainConfig and LossConfig field, except the fields named in `skip`."""
    group = parser.add_argument_group("training (defaults are the paper's)")
    _add_options(group, [o for o in TRAIN_OPTIONS if o.field not in skip], TrainConfig(), "train_")
    _add_options(group, [o for o in LOSS_OPTIONS if o.field not in skip], LossConfig(), "loss_")


def add_localization_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per LocalizationConfig field."""
    group = parser.add_argument_group("localization (defaults are the paper's)")
    _add_options(group, LOCALIZATION_OPTIONS, LocalizationConfig(), "localize_")


def _given(args: argparse.Namespace, options, prefix: str) -> dict[str, Any]:
    values = {}
    for option in options:
        value = getattr(args, _dest(option, prefix), None)
        if value is not None:
            values[option.field] = value
    return values


def train_config_from_args(args: argparse.Namespace, base: TrainConfig = TrainConfig()) -> TrainConfig:
    """Build a TrainConfig from `base` with the fields given on the command line replaced."""
    loss = dataclasses.replace(base.loss, **_given(args, LOSS_OPTIONS, "loss_"))
    values = _given(args, TRAIN_OPTIONS, "train_")
    num_epochs = values.get("num_epochs", base.num_epochs)
    if "eval_epoch" not in values and base.eval_epoch is not None and base.eval_epoch > num_epochs:
        # A short run evaluates its last epoch instead of failing on the default eval epoch.
        values["eval_epoch"] = num_epochs
        logger.info("evaluating epoch %d, the last of --num-epochs %d", num_epochs, num_epochs)
    return dataclasses.replace(base, loss=loss, **values)


def localization_config_from_args(
    args: argparse.Namespace, base: LocalizationConfig = LocalizationConfig()
) -> LocalizationConfig:
    """Build a LocalizationConfig from `base` with the given fields replaced.

    Without --localization-time-weight, --time-weight (when the command has it and it is given)
    also sets the localization time weight, so training and localization use one w.
    """
    values = _given(args, LOCALIZATION_OPTIONS, "localize_")
    training_time_weight = getattr(args, "loss_time_weight", None)
    if "time_weight" not in values and training_time_weight is not None:
        values["time_weight"] = training_time_weight
    return dataclasses.replace(base, **values)


def load_task_or_exit(processed_dir: str | Path, task_id: str, data_dir: str | Path | None = None,
                      *, concreteness_threshold: float = 3.0):
    """Load a task with data.load_task; a missing folder or task exits with its message.

    data.load_task's message for an unknown task lists the tasks that exist.
    """
    from dwsa_jax import data

    try:
        return data.load_task(
            processed_dir, str(task_id), data_dir=data_dir,
            concreteness_threshold=concreteness_threshold,
        )
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from error


def quiet_library_logs() -> None:
    """Hide INFO records of orbax (one per save, logged through absl) and of JAX's backend
    probing, keeping their warnings."""
    for name in ("absl", "jax"):
        logging.getLogger(name).setLevel(logging.WARNING)
