"""``visiontune registry``: an artifact's registered versions and stages, each with the test
accuracy and params its commit records (read by one git call, not by checking anything out).

A commit's test accuracy is its model's only if its dvc.lock says evaluate read the model
the train stage wrote there; otherwise the table shows none and says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.paths import EVALUATE_METRICS, MODEL
from visiontune.experiments.dvc_git import files_at
from visiontune.registry.versions import Version, registered_versions

TRAINED_WITH = ("download", "preprocess", "train")  # the stages whose params a version lists


@dataclass(frozen=True)
class VersionRecord:
    """A registered version and what its commit records: test accuracy (None: none, or
    not of this model), the params its train stage ran with, and a note when accuracy is
    missing."""

    version: Version
    test_acc: float | None
    params: dict[str, Any]
    note: str = ""


def version_records(repo: Path, name: str) -> list[VersionRecord]:
    """Every registered version of ``name`` in ``repo``, newest first, with its records."""
    versions = registered_versions(str(repo), name)
    texts = files_at(
        repo,
        [f"{v.rev}:{path}" for v in versions for path in ("dvc.lock", EVALUATE_METRICS.as_posix())],
    )
    return [
        version_record(version, lock, metrics)
        for version, lock, metrics in zip(versions, texts[::2], texts[1::2], strict=True)
    ]


def version_record(version: Version, lock: str | None, metrics: str | None) -> VersionRecord:
    """``version``'s record from its commit's dvc.lock and metrics/evaluate.json texts."""
    stages = (yaml.safe_load(lock) or {}).get("stages", {}) if lock else {}
    params: dict[str, Any] = {}
    for stage in TRAINED_WITH:
        params.update(_flat(stages.get(stage, {}).get("params", {}).get("params.yaml", {})))
    trained = _md5(stages.get("train", {}).get("outs"))
    evaluated = _md5(stages.get("evaluate", {}).get("deps"))
    if metrics is None:
        return VersionRecord(version, None, params, "no metrics/evaluate.json in its commit")
    if trained is None or trained != evaluated:
        return VersionRecord(version, None, params, "its commit evaluated another model")
    acc = json.loads(metrics).get("test", {}).get("acc")
    return VersionRecord(version, acc, params)


def _cell(value: Any) -> str:
    """A param as the table shows it: floats to 4 significant digits (a tuned lr has 17)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _md5(entries: list[dict[str, Any]] | None) -> str | None:
    """The md5 dvc.lock records for models/model.pt among a stage's deps or outs."""
    for entry in entries or []:
        if entry.get("path") == MODEL.as_posix():
            return entry.get("md5")
    return None


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"lr": 0.01}}`` as ``{"model.lr": 0.01}``; dvc.lock already flattens
    a stage's params one level (``model: {...}``) or fully (``model.lr: 0.01``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def versions_table(records: list[VersionRecord], name: str = "classifier") -> str:
    """A text table: version, stages, commit, registered date, test acc, and the params
    that differ among the versions (all of them share the rest)."""
    if not records:
        return (
            f"no version of {name} is registered yet: commit the model you chose, then "
            f"gto register {name} --version v1.0.0"
        )
    keys = sorted({k for r in records for k in r.params})
    differing = [k for k in keys if len({repr(r.params.get(k)) for r in records}) > 1]
    header = ["version", "stages", "commit", "registered", "test acc", *differing]
    rows = [header]
    for record in records:
        v = record.version
        acc = "-" if record.test_acc is None else f"{record.test_acc:.4f}"
        rows.append(
            [
                v.version,
                ",".join(v.stages) or "-",
                v.rev[:7],
                v.created_at.strftime("%Y-%m-%d %H:%M"),
                acc,
                *(_cell(record.params.get(k, "-")) for k in differing),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    notes = [f"{r.version.version}: no test acc: {r.note}" for r in records if r.note]
    if len(records) > 1 and not differing:
        notes.append("every version was trained with the same params")
    return "\n".join([*lines, *notes])
