"""The GPUs a tuner hands one trial: the ``CUDA_VISIBLE_DEVICES`` of every stage of the
trial's experiment.

DVC's queue workers share one environment and take any queued task, so a trial's devices
cannot travel in it. The tuner writes them into a file named after the trial's experiment
(:func:`devices_file`), in the folder :data:`FOLDER_ENV` names in the environment of the
experiments it runs; each stage of that experiment (dvc names it in :data:`EXPERIMENT_ENV`)
makes them its ``CUDA_VISIBLE_DEVICES`` when it starts, before CUDA does (:func:`apply`),
and so do the processes it starts (torchrun's). A stage run any other way finds no file
and keeps its environment. Light: imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

FOLDER_ENV = "VISIONTUNE_TRIAL_DEVICES"  # set by the tuner: where its trials' files are
EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by dvc for every stage of an experiment
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def devices_file(folder: Path, experiment: str) -> Path:
    """Where the tuner writes the devices of ``experiment`` (``0,1``)."""
    return folder / experiment


def apply(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Make ``environ``'s ``CUDA_VISIBLE_DEVICES`` the devices the tuner handed this
    stage's experiment, and return them; None (``environ`` as it was) if it handed none."""
    folder, experiment = environ.get(FOLDER_ENV), environ.get(EXPERIMENT_ENV)
    if not folder or not experiment:
        return None
    try:
        devices = devices_file(Path(folder), experiment).read_text().strip()
    except FileNotFoundError:
        return None
    environ[VISIBLE_ENV] = devices
    return devices
