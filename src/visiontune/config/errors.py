"""The one error type users see: a message for a single line, never a traceback.

Set ``VISIONTUNE_DEBUG=1`` to have every one-line error print the full traceback first.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

DEBUG_ENV = "VISIONTUNE_DEBUG"
# Exit status of a stage stopped by a user error (bad params or data, diverging training):
# the tuner tells it from a crash by this code and does not retry it. Commands exit 1.
USER_ERROR_EXIT = 3
# Exit status of `visiontune drift --fail-on-drift` that found drift (not an error).
DRIFT_EXIT = 4


class VisiontuneError(Exception):
    """A failure caused by input (params, data, network): reported as one line."""


def reason(exc: BaseException, *, innermost: bool = False) -> str:
    """The one-line reason of an exception: the first non-empty line of its message, or its
    type name. With ``innermost``, of the exception at the bottom of its chain (the socket
    error under a download error, say)."""
    if innermost:
        while (inner := exc.__cause__ or exc.__context__) is not None:
            exc = inner
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def debugging() -> bool:
    """Whether ``VISIONTUNE_DEBUG`` asks for tracebacks behind one-line errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextmanager
def one_line_errors(exit_code: int = 1) -> Iterator[None]:
    """Turn a VisiontuneError into one line on stderr and ``exit_code``; Ctrl-C into
    ``interrupted`` and exit status 130.

    With ``VISIONTUNE_DEBUG=1`` the traceback (and the exception it was raised from, even
    when the message suppressed it) is printed before the line.
    """
    try:
        yield
    except VisiontuneError as exc:
        if debugging():
            _print_traceback(exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _print_traceback(exc: BaseException) -> None:
    """The traceback of ``exc``, after the one it replaced with ``raise ... from None``."""
    hidden = exc.__context__ if exc.__suppress_context__ else None
    if hidden is not None:
        traceback.print_exception(hidden)
        print("\nwhich visiontune reported as:\n", file=sys.stderr)
    traceback.print_exception(exc)
