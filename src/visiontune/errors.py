"""The one error type users see: a message for a single line, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class VisiontuneError(Exception):
    """A failure caused by input (params, data, network): reported as one line."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name if it has none."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a VisiontuneError or Ctrl-C into one line on stderr and exit status 1."""
    try:
        yield
    except VisiontuneError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
