"""A stage's outputs as dvc.lock records them: put back when the stage fails, and dropped
when they describe a model that a stage has just replaced.

DVC deletes a stage's outputs before it runs the stage's command, and records new ones only
when the command succeeds. A failed run (a bad param, a missing folder, a crash) would
otherwise leave the workspace without the last good results: the stage puts back what
dvc.lock records, from DVC's cache (where the run-cache keeps uncached metrics and plots
too) or, for files git tracks, from the last commit. Outputs recorded for other inputs
than the lock's upstream outputs (an earlier stage of the same run produced new ones) are
not put back: they no longer describe anything.

A stage that ran only part of the pipeline (``dvc exp run evaluate``, a tuner's trial)
would leave the files of stages downstream of a new model in place, and an experiment's
row would show metrics of another model: once a stage has written an output that other
stages read, the outputs of those that read another version of it are removed.

Reads dvc.lock and DVC 3's cache layout (``files/md5/ab/cdef…``, ``.dir`` listings) as
files; imports nothing of DVC's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.paths import dvc_cache_dir

LOCK = "dvc.lock"
KINDS = ("deps", "outs")


@dataclass(frozen=True)
class Recorded:
    """An output or dependency as dvc.lock records it."""

    path: str
    md5: str | None

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Recorded:
        return cls(str(entry["path"]), entry.get("md5"))


def read_lock(root: Path) -> dict[str, dict[str, list[Recorded]]]:
    """``{stage: {"deps": [...], "outs": [...]}}`` of ``root``'s dvc.lock ({} without one)."""
    try:
        lock = yaml.safe_load((root / LOCK).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    stages = lock.get("stages") if isinstance(lock, dict) else None
    return {
        name: {
            kind: [Recorded.of(item) for item in entry.get(kind) or []] for kind in ("deps", "outs")
        }
        for name, entry in (stages or {}).items()
        if isinstance(entry, dict)
    }


def restore_outputs(stage: str, root: Path) -> list[str]:
    """Put back ``stage``'s outputs as dvc.lock records them, in place of what its failed
    command left; return the paths that could not be (their content is nowhere here)."""
    stages = read_lock(root)
    if stage not in stages or _stale(stages, stage):
        return []
    lost = []
    for out in stages[stage]["outs"]:
        files = _sources(root, out)
        if files is None:
            lost.append(out.path)
            continue
        _remove(root / out.path)
        for relpath, source in files.items():
            if relpath:  # a folder's file: linked to the cache object, as DVC checks it out
                _place(source, root / out.path / relpath, link=True)
            else:
                _place(source, root / out.path)
    return lost


def drop_results_of_replaced(stage: str, root: Path) -> list[str]:
    """Remove the outputs of every stage that read another version of a file ``stage`` has
    just written (its model, say); return the stages whose outputs went."""
    stages = read_lock(root)
    read = {dep.path for entry in stages.values() for dep in entry["deps"]}
    written = {
        out.path: _md5(root / out.path)
        for out in stages.get(stage, {}).get("outs", [])
        if out.path in read and (root / out.path).is_file()
    }
    dropped = []
    for name, entry in stages.items():
        if name != stage and any(
            dep.path in written and dep.md5 != written[dep.path] for dep in entry["deps"]
        ):
            for out in entry["outs"]:
                _remove(root / out.path)
            dropped.append(name)
    return dropped


def _stale(stages: dict[str, dict[str, list[Recorded]]], stage: str) -> bool:
    """Whether ``stage`` read another version of an output the lock records for a stage."""
    produced = {out.path: out.md5 for entry in stages.values() for out in entry["outs"]}
    return any(
        dep.path in produced and dep.md5 != produced[dep.path] for dep in stages[stage]["deps"]
    )


def _sources(root: Path, out: Recorded) -> dict[str, Path | bytes] | None:
    """Where each file of ``out`` is (a cache object, or a file's bytes from git), keyed by
    its path inside ``out`` ("" for a file output); None if any is nowhere."""
    if out.md5 is None:
        return None
    if out.md5.endswith(".dir"):
        listing = _object(root, out.md5)
        if listing is None:
            return None
        files: dict[str, Path | bytes] = {}
        for item in json.loads(listing.read_text()):
            found = _object(root, item["md5"])
            if found is None:
                return None
            files[item["relpath"]] = found
        return files
    found = _object(root, out.md5) or _committed(root, out)
    return None if found is None else {"": found}


def _object(root: Path, md5: str) -> Path | None:
    path = dvc_cache_dir(root) / "files" / "md5" / md5[:2] / md5[2:]
    return path if path.is_file() else None


def _committed(root: Path, out: Recorded) -> bytes | None:
    """``out``'s bytes at the last commit (a git-tracked metrics or plots file), if they
    are the ones dvc.lock records."""
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{out.path}"],
            cwd=root,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if shown.returncode != 0 or hashlib.md5(shown.stdout).hexdigest() != out.md5:
        return None
    return shown.stdout


def _place(source: Path | bytes, target: Path, *, link: bool = False) -> None:
    """``source`` at ``target``: git's bytes, or a cache object copied (a file output, which
    git may track and users edit) or, with ``link``, hard-linked where the file system
    allows (a folder output's file, which DVC itself checks out so: read-only, never
    written through)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        target.write_bytes(source)
        return
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        os.remove(path)


def _md5(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()
