"""The preprocess stage's decoding processes: a pool whose workers end with the process that
started them, even when it is killed (``kill -9``, an OOM kill, ``dvc queue kill``).

On Linux the workers are forked (they start at once, the stage's modules already imported)
and each asks the kernel for SIGKILL when its parent dies (``prctl``'s parent-death
signal). Elsewhere they are spawned (forking is unsafe on macOS) and a thread in each
watches the parent's pid (:func:`~visiontune.config.processes.end_with_parent`, as the
train stage's launched processes do); once they are gone, multiprocessing's resource tracker, which
waits for every holder of its pipe to close it, ends too.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from visiontune.config.processes import end_with_parent


def decoder_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` processes that end when this one does."""
    linux = sys.platform == "linux"
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("fork" if linux else "spawn"),
        initializer=end_with_parent,
        initargs=(os.getpid(), linux),
    )
