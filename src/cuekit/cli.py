"""The `cuekit` command: top-level commands and one subcommand group per area.

Bad input is handled the same way in every command: the flags that mean the same everywhere
(counts and sizes, --device, --out) are checked here when the command line is parsed, every error
is printed as one line without a traceback, and the exit codes follow the one scheme of
`cuekit.errors` (stated in `cuekit --help`).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Callable

from cuekit import __version__

# Modules with `register(subparsers)`; each adds its own commands. register() only builds
# parsers (no heavy imports); handlers import what they need. A module not written yet is
# skipped.
CLI_MODULES = [
    "cuekit.train.cli",      # train, eval, predict
    "cuekit.data.cli",       # data list|preview|check
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

EXIT_CODES_HELP = """\
exit codes (every command):
  0    success
  1    the work failed or found a problem: training diverged, an area of
       `reproduce` failed, `data check` found unreadable files
  2    bad input of any kind: a flag, name or value, or a file or data it
       points to (missing, unreadable, malformed, or not fitting the model)
  130  interrupted (Ctrl-C)
errors are one line on stderr; `cuekit COMMAND --help` shows each command's flags and defaults."""

# Integer flags that mean the same in every command (counts and sizes), by argparse dest: the smallest
# value that can work. Checked when the command line is parsed, so nothing runs on a value that cannot.
MINIMUM: dict[str, int] = {
    "epochs": 1, "rerun_epochs": 1, "batch_size": 1, "eval_batch_size": 1, "accum_steps": 1,
    "train_size": 1, "val_size": 1, "img_size": 1, "input_size": 1, "frames": 1, "topk": 1, "n": 1,
    "num_classes": 1, "in_chans": 1, "repeats": 1, "warmup": 0, "threads": 1, "workers": 0, "seeds": 1,
    "train_per_class": 1, "valid_per_class": 1, "inits": 1, "directions": 1, "probes": 1, "eval_samples": 1,
    "bases": 1, "bits": 1, "has_grid_size": 1, "overlays": 0, "map_size": 1, "shard_size": 1, "bins": 1,
    "networks": 1, "expansion": 1, "spatial": 1, "d_out": 1, "mother_steps": 1, "prior_steps": 1, "num": 1,
    "length": 1, "horizon": 1, "samples": 1,
}
SMALL_IMG_SIZE = 8  # below this many pixels a warning says that little detail is left


class CuekitArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default once: not for flags, None or empty defaults, nor where the
    help text already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = ("%(default)" in text or "default" in text.lower() or action.nargs == 0
                 or default in (None, "", [], ()) or default is argparse.SUPPRESS or isinstance(default, bool))
        if shown or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class _RootHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """The top-level help: the exit-code table kept as written."""


class AtLeast:
    """An argparse type: `convert(text)`, refused below `minimum` with a message naming both."""

    def __init__(self, convert: Callable[[str], Any], minimum: int):
        self.convert, self.minimum = convert, minimum
        self.__name__ = getattr(convert, "__name__", "number")

    def __call__(self, text: str) -> Any:
        try:
            value = self.convert(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"invalid {self.__name__} value: {text!r}") from None
        if value < self.minimum:
            raise argparse.ArgumentTypeError(f"must be at least {self.minimum}, got {value}")
        return value


def device_name(text: str) -> str:
    """An argparse type: a torch device that exists on this machine ("auto" always does)."""
    if text in ("auto", "cpu"):
        return text
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine (no GPU, or a CPU-only "
                                             "torch); use --device cpu or auto")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
        return text
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text}: MPS (Apple GPU) is not available on this machine; use cpu")
        return text
    raise argparse.ArgumentTypeError(f"{text}: unsupported device type; use auto, cpu, cuda, cuda:N or mps")


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing parent folder of `path` when it is in fact a file (nothing can be made below it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def output_folder(text: str) -> str:
    """An argparse type: a folder to write into (created when missing), never an existing file."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is an existing file; give a folder (it is created if missing)")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{text}: {blocker} is a file, so no folder can be made inside it")
    return text


def output_file(text: str) -> str:
    """An argparse type: a file to write (replaced if it exists), never an existing folder."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise argparse.ArgumentTypeError(f"{text}: {blocker} is a file, so no folder can be made inside it")
    return text


def _needs_subcommand(parser: argparse.ArgumentParser, choices: list[str]) -> Callable[[argparse.Namespace], int]:
    """The handler of a command group given without its subcommand: a one-line usage error."""

    def handler(args: argparse.Namespace) -> int:
        from cuekit.errors import UsageError

        raise UsageError(f"`{parser.prog}` needs a subcommand: {', '.join(choices)} (see `{parser.prog} --help`)")

    return handler


def _install_checks(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """Give every parser below `parser` the shared help formatter and the shared checks of MINIMUM, --device
    and --out (a folder, unless the command declared its own type); a group below the top needs a subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            if not top:
                parser.set_defaults(func=_needs_subcommand(parser, list(action.choices)))
            for sub in {id(p): p for p in action.choices.values()}.values():
                sub.formatter_class = DefaultsHelpFormatter
                _install_checks(sub, top=False)
        elif action.dest in MINIMUM and action.type is int:
            action.type = AtLeast(int, MINIMUM[action.dest])
        elif action.dest == "device" and action.type is None:
            action.type = device_name
        elif action.dest == "out" and action.type is None:
            action.type = output_folder


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every available area's subcommands."""
    parser = CuekitArgumentParser(
        prog="cuekit", formatter_class=_RootHelpFormatter, epilog=EXIT_CODES_HELP,
        description="Train, audit and ship image and video models with ten visual-recognition\n"
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
    _install_checks(parser)
    return parser


def warn(message: str) -> None:
    """Print a one-line warning on stderr: for settings that may be intended but probably are not."""
    print(f"cuekit: warning: {message}", file=sys.stderr)


def warn_degenerate(args: argparse.Namespace) -> None:
    """Warn about settings that can run but may not do what the user meant (tiny images, one-frame clips)."""
    img_size = getattr(args, "img_size", None)
    if isinstance(img_size, int) and img_size < SMALL_IMG_SIZE:
        warn(f"--img-size {img_size} is very small: images keep little detail, and most models learn little "
             f"below {SMALL_IMG_SIZE} px")
    if getattr(args, "frames", None) == 1:
        warn("--frames 1 makes one-frame clips: a video model sees no motion")


_BAD_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command, turning user errors into one-line messages and exit codes."""
    from cuekit.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CuekitError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a command-line error, already printed as one line; --help and --version exit as usual
        if e.code in (None, EXIT_OK):
            raise
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else EXIT_BAD_INPUT
    warn_degenerate(args)
    try:
        return int(args.func(args) or 0)
    except CuekitError as e:
        print(f"cuekit: error: {user_message(e)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a file or folder the command could not read or write
        print(f"cuekit: error: {user_message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(e, _BAD_PATH_ERRORS) else EXIT_FAILED
    except KeyboardInterrupt:
        print("cuekit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


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
    return " ".join(msg.split()) if "\n" in msg else msg


if __name__ == "__main__":
    sys.exit(main())
