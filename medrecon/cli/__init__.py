"""The ``medrecon`` command line.

Each sub-command lives in its own module ``medrecon/cli/_<name>.py`` exposing
``register(subparsers)``; those modules import heavy libraries (torch, MONAI)
inside their ``run`` functions only, so ``medrecon info`` starts fast.

Every sub-command shares the same error and warning display: one
``medrecon: error: ...`` line and exit 1 for a :class:`MedreconError`, one
``medrecon: warning: ...`` line per warning (with its origin under
``--debug``, which may come before or after the sub-command).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import traceback
import warnings

from medrecon import __version__
from medrecon.errors import MedreconError

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "info", "convert", "phantom",
    "mesh",
    "segment", "complete", "train", "evaluate",
    "reconstruct", "demo", "batch", "presets",
)

_DEBUG_HELP = "show tracebacks on errors and where warnings come from"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="medrecon",
        description="CT/MRI studies to printable 3D organ models (LPS millimetres).",
    )
    parser.add_argument("--version", action="version", version=f"medrecon {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"medrecon.cli._{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medrecon.cli._{name}":
                continue
            raise
        module.register(sub)
    for command in sub.choices.values():
        # also after the sub-command; SUPPRESS keeps a --debug given before it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def _printable(text: str) -> str:
    # messages may quote DICOM text, which is untrusted: no raw control characters (terminal escapes)
    return "".join(c if c.isprintable() or c == "\n" else f"\\x{ord(c):02x}" for c in text)


def _warning_display(debug: bool):
    """Make a ``warnings.showwarning`` that prints ``medrecon: warning: <message>`` on stderr."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # showwarning's signature
        origin = f" [{category.__name__} at {filename}:{lineno}]" if debug else ""
        print(f"medrecon: warning: {_printable(str(message))}{origin}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    ``argv`` None means the program itself (``medrecon``, ``python -m
    medrecon``): the arguments come from ``sys.argv`` and the process ends
    when this returns.
    """
    code = _run(argv)
    if argv is None:
        # The process ends next: spare the interpreter's final garbage collection
        # a walk over every object of the imported libraries (numpy, scipy, VTK:
        # ~0.06 s after a mesh run). Nothing it could free matters any more.
        gc.freeze()
    return code


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():  # restores Python's display afterwards (tests, notebooks)
            warnings.showwarning = _warning_display(args.debug)
            return int(args.func(args) or 0)
    except MedreconError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"medrecon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("medrecon: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into e.g. `head`, which closed early: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - a last line of defence, never a raw traceback
        if args.debug:
            traceback.print_exc()
        print(
            f"medrecon: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for a traceback and report it)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
