"""What the command line sets for a study, and the defaults the tuner's modules share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontune.config.paths import DEFAULT_STORAGE
from visiontune.config.tune_settings import TuneSettings

# A trial runs the pipeline up to evaluate: not the robustness stage or the sweep, which
# would add to every trial; their files in a trial's commit stay its baseline's.
TRIAL_TARGET = "evaluate"
POLL_SECONDS = 1.0  # between looks at running trials
# A failed trial's log (its dvc exp run's output), kept as <name>.log: DVC's own copy goes
# with its queue task, a temp run's with the run. Git-ignored, beside the default storage.
TRIAL_LOGS = Path(".optuna/logs")
# The GPUs handed to each running trial (--gpus-per-trial), a file per experiment, removed
# when the trial ends (config/trial_devices.py). Git-ignored.
TRIAL_DEVICES = Path(".optuna/devices")


@dataclass(frozen=True)
class TuneOptions:
    """What the command line sets: how many trials, where the study lives, fixed params, and
    the tuner's settings (pyproject.toml's, with its ``--set tune.*`` applied)."""

    trials: int
    jobs: int = 1
    storage: str = DEFAULT_STORAGE
    study: str = "visiontune"
    fixed: dict[str, Any] = field(default_factory=dict)
    in_process: bool = False
    sampler: str = "tpe"
    gpus_per_trial: int = 0
    settings: TuneSettings = field(default_factory=TuneSettings)
