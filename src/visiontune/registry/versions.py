"""The registered versions of an artifact and the stages they are in, as GTO reads them
from the git tags of a repository (a path, or a git URL that GTO clones)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from visiontune.config.errors import VisiontuneError, reason
from visiontune.registry.references import Reference


@dataclass(frozen=True)
class Version:
    """A registered version: its name, commit, when it was registered, and the stages it is
    in now (GTO's rule: a stage holds the version last assigned to it)."""

    version: str
    rev: str
    created_at: datetime
    stages: tuple[str, ...]


def registered_versions(repo: str, name: str) -> list[Version]:
    """The registered versions of artifact ``name`` in ``repo``, newest first."""
    from gto import api
    from gto.exceptions import ArtifactNotFound, GTOException

    try:
        shown = api.show(repo, name, registered_only=True)
    except ArtifactNotFound:
        return []
    except GTOException as exc:
        raise VisiontuneError(f"cannot read the registry of {repo}: {reason(exc)}") from exc
    except Exception as exc:  # a URL GTO could not clone
        raise VisiontuneError(f"cannot read the git tags of {repo}: {reason(exc)}") from exc
    return [
        Version(
            shown_version["version"],
            shown_version["commit_hexsha"],
            shown_version["created_at"],
            tuple(stage["stage"] for stage in shown_version["stages"]),
        )
        for shown_version in shown
    ]


def allowed_stages(repo: str) -> list[str]:
    """The stages ``repo``'s ``.gto`` declares (empty: any name is allowed)."""
    from gto import api

    return list(api.get_stages(repo, allowed=True))


def find_version(repo: str, reference: Reference) -> Version:
    """The version ``reference`` names in ``repo``; a one-line VisiontuneError naming what
    exists if it names none (an unknown artifact, version or stage, an empty stage)."""
    versions = registered_versions(repo, reference.name)
    if not versions:
        raise VisiontuneError(
            f"{reference}: no version of {reference.name!r} is registered in {repo} "
            f"(register one with: gto register {reference.name})"
        )
    names = ", ".join(v.version for v in versions)
    if reference.version:
        for version in versions:
            if version.version == reference.version:
                return version
        raise VisiontuneError(
            f"{reference}: {reference.name} has no version {reference.version}; registered: {names}"
        )
    stage = reference.stage or ""
    for version in versions:
        if stage in version.stages:
            return version
    stages = allowed_stages(repo)
    if stages and stage not in stages:
        hint = f"; did you mean v{stage}?" if re.match(r"^\d+\.\d+\.\d+$", stage) else ""
        raise VisiontuneError(
            f"{reference}: {stage!r} is neither a version (vX.Y.Z) nor a stage "
            f"({', '.join(stages)}){hint}"
        )
    raise VisiontuneError(
        f"{reference}: no version of {reference.name} is in stage {stage} "
        f"(assign one with: gto assign {reference.name} --version {versions[0].version} "
        f"--stage {stage})"
    )
