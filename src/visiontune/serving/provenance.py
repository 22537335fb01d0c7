"""Where a served model came from: the commit that recorded it as the train stage's output.

A checkpoint's md5 can appear in many commits' dvc.lock: as the train stage's output where
it was trained, and as a dependency of evaluate or robustness, stale or not, in later
commits and experiments. Only the first tells where the model came from; a model that no
commit records as the train stage's output is not committed, and says so.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

REVISION_ENV = "VISIONTUNE_REVISION"  # set by the API image's build (docker/api.Dockerfile)
TRAIN_STAGE = "train"
TRAINED = "records this model as the train stage's output"
TIMEOUT = 30.0  # seconds: a git call that takes longer has hung; the revision is unknown


@dataclass(frozen=True)
class Provenance:
    """The commit a model was trained at (None when there is none), and how that is known."""

    revision: str | None
    note: str


def provenance(model: Path, md5: str | None) -> Provenance:
    """Where the checkpoint of DVC md5 ``md5`` (the served file, or the one an ONNX export
    came from) was trained: ``$VISIONTUNE_REVISION`` if set, else the oldest commit of any
    branch or experiment of the repository around ``model`` whose dvc.lock records ``md5``
    as an output of the train stage."""
    if revision := os.environ.get(REVISION_ENV):
        return Provenance(revision, f"given by ${REVISION_ENV} when the image was built")
    if md5 is None:
        return Provenance(None, "unknown: the file records no checkpoint to look for")
    where = Path(model).resolve().parent
    commits = _git(
        where, "log", "--all", "--reverse", "--format=%H", "-S", md5, "--", ":(top)dvc.lock"
    )
    if commits is None:
        return Provenance(None, "unknown: not in a git repository")
    for commit in commits.split():
        lock = _git(where, "show", f"{commit}:dvc.lock")
        if lock is not None and md5 in _train_outputs(lock):
            return Provenance(
                commit,
                "the first commit whose dvc.lock records this model as the train stage's output",
            )
    return Provenance(
        None,
        "not committed: no commit's dvc.lock records this model as the train stage's output",
    )


def _train_outputs(lock: str) -> set[str]:
    """The md5s a dvc.lock records for the train stage's outputs."""
    try:
        stage = (yaml.safe_load(lock) or {}).get("stages", {}).get(TRAIN_STAGE) or {}
        return {str(out.get("md5")) for out in stage.get("outs") or []}
    except (yaml.YAMLError, AttributeError):
        return set()


def _git(cwd: Path, *args: str) -> str | None:
    """``git args``' output in ``cwd``; None if git is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
