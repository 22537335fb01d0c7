"""In-process studies on a prepared set: the tuner's work without dvc, for quick tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from helpers.dvc_repo import SPACE
from visiontune.config.params import Params
from visiontune.config.tune_settings import parse_settings
from visiontune.tuning.options import TuneOptions
from visiontune.tuning.tuner import tune


def in_process_study(
    prepared: Path, repo: Path, *, trials: int, epochs: int, **tune_params: Any
) -> optuna.Study:
    """Run ``trials`` in-process trials of :data:`SPACE` (``epochs`` each) on ``prepared``,
    linked as ``repo``'s data/prepared; ``tune_params`` add to the tuner's settings."""
    (repo / "data").mkdir()
    (repo / "data" / "prepared").symlink_to(prepared)
    settings = parse_settings({"space": SPACE, "n_startup_trials": 2, **tune_params})
    options = TuneOptions(
        trials=trials,
        storage=f"sqlite:///{repo / 's.db'}",
        in_process=True,
        fixed={"train.epochs": epochs},
        settings=settings,
    )
    return tune(Params(), options, repo=repo)
