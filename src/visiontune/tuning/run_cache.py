"""Keep DVC's run-cache from replaying a pruned trial's train stage.

DVC saves every stage it runs in its run-cache (``<cache>/runs``), keyed by the stage's
deps and params, and restores the outputs instead of running a stage whose key it has
seen. A pruned trial's train stage has the key of a full run with the same params: left
there, a later ``dvc repro`` or ``dvc exp run`` with those params would restore the pruned
model instead of training it. So once a pruned trial is settled, its entry goes: the one
that saved the pruned experiment's model (entries are lock files, as in dvc.lock).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import yaml

from visiontune.config.paths import MODEL, dvc_cache_dir
from visiontune.experiments.listing import experiment_file

TRAIN_STAGE = "train"


def forget_pruned(repo: Path, experiment: str) -> int:
    """Remove the run-cache entries of ``experiment``'s (pruned) train stage; how many."""
    model = _model_hash(repo, experiment)
    if model is None:
        return 0
    removed = 0
    for entry in (dvc_cache_dir(repo) / "runs").glob("*/*/*"):
        text = entry.read_text(errors="replace")
        if model in text and _saved(yaml.safe_load(text), model):
            entry.unlink()
            removed += 1
            with contextlib.suppress(OSError):  # dvc fails on a key folder left empty
                entry.parent.rmdir()
    return removed


def _model_hash(repo: Path, experiment: str) -> str | None:
    """The md5 of ``models/model.pt`` in the experiment's dvc.lock."""
    lock = experiment_file(repo, experiment, "dvc.lock")
    stage = (yaml.safe_load(lock or "{}") or {}).get("stages", {}).get(TRAIN_STAGE, {})
    return next((out.get("md5") for out in stage.get("outs", []) if _is_model(out)), None)


def _saved(entry: object, model: str) -> bool:
    outs = entry.get("outs", []) if isinstance(entry, dict) else []
    return any(_is_model(out) and out.get("md5") == model for out in outs)


def _is_model(out: object) -> bool:
    return isinstance(out, dict) and out.get("path") == MODEL.as_posix()
