"""The ``logloss`` command: parses arguments, calls the library, prints.

Each subcommand group lives in its own module with a ``register(subparsers)`` function that adds
its parsers and sets ``handler`` (a function taking the parsed ``argparse.Namespace`` and returning
an exit status).  Modules import heavy libraries (torch, matplotlib) inside their handlers so that
``logloss --help`` stays fast.

Errors: a handler raises :class:`CLIError` (or ``ValueError`` from the library) for bad input;
``main`` prints one line, ``logloss: error: <message>``, and exits with status 2.  Handlers check
their arguments before importing torch (:func:`check_run_folder` for ``--checkpoint``), so a bad
argument costs milliseconds, not the seconds torch takes to load.

``logloss completion bash|zsh`` prints a shell completion script generated from these argparse
definitions by shtab.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from logloss._json import dumps
from logloss._version import __version__

# One module per subcommand group; order is the order of ``logloss --help``.
COMMAND_MODULES = ("core", "data", "train", "predict", "explain", "evaluate", "report", "serve")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # as logloss.training.devices, without torch
COMPLETION_SHELLS = ("bash", "zsh")
RUN_METADATA = "checkpoint.json"  # the file that makes a folder a run (training.run_folder)


class CLIError(Exception):
    """Invalid input given on the command line: printed as one line, exit status 2."""


class _OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, like every other error of the tool."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"logloss: error: {message} (see '{self.prog} --help')\n")


def add_json_flag(
    parser: argparse.ArgumentParser, text: str = "print JSON instead of text"
) -> None:
    """The ``--json`` flag every command that prints results shares."""
    parser.add_argument("--json", action="store_true", default=False, help=text)


def add_checkpoint_arguments(
    parser: argparse.ArgumentParser, *, which: bool = True, required: bool = True
) -> None:
    """``--checkpoint DIR`` (a ``logloss train --out`` folder) and, unless ``which=False``,
    ``--which best|last|initial``: the same wording for every command that reads a run.
    ``required=False`` for commands that can read another source instead (``--predictions``)."""
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=required,
        default=None,
        metavar="DIR",
        help="run folder written by `logloss train --out DIR`"
        + (" (required)" if required else ""),
    )
    if which:
        parser.add_argument(
            "--which",
            choices=("best", "last", "initial"),
            default="best",
            help="weights to use: best (validation accuracy), last, or initial (untrained) "
            "(default: best)",
        )


def check_run_folder(path: Path) -> None:
    """``--checkpoint DIR`` is a run folder (it holds checkpoint.json), or a one-line error.

    Cheap and torch-free: the commands that read a run call it before importing torch.
    """
    if not (path / RUN_METADATA).is_file():
        why = "" if path.is_dir() else f"; {path} is not a directory"
        raise CLIError(
            f"--checkpoint {path} is not a logloss checkpoint directory (no {RUN_METADATA}{why}); "
            "pass the --out folder of a `logloss train` run"
        )


def print_json(payload: Any) -> None:
    """Print strict JSON under logloss's one policy (:mod:`logloss._json`: non-finite floats as
    the strings "NaN", "Infinity", "-Infinity")."""
    print(dumps(payload))


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="logloss",
        description="Cross-entropy (log loss) you can compute, verify, train with and explain.",
    )
    parser.add_argument("--version", action="version", version=f"logloss {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_OneLineErrorParser
    )
    for name in COMMAND_MODULES:
        importlib.import_module(f"logloss.cli.{name}").register(subparsers)
    _add_completion(subparsers, parser)
    return parser


def _add_completion(subparsers: Any, root: argparse.ArgumentParser) -> None:
    """``logloss completion bash|zsh``: the completion script of ``root``, by shtab."""
    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for every command and option, generated from "
        "logloss's own argument definitions (by shtab).  bash: "
        "logloss completion bash > ~/.local/share/bash-completion/completions/logloss ; "
        'zsh: logloss completion zsh > "${fpath[1]}/_logloss" (then restart the shell).',
    )
    completion.add_argument("shell", choices=COMPLETION_SHELLS, help="bash or zsh")

    def run_completion(args: argparse.Namespace) -> int:
        import shtab  # only this command needs it: keeps `logloss --help` fast

        print(shtab.complete(root, shell=args.shell))
        return 0

    completion.set_defaults(handler=run_completion)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:
        # The reader went away (``logloss ... | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # an unreadable, unwritable or missing file named by the user
        where = f"cannot use {error.filename}: " if error.filename else ""
        print(f"logloss: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except (CLIError, ValueError) as error:
        print(f"logloss: error: {error}", file=sys.stderr)
        if getattr(args, "verbose", False) and getattr(error, "details", ""):
            print(error.details, file=sys.stderr)  # e.g. every place a dataset was looked for
        return 2
    except KeyboardInterrupt:
        print("logloss: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
