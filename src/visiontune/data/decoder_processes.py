"""The preprocess stage's decoding processes: a pool whose workers end with the process that
started them, even when it is killed (``kill -9``, an OOM kill, ``dvc queue kill``).

On Linux the workers are forked (they start at once, the stage's modules already imported)
and each asks the kernel for SIGKILL when its parent dies (``prctl``'s parent-death
signal). Elsewhere they are spawned (forking is unsafe on macOS) and a thread in each
watches the parent's pid; once they are gone, multiprocessing's resource tracker, which
waits for every holder of its pipe to close it, ends too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 0.5  # how often the fallback looks at the parent's pid


def decoder_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` processes that end when this one does."""
    linux = sys.platform == "linux"
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("fork" if linux else "spawn"),
        initializer=end_with_parent,
        initargs=(os.getpid(), linux),
    )


def end_with_parent(parent: int, death_signal: bool) -> None:
    """Make this process end when ``parent`` (its parent) does: through the parent-death
    signal when ``death_signal`` (Linux), else through a thread watching the parent's pid."""
    if death_signal:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the signal or the watch was in place
        os._exit(1)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)
