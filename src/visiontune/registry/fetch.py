"""One registered version resolved through DVC's artifact API and its model fetched as
``dvc artifacts get`` fetches it: from the DVC cache of the repository, else its remote.

Beside the fetched model goes ``registered.json``: the version, its stages and commit, and
the artifact's description and meta from that commit's dvc.yaml, so that whoever serves the
file later (the API image) reports the registry's record rather than one typed by hand.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.log_levels import log_level
from visiontune.config.paths import write_json
from visiontune.registry.references import Reference, parse_reference
from visiontune.registry.versions import find_version

RECORD = "registered.json"  # beside a fetched model


@dataclass(frozen=True)
class Registered:
    """A fetched registered version: what /metadata reports as its registry record."""

    reference: str
    artifact: str
    version: str
    stages: list[str]
    rev: str
    path: str  # the artifact's path in its repository
    repo: str
    description: str | None
    labels: list[str]
    meta: dict[str, Any]
    md5: str | None  # of the model file, as its commit's dvc.lock records it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fetch(reference: Reference, repo: str, out_dir: Path) -> tuple[Path, Registered]:
    """Resolve ``reference`` in ``repo`` (a path or git URL), fetch its model into
    ``out_dir`` and write its record beside it; (the model's path, the record). One-line
    VisiontuneError for a reference that names nothing or a model no cache or remote holds."""
    from dvc.api import artifacts_show
    from dvc.exceptions import DvcException
    from dvc.repo.artifacts import Artifacts

    from visiontune.models.checkpoint import file_digest  # torch: only once it is needed

    version = find_version(repo, reference)
    try:
        shown = artifacts_show(reference.name, version=version.version, repo=repo)
    except DvcException as exc:
        raise VisiontuneError(f"{reference}: {reason(exc)}") from exc
    path = out_dir / Path(shown["path"]).name
    declared, lock = _yaml_at(repo, shown["rev"], ("dvc.yaml", "dvc.lock"))
    recorded = _recorded_md5(lock, shown["path"])
    if not (path.is_file() and file_digest(path, "md5") == recorded):  # else fetched before
        try:
            with log_level("dvc", logging.CRITICAL):  # it logs its try of DVC Studio as an ERROR
                Artifacts.get(
                    repo, reference.name, version=version.version, out=str(path), force=True
                )
        except DvcException as exc:
            why = reason(exc, innermost=True)
            raise VisiontuneError(
                f"{reference}: {shown['path']} of {version.version} (commit {version.rev[:7]}) "
                f"is in no DVC cache or remote reachable from here ({why}); `dvc push` it "
                "from where it was trained"
            ) from exc
    artifact = (declared.get("artifacts") or {}).get(reference.name) or {}
    registered = Registered(
        reference=str(reference),
        artifact=reference.name,
        version=version.version,
        stages=list(version.stages),
        rev=shown["rev"],
        path=shown["path"],
        repo=str(Path(repo).resolve()) if Path(repo).exists() else repo,
        description=artifact.get("desc"),
        labels=list(artifact.get("labels") or []),
        meta=dict(artifact.get("meta") or {}),
        md5=recorded,
    )
    write_json(out_dir / RECORD, registered.to_dict())
    return path, registered


def resolve_model(model: str, repo: str, fetch_dir: Path) -> tuple[Path, Registered | None]:
    """What ``--model`` names: a registered version (``NAME@VERSION``, ``NAME@STAGE``)
    fetched into ``fetch_dir`` with its record, or a file and the record a fetch left beside
    it (None if none)."""
    reference = parse_reference(model)
    if reference is not None and not Path(model).exists():
        return fetch(reference, repo, fetch_dir)
    path = Path(model)
    return path, read_record(path) if path.is_file() else None


def read_record(model: Path) -> Registered | None:
    """The registry record beside ``model`` if there is one and it is this file's (by md5)."""
    record = Path(model).parent / RECORD
    if not record.is_file():
        return None
    from visiontune.models.checkpoint import file_digest

    registered = Registered(**json.loads(record.read_text()))
    return registered if registered.md5 == file_digest(model, "md5") else None


def _recorded_md5(lock: dict[str, Any], path: str) -> str | None:
    """The md5 that a dvc.lock records for the output ``path`` (None: none)."""
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == path:
                return out.get("md5")
    return None


def _yaml_at(repo: str, rev: str, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """YAML files of ``repo`` at ``rev`` (each empty if there is none), read through one
    opening of the repository (a clone, for a URL) as ``dvc.api.read`` opens it."""
    from dvc.repo import Repo

    documents = []
    with Repo.open(repo, rev=rev, subrepos=True, uninitialized=True) as opened:
        for name in names:
            try:
                with opened.dvcfs.open(name, mode="r", encoding="utf-8") as file:
                    documents.append(yaml.safe_load(file) or {})
            except FileNotFoundError:
                documents.append({})
    return documents
