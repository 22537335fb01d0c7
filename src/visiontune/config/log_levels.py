"""A logger quietened for a block: libraries that log advice, or attempts they go on from, as
warnings or errors where visiontune reports the outcome itself in one line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def log_level(name: str, level: int) -> Iterator[None]:
    """Logger ``name`` ("" for the root) at ``level`` for the block, then as it was."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
