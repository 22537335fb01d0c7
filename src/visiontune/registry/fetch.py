"""One registered version resolved through DVC's artifact API and its model fetched as
``dvc artifacts get`` fetches it: from the DVC cache of the repository, else its remote.

Beside the fetched model goes ``registered.json``: the version, its stages and commit, and
the artifact's description and meta from that commit's dvc.yaml, so that whoever serves the
file later (the API image) reports the registry's record rather than one typed by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.errors import VisiontuneError, reason
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
    recorded = _recorded_md5(repo, shown["rev"], shown["path"])
    if not (path.is_file() and file_digest(path, "md5") == recorded):  # else fetched before
        try:
            with _dvc_logs_quiet():  # it logs its failed try of DVC Studio as an ERROR
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
    artifact = _declared(repo, shown["rev"], reference.name)
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


@contextlib.contextmanager
def _dvc_logs_quiet() -> Iterator[None]:
    """DVC's log records below CRITICAL dropped for the block (its exceptions still come)."""
    logger = logging.getLogger("dvc")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


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


def _declared(repo: str, rev: str, name: str) -> dict[str, Any]:
    """The ``artifacts:`` entry of ``name`` in dvc.yaml at ``rev``."""
    document = _yaml_at(repo, rev, "dvc.yaml")
    return (document.get("artifacts") or {}).get(name) or {}


def _recorded_md5(repo: str, rev: str, path: str) -> str | None:
    """The md5 that dvc.lock at ``rev`` records for the output ``path`` (None: none)."""
    for stage in (_yaml_at(repo, rev, "dvc.lock").get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == path:
                return out.get("md5")
    return None


def _yaml_at(repo: str, rev: str, name: str) -> dict[str, Any]:
    """A YAML file of ``repo`` at ``rev`` (empty if there is none)."""
    from dvc.api import read

    try:
        return yaml.safe_load(read(name, repo=repo, rev=rev)) or {}
    except FileNotFoundError:
        return {}
