"""The ``zoo`` command line: ``zoo list|info|convert|cache|...``. Each command is a module with
``add_parser(subparsers)`` that registers itself and sets ``func(args) -> exit code``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

import zoo

COMMANDS = ("models", "weights", "inference", "convert", "cache")  # modules under zoo/cli/


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="Bag-of-Tricks model zoo: models, weights, conversion."
    )
    parser.add_argument("--version", action="version", version=f"zoo {zoo.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"zoo.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `zoo list | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except (KeyError, ValueError, TypeError, LookupError, OSError) as err:
        # Errors from the library carry actionable messages; a traceback adds nothing.
        print(f"zoo {args.command}: error: {err}", file=sys.stderr)
        return 2
