"""Shared entry point of the stage scripts in stages/: params in, one-line errors out, and
the workspace's record kept true (:mod:`visiontune.config.stage_outputs`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from visiontune.config import cpu_kernels, trial_devices
from visiontune.config.errors import USER_ERROR_EXIT, one_line_errors
from visiontune.config.params import Params, load_params
from visiontune.config.stage_outputs import drop_results_of_replaced, restore_outputs


def run_stage(main: Callable[[Params], None], params_path: Path = Path("params.yaml")) -> None:
    """Load and validate params, run ``main``; a user error is one line on stderr and exit
    status USER_ERROR_EXIT, which the tuner reads as "do not retry".

    A stage of a tuner's trial first takes the GPUs the tuner handed the trial
    (:mod:`~visiontune.config.trial_devices`), and says which. The stage is the dvc.yaml
    stage its script is named after (stages/train.py: train). If it fails, its outputs
    are put back as dvc.lock records them; once it succeeds, the outputs of stages that
    read an earlier version of what it wrote are removed.
    """
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
