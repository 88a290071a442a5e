"""The ``cfcam-fast`` command line, the top layer: it parses arguments, calls the layers
below and prints; one subcommand per module of this package.

A subcommand module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when its subcommand runs (or for ``--help``).
A ``ValueError`` (bad input) or ``OSError`` (a file that cannot be written) escaping
``run`` is a user error: one line on stderr, exit status 1, no traceback. ``--version``
prints ``cfcam-fast <version>``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand name -> module path; registering a command is one line here.
COMMANDS = {
    "explain": "cfcam_fast.cli.explain",
    "evaluate": "cfcam_fast.cli.evaluate",
    "bench": "cfcam_fast.cli.bench",
    "export": "cfcam_fast.cli.export",
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the ``selected`` subcommand's module is imported for its options."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="cfcam-fast", description="Fast CF-CAM explanations.")
    parser.add_argument("--version", action="version", version=f"cfcam-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_path in COMMANDS.items():
        if selected in (None, name):
            module = importlib.import_module(module_path)
            module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
            sub.choices[name].set_defaults(run=module.run)
        else:
            sub.add_parser(name, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cfcam-fast`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except (ValueError, OSError) as exc:
        print(f"cfcam-fast: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
