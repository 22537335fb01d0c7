"""Where the pipeline's files live, written once: dvc.yaml names the same paths (a test
checks that they agree), relative to the repository root where dvc runs every stage. Also
where the Optuna study lives by default, how a storage URL reaches its database driver, and
the one helper that writes JSON outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

RAW = Path("data/raw")  # download
PREPARED = Path("data/prepared")  # preprocess
DATA_METRICS = Path("metrics/data.json")
MODEL = Path("models/model.pt")  # train
TRAIN_LIVE = Path("plots/train")  # DVCLive's folder: plots/metrics/{train,val}/{loss,acc}.tsv
TRAIN_SERIES = "plots/train/plots/metrics/{}.tsv"  # one series, e.g. val/acc
TRAIN_METRICS = Path("metrics/train.json")
EVALUATE_METRICS = Path("metrics/evaluate.json")  # evaluate
EVALUATE_PLOTS = Path("plots/evaluate")
ROBUSTNESS_METRICS = Path("metrics/robustness.json")  # robustness
ROBUSTNESS_CURVES = Path("plots/robustness/curves.json")
SWEEP_PLOTS = Path("plots/sweep")  # sweep: grid.json, heatmap.html
SWEEP_GRID = SWEEP_PLOTS / "grid.json"
TUNE_SUMMARY = Path("metrics/tune.json")  # visiontune tune: in the workspace, not a stage's
TUNE_PLOTS = Path("plots/tune")
PROFILE_TRACE = Path("plots/profile/trace.json")  # visiontune profile: git-ignored
DEFAULT_STORAGE = "sqlite:///.optuna/studies.db"  # Optuna storage: a git-ignored file


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as indented JSON with a final newline, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def engine_url(url: str) -> str:
    """An Optuna storage URL as SQLAlchemy should open it: a bare ``postgresql://`` names
    psycopg2, the driver this project installs (SQLAlchemy 2.1 reads it as psycopg 3)."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url
