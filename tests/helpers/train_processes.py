"""The train stage with processes that misbehave on purpose, for tests/test_train_processes.py.

``TRAIN_SCENARIO`` (inherited by the launched processes) says how: ``raise`` (rank 1 raises
as training starts), ``kill`` (rank 1 is killed by SIGKILL), ``prune`` (rank 0 alone is
told to prune after epoch 2, as a trial link would be). Run from a workspace as
``python train_processes.py``, as dvc runs stages/train.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from visiontune.config.params import Params
from visiontune.config.paths import MODEL, PREPARED, TRAIN_LIVE, TRAIN_METRICS
from visiontune.stage import run_stage
from visiontune.training.distributed import joined
from visiontune.training.fit import EpochResult
from visiontune.training.launch import launches, run_processes
from visiontune.training.train_stage import train


def told_to_prune(result: EpochResult) -> str | None:
    return "told to" if result.epoch == 2 else None


def main(params: Params) -> None:
    if launches(params.train):
        run_processes(params.train, Path(__file__))
        return
    scenario = os.environ["TRAIN_SCENARIO"]
    with joined(params.train) as group:
        if group.rank == 1 and scenario == "raise":
            raise RuntimeError("raised on purpose")
        if group.rank == 1 and scenario == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        pruning = scenario == "prune" and group.rank == 0
        paths = {"model_path": MODEL, "live_dir": TRAIN_LIVE, "summary_path": TRAIN_METRICS}
        train(params, PREPARED, **paths, on_epoch=told_to_prune if pruning else None, group=group)


if __name__ == "__main__":
    run_stage(main)
