"""Command-line entry point: `dwsa-jax <command> ...`.

Each command lives in its own module, which defines `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so `dwsa-jax --help`
stays fast and a missing optional extra only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dwsa_jax.commands.demo", "simulate a task, train, localize and evaluate"),
    "train": ("dwsa_jax.commands.train", "train the feature maps on a dataset"),
    "segment": ("dwsa_jax.commands.segment", "localize key-steps with a trained model"),
    "evaluate": ("dwsa_jax.commands.evaluate", "score predicted key-steps against annotations"),
    "narrations": ("dwsa_jax.narration.cli", "turn subtitles into time-stamped verb phrases"),
    "experiment": ("dwsa_jax.experiments.cli", "run the paper's baselines, ablations and sweeps"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dwsa-jax",
        description="Unsupervised key-step localization with SOPL and DWSA.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Import only the module of the requested command; the others get a bare entry for --help.
    requested = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        if name == requested:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,  # a library imported earlier may already have configured the root logger
    )
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError) as error:
        # Input errors carry a message naming the file or value and the fix; a traceback
        # would bury it. --verbose keeps the traceback for debugging.
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
