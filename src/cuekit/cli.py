"""The `cuekit` command: top-level commands and one subcommand group per area."""
from __future__ import annotations

import argparse
import importlib
import sys

from cuekit import __version__

# Modules with `register(subparsers)`; each adds its own commands. register() only builds
# parsers (no heavy imports); handlers import what they need. A module not written yet is
# skipped.
CLI_MODULES = [
    "cuekit.train.cli",      # train, eval, predict
    "cuekit.data.cli",       # data preview
    "cuekit.models.cli",     # models list|info|convert|export
    "cuekit.report.cli",     # reproduce
    "cuekit.wcst.cli",
    "cuekit.wsol.cli",
    "cuekit.relabel.cli",
    "cuekit.robustness.cli",
    "cuekit.rank.cli",
    "cuekit.transmit.cli",
    "cuekit.nara.cli",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available area's subcommands."""
    parser = argparse.ArgumentParser(
        prog="cuekit",
        description="Train, audit and ship image and video models with ten visual-recognition "
        "research methods. Every command runs on built-in data by default.",
    )
    parser.add_argument("--version", action="version", version=f"cuekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in CLI_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is not None and (mod == e.name or mod.startswith(e.name + ".")):
                continue  # that area is not written yet
            raise
        m.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command, turning user errors into one-line messages and exit codes."""
    from cuekit.errors import CuekitError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except CuekitError as e:
        print(f"cuekit: error: {user_message(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cuekit: interrupted", file=sys.stderr)
        return 130


def user_message(error: Exception) -> str:
    """The one-line message of an error; a DataLoader worker's re-raised error carries the worker's
    whole traceback in its message, of which only the original message is kept."""
    msg = str(error)
    if msg.startswith("Caught ") and "Original Traceback" in msg:
        last = msg.strip().splitlines()[-1]
        name = type(error).__name__
        for prefix in (f"{type(error).__module__}.{name}: ", f"{name}: "):
            if last.startswith(prefix):
                return last[len(prefix):]
        return last
    return msg


if __name__ == "__main__":
    sys.exit(main())
