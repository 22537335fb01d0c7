"""Where the pipeline's files live, written once: dvc.yaml names the same paths (a test
checks that they agree), relative to the repository root where dvc runs every stage. Also
where the Optuna study lives by default, how a storage URL reaches its database driver, and
the helpers that write outputs: as new files, never through a link into DVC's cache; and
where DVC keeps a repository's cache."""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RAW = Path("data/raw")  # download
PREPARED = Path("data/prepared")  # preprocess
DATA_METRICS = Path("metrics/data.json")
MODEL = Path("models/model.pt")  # train
WEIGHTS = Path("weights")  # train, sweep: model.weights names a file in it (DVC-tracked)
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


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Where to write a new ``path`` (folders made): a file of the same name in a hidden
    sibling folder (torch.save writes the name into its archive), moved over ``path`` once
    the block ends without an error.

    The pipeline's outputs may be hardlinks into DVC's cache (``cache.type`` in .dvc/config),
    read-only and shared with the cached object of the run that made them: a write through
    one (by root, or a stage script run by hand) would change that object too, and DVC
    trusts read-only objects without hashing them again. A new file renamed over the link
    never touches it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield folder / path.name
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as indented JSON with a final newline, folders made; a new
    file replaces ``path`` (:func:`replacing`)."""
    with replacing(path) as partial:
        partial.write_text(json.dumps(data, indent=2) + "\n")


def engine_url(url: str) -> str:
    """An Optuna storage URL as SQLAlchemy should open it: a bare ``postgresql://`` names
    psycopg2, the driver this project installs (SQLAlchemy 2.1 reads it as psycopg 3)."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def dvc_cache_dir(root: Path) -> Path:
    """The DVC cache directory of the repository at ``root``, as its config sets it.

    DVC's temp and queued experiments run in a copy whose ``.dvc/config.local`` points
    ``cache.dir`` at the original repository's cache.
    """
    for name in ("config.local", "config"):
        config = configparser.ConfigParser(interpolation=None, strict=False)
        path = root / ".dvc" / name
        try:
            config.read(path)
        except configparser.Error:
            continue
        folder = config.get("cache", "dir", fallback=None)
        if folder:
            return (path.parent / Path(folder).expanduser()).resolve()
    return root / ".dvc" / "cache"
