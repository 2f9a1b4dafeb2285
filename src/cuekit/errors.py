"""User-facing errors: the CLI prints these as one line (no traceback) and exits with their code.

Exit codes (the one scheme of every command, stated in `cuekit --help`):
  0  success
  1  the work failed or found a problem: training diverged, an area of `reproduce` failed,
     `data check` found unreadable files
  2  bad input of any kind: flags, names and values, and the files and data they point to
     (missing, unreadable, malformed, or not fitting the model)
  130 interrupted (Ctrl-C)
"""
from __future__ import annotations

import difflib
from typing import Iterable

EXIT_OK = 0
EXIT_FAILED = 1       # the work failed or found a problem
EXIT_BAD_INPUT = 2    # bad flags, names, values, files or data
EXIT_INTERRUPTED = 130


class CuekitError(Exception):
    """An error caused by the user's input or environment, printed without a traceback."""

    exit_code = EXIT_FAILED


class UsageError(CuekitError):
    """Bad command-line input (unknown name, invalid value): exit code 2, like argparse."""

    exit_code = EXIT_BAD_INPUT


class UnknownChoiceError(UsageError, KeyError):
    """An unknown name (model, dataset, task, optimizer, ...) with the closest valid choices."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        close = difflib.get_close_matches(name, self.choices, n=3, cutoff=0.4)
        hint = close if close else self.choices[:8]
        more = "" if close or len(self.choices) <= 8 else f" (and {len(self.choices) - 8} more)"
        label = "did you mean" if close else "valid choices"
        super().__init__(f"unknown {kind} {name!r}; {label}: {', '.join(hint)}{more}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DataError(CuekitError):
    """Missing, unreadable or malformed data: bad input, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class CheckpointError(CuekitError):
    """A checkpoint that is missing, truncated, corrupted or does not fit the model: bad input, exit code 2."""

    exit_code = EXIT_BAD_INPUT


class TrainingDiverged(CuekitError):
    """The loss became NaN or infinite; the last good checkpoint was kept (a failure of the work: exit code 1)."""
