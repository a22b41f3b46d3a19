"""The ``medrecon`` command line.

Each sub-command lives in its own module ``medrecon/cli/_<name>.py`` exposing
``register(subparsers)``; those modules import heavy libraries (torch, MONAI)
inside their ``run`` functions only, so ``medrecon info`` starts fast.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
import traceback

from medrecon import __version__
from medrecon.errors import MedreconError

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = (
    "info", "convert", "phantom",
    "mesh",
    "segment", "complete", "train", "evaluate",
    "reconstruct", "demo", "batch", "presets",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="medrecon",
        description="CT/MRI studies to printable 3D organ models (LPS millimetres).",
    )
    parser.add_argument("--version", action="version", version=f"medrecon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"medrecon.cli._{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medrecon.cli._{name}":
                continue
            raise
        module.register(sub)
    return parser


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
