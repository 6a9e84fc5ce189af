"""The ``zoo`` command line: ``zoo list|info|download|cache|...``.

Start-up is part of the interface: ``zoo --version``, ``zoo --help``, ``zoo cache ...`` and
``zoo download`` of converted weights must not import torch (a 2-5 s cost). So a command's
module is imported only when that command runs (or prints its own ``--help``):

* :data:`COMMANDS` maps each command name to its module under ``zoo.cli`` and its one-line help
  (what ``zoo --help`` shows without importing anything).
* The module defines ``add_<name>_arguments(parser)`` and ``run_<name>(args) -> exit code``
  (``<name>`` with ``-`` written ``_``). It may import torch at module level if the command
  always needs it (``list``, ``predict``); a command that can answer without torch keeps its
  heavy imports inside the functions that need them (``download``: converting only).

Adding a command is one line in :data:`COMMANDS` plus its module. A command with sub-commands
(``zoo cache ls|rm``) adds its own sub-parsers in ``add_<name>_arguments``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import zoo
from zoo.errors import is_anticipated, user_message


@dataclass(frozen=True)
class Command:
    module: str  # under zoo.cli; imported only when the command is chosen
    help: str  # for `zoo --help`


COMMANDS: dict[str, Command] = {
    "list": Command("models", "list architectures (fnmatch patterns, e.g. 'resnet50_*')"),
    "info": Command("models", "an architecture's config, parameter count and weights"),
    "download": Command("weights", "fetch, verify and convert weights into the cache"),
    "env": Command("weights", "versions, cache, mirror/offline settings, CPU features"),
    "predict": Command("inference", "classify images with pretrained weights"),
    "eval": Command("inference", "top-1/top-5 on an ImageFolder tree"),
    "convert": Command(
        "convert", "convert GluonCV/timm/torchvision/TFLite weights into a zoo safetensors file"
    ),
    "cache": Command("cache", "list, remove or verify cached downloads"),
    "train": Command("train", "train a model with a recipe (the paper's tricks as switches)"),
    "finetune": Command(
        "finetune", "classification transfer: new head, lower backbone LR, frozen stages/BN"
    ),
    "finetune-dense": Command(
        "dense", "detection / segmentation fine-tuning of a backbone on COCO-format data"
    ),
    "recipes": Command("train", "list training recipes, or show one resolved"),
    "ablate": Command("ablate", "the paper's Table-6 ladder of tricks, rung by rung, as runs"),
    "weights": Command("train", "register a finished training run as hub weights (weights add)"),
    "demo": Command("train", "train, register, reload and use a model on bundled digits (~1 min)"),
    "benchmark": Command("benchmark", "latency, throughput and memory, side by side with timm"),
    "export": Command("export", "export a model to ONNX, TorchScript or an ExportedProgram"),
}


def _function_stem(command: str) -> str:
    return command.replace("-", "_")


def _load(command: str) -> ModuleType:
    return importlib.import_module(f"zoo.cli.{COMMANDS[command].module}")


def _chosen(argv: Sequence[str]) -> str | None:
    """The command word: top-level options (--help, --version) take no values, so it is the
    first argument that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser for the command named in ``argv``; every other command is listed with its
    help only, so that nothing but the chosen command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="zoo", description="Bag-of-Tricks model zoo: models, weights, conversion."
    )
    parser.add_argument("--version", action="version", version=f"zoo {zoo.__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure (or ZOO_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        if name == chosen:
            stem = _function_stem(name)
            module = _load(name)
            getattr(module, f"add_{stem}_arguments")(p)
            p.set_defaults(func=getattr(module, f"run_{stem}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure ends in one message and a non-zero exit: 2 for a bad
    input, file, server or cache (the message says what to do), 70 for a bug in zoo; with
    ``--debug`` or ``ZOO_DEBUG=1`` the traceback is shown instead."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen(argv)
    debug = "--debug" in (argv[: argv.index(chosen)] if chosen else argv)
    debug = debug or os.environ.get("ZOO_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        args = build_parser(argv).parse_args(argv)
        return args.func(args)
    except BrokenPipeError:  # `zoo list | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        return _report(chosen or "", err)


def _report(command: str, err: Exception) -> int:
    # Errors from the library carry actionable messages; a traceback adds nothing.
    if is_anticipated(err):
        print(f"zoo {command}: error: {user_message(err)}", file=sys.stderr)
        return 2
    print(
        f"zoo {command}: internal error ({type(err).__name__}: {user_message(err)}); this is a "
        "bug in zoo: rerun with --debug for the traceback and report it",
        file=sys.stderr,
    )
    return 70
