"""User-facing errors: one line, naming the key or path, exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """Bad input from the user (space file, CLI flag, dataset path). Printed as one line, exit 2."""


class StageIncomplete(Exception):
    """A pipeline stage ended before all its work was done (e.g. interrupted); later stages must not start."""


def exit_on_user_error(main: F) -> F:
    """Wrap a CLI entry point so that a `UserError` prints `error: ...` and exits 2, no traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            message = " ".join(str(exc).split())  # keep it on one line
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]
