"""The train stage's processes, as the environment tells them (light: imports no torch).

With ``train.nproc`` > 1 the stage's own process launches the others through torchrun
(:mod:`visiontune.training.launch`) and records its pid in :data:`LAUNCHER_ENV`; each
launched process reads its rank from torchrun's ``RANK``/``WORLD_SIZE``, and ends by
itself when its launcher dies (:func:`watch_launcher`, through :func:`end_with_parent`,
which preprocess's decoders use too).
Nodes and the rendezvous endpoint of a run over several machines come from
:data:`NNODES_ENV` and :data:`ENDPOINT_ENV`: they say where the processes run, never what
they compute (``train.nproc``, the total, is a param).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

LAUNCHER_ENV = "VISIONTUNE_LAUNCHER_PID"  # set by the launcher for the processes it starts
NNODES_ENV = "VISIONTUNE_NNODES"  # machines (nodes) of a run; default 1
ENDPOINT_ENV = "VISIONTUNE_RDZV_ENDPOINT"  # host:port of torchrun's c10d rendezvous
RUN_ID_ENV = "VISIONTUNE_RDZV_ID"  # the rendezvous id all nodes of one run share
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 0.5  # how often the fallback off Linux looks at the parent's pid


def launched() -> bool:
    """Whether this process is one the train stage's launcher started."""
    return LAUNCHER_ENV in os.environ


def rank_label() -> str:
    """``rank R of N`` of a launched process (torchrun's ``RANK`` and ``WORLD_SIZE``)."""
    return f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}"


def watch_launcher() -> None:
    """End this launched process when its launcher dies, even by ``kill -9``; if the
    launcher is already gone, end now."""
    end_with_parent(int(os.environ[LAUNCHER_ENV]), sys.platform.startswith("linux"))


def end_with_parent(parent: int, death_signal: bool) -> None:
    """Make this process end when ``parent`` (its parent) does: through the parent-death
    signal when ``death_signal`` (Linux), else through a thread watching the parent's pid."""
    if death_signal:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the signal or the watch was in place
        os._exit(1)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)
