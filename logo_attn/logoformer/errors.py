"""How the application reports a user's mistake: `UsageError`, printed by the command-line entry
points as one line ``error: <what and where>`` with exit status 2. Anything else is a bug and keeps
its traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class UsageError(ValueError):
    """A setting, file or environment that cannot work, named in the message (a ValueError, so code
    calling the application as a library can catch it like any bad argument)."""


# A missing or unreadable path the user gave is a usage error too, whoever noticed it first.
USER_ERRORS = (UsageError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def run_command(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run a command's `main`; a user error ends it with one line on stderr and exit status 2."""
    try:
        main(argv)
    except USER_ERRORS as error:
        print(f"error: {_one_line(str(error))}", file=sys.stderr)
        raise SystemExit(2) from None


def _one_line(message: str) -> str:
    # A DataLoader worker's error (a broken clip) comes back re-raised with the worker's traceback in
    # its message; what the user needs is the last line of that traceback, the original message.
    lines = message.strip().splitlines()
    if lines and lines[0].startswith("Caught ") and "in DataLoader worker process" in lines[0]:
        message = lines[-1].split(": ", 1)[-1]
    return " ".join(message.split())  # one line, whatever the message's own layout
