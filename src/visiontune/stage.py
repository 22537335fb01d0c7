"""Shared entry point of the stage scripts in stages/: params in, one-line errors out, and
the workspace's record kept true (:mod:`visiontune.config.stage_outputs`)."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from visiontune.config import cpu_kernels, processes, trial_devices
from visiontune.config.errors import (
    USER_ERROR_EXIT,
    VisiontuneError,
    debugging,
    one_line_errors,
    reason,
)
from visiontune.config.params import Params, load_params
from visiontune.config.stage_outputs import drop_results_of_replaced, restore_outputs


def run_stage(main: Callable[[Params], None], params_path: Path = Path("params.yaml")) -> None:
    """Load and validate params, run ``main``; a user error is one line on stderr and exit
    status USER_ERROR_EXIT, which the tuner reads as "do not retry".

    A stage of a tuner's trial first takes the GPUs the tuner handed the trial
    (:mod:`~visiontune.config.trial_devices`), and says which; processes it launches inherit
    them. The stage is the dvc.yaml stage its script is named after (stages/train.py: train). If
    it fails, its outputs are put back as dvc.lock records them; once it succeeds, the
    outputs of stages that read an earlier version of what it wrote are removed. A process
    the train stage launched (``train.nproc`` > 1) leaves the outputs to its launcher.
    """
    if processes.launched():
        _run_launched(main, params_path)
        return
    stage = Path(main.__globals__["__file__"]).stem
    root = Path.cwd()
    with one_line_errors(USER_ERROR_EXIT), _restored_on_failure(stage, root):
        devices = trial_devices.apply()  # before CUDA starts
        if devices is not None:
            print(f"{trial_devices.VISIBLE_ENV}={devices}: the GPUs its tuner handed this trial")
        params = load_params(params_path)
        cpu_kernels.request(params.train.cpu_kernels)  # before torch's first computation
        main(params)
    dropped = drop_results_of_replaced(stage, root)
    if dropped:
        print(f"removed the results of {', '.join(dropped)}: they describe the previous model")


def _run_launched(main: Callable[[Params], None], params_path: Path) -> None:
    """``main`` in a process the train stage launched: it ends with its launcher, and any
    error is one line naming its rank (the launcher then stops the others and fails)."""
    processes.watch_launcher()
    try:
        params = load_params(params_path)
        cpu_kernels.request(params.train.cpu_kernels)
        main(params)
    except VisiontuneError as exc:
        _fail(f"error: {processes.rank_label()}: {exc}", USER_ERROR_EXIT, exc)
    except Exception as exc:
        _fail(f"error: {processes.rank_label()}: {type(exc).__name__}: {reason(exc)}", 1, exc)


def _fail(line: str, status: int, exc: BaseException) -> None:
    if debugging():
        traceback.print_exception(exc)
    print(line, file=sys.stderr, flush=True)
    sys.exit(status)


@contextmanager
def _restored_on_failure(stage: str, root: Path) -> Iterator[None]:
    """Put ``stage``'s recorded outputs back if the block raises (Ctrl-C included)."""
    try:
        yield
    except BaseException:
        try:
            lost = restore_outputs(stage, root)
        except Exception as exc:  # never hide the stage's own error behind this one
            lost = [f"({type(exc).__name__}: {exc})"]
        if lost:
            print(f"could not put back {', '.join(lost)} of stage {stage}", file=sys.stderr)
        raise
