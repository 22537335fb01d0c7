"""A content-addressed store of sweep cell results, shared by every run on this machine.

A cell's result depends only on its effective params (``model.*`` and ``train.*`` after the
cell's overrides, but for ``train.nproc`` and ``train.sync_bn``: a cell trains in one
process), the weights file it starts from (``model.weights``), the prepared data it trains
on, the code that trains it (every source file the sweep module imports, lazily or not) and
the libraries and device that code runs on. A cell's key is the sha256 of all of these, so
a stored result is reused only where training again would give the same numbers. The store
lives beside DVC's cache (``<cache>/visiontune/sweep``), where the temp and queued
experiments of the repository find it too; deleting it only costs re-training.

This module imports nothing heavy: a sweep whose cells are all stored never loads torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from visiontune.config.params import Params
from visiontune.config.paths import WEIGHTS, dvc_cache_dir
from visiontune.data.prepared import stored_files
from visiontune.experiments.source_closure import PACKAGE, import_closure

# The prepared splits a cell reads (the test split never enters training).
_SPLITS = ("train", "val")
# Libraries whose version can change a trained model's numbers.
_LIBRARIES = ("torch", "timm", "numpy")
# Train params of several processes: the sweep trains every cell in one, so they change none.
_SEVERAL_PROCESSES = ("nproc", "sync_bn")
# Environment that changes which device train.device=auto picks.
_DEVICE_ENV = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


class CellStore:
    """Sweep cell results on disk, one JSON file per key."""

    def __init__(self, folder: Path, prepared_dir: Path):
        self.folder = folder
        self.context = _context(prepared_dir)
        self._weights: dict[str, str | None] = {}

    @classmethod
    def for_repo(cls, root: Path, prepared_dir: Path) -> CellStore:
        """The store beside the DVC cache of the repository at ``root``."""
        return cls(dvc_cache_dir(root) / "visiontune" / "sweep", prepared_dir)

    def key(self, params: Params) -> str:
        """The key of a cell trained with ``params`` on this store's data, code and device."""
        cell = {
            "model": dataclasses.asdict(params.model),
            "train": {
                name: value
                for name, value in dataclasses.asdict(params.train).items()
                if name not in _SEVERAL_PROCESSES
            },
            "context": self.context,
        }
        if params.model.weights_file:
            cell["weights"] = self._weights_digest(params.model.weights_file)
        return _sha256(json.dumps(cell, sort_keys=True).encode())

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored result of ``key``, or None when absent or unreadable."""
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, result: dict[str, Any]) -> None:
        """Store ``result`` under ``key`` atomically: readers never see half a file."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(result, sort_keys=True) + "\n")
        partial.replace(path)

    def _weights_digest(self, name: str) -> str | None:
        """The sha256 of ``weights/<name>`` (None if unreadable: training then says why)."""
        if name not in self._weights:
            try:
                with (WEIGHTS / name).open("rb") as file:
                    self._weights[name] = hashlib.file_digest(file, "sha256").hexdigest()
            except OSError:
                self._weights[name] = None
        return self._weights[name]

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"


def _context(prepared_dir: Path) -> dict[str, Any]:
    """Everything besides params that a cell's result depends on."""
    code = {
        path.relative_to(PACKAGE).as_posix(): _sha256(path.read_bytes())
        for path in sorted(
            {
                PACKAGE / "experiments" / "sweep.py",
                *import_closure(PACKAGE / "experiments" / "sweep.py"),
            }
        )
    }
    data = {path.name: _sha256(path.read_bytes()) for path in stored_files(prepared_dir, _SPLITS)}
    return {
        "code": code,
        "data": data,
        "libraries": {name: metadata.version(name) for name in _LIBRARIES},
        "python": sys.version,
        "machine": [platform.system(), platform.machine()],
        "device_env": {name: os.environ.get(name) for name in _DEVICE_ENV},
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
