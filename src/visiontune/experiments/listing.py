"""The repository's dvc experiments, as ``dvc exp show --json`` lists them, flattened."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from visiontune.config.paths import EVALUATE_METRICS, PREPARED, TRAIN_METRICS
from visiontune.experiments.dvc_git import files_at, run_tool
from visiontune.experiments.dvc_reads import read_dvc

# Where each experiment's own numbers are (git-tracked, so on the experiment's commit).
METRICS_FILES = (TRAIN_METRICS.as_posix(), EVALUATE_METRICS.as_posix())


@dataclass(frozen=True)
class Experiment:
    """One row of ``dvc exp show``: the workspace, a baseline commit or an experiment.

    ``kind`` is ``workspace``, ``baseline`` (HEAD's commit), ``branch`` (the tip of another
    branch, listed with ``all_branches``) or ``experiment``; ``base`` names the baseline row
    an experiment was run from (a baseline's own name; empty for the workspace).
    ``params`` (from params.yaml) and ``metrics`` (the numbers of all metrics files merged)
    have dotted keys as ``dvc exp show`` prints them: ``model.lr``, ``val.acc``, ``test.acc``.
    ``state`` is ``success``, ``queued``, ``running`` or ``failed``; only a ``success``
    row's metrics are its own (a queued or running one shows its baseline's). Metrics are
    the numbers, flags (``pruned``: true) included. ``prepared`` is the md5 DVC recorded for
    the ``data/prepared`` output (empty if none): the data the run trained on, and likewise
    its own only on a ``success`` row.
    """

    name: str
    rev: str
    kind: str
    state: str
    params: dict[str, Any]
    metrics: dict[str, float]
    base: str = ""
    prepared: str = ""

    @property
    def baseline(self) -> bool:
        """Whether the row is a commit of a branch rather than an experiment or the workspace."""
        return self.kind in ("baseline", "branch")


def list_experiments(
    repo: Path, *, workspace: bool = False, all_branches: bool = False
) -> list[Experiment]:
    """The baseline commit (HEAD) and its experiments via the dvc CLI; the workspace first
    (named ``workspace``) if asked, every other branch's tip and experiments with
    ``all_branches``."""
    flags = ["--all-branches"] if all_branches else []
    result = read_dvc("exp", "show", "--json", *flags, cwd=repo)
    return parse_exp_show(json.loads(result.stdout), workspace=workspace)


def parse_exp_show(baselines: list[dict[str, Any]], *, workspace: bool = False) -> list[Experiment]:
    """Flatten the rows of ``dvc exp show --json`` (the workspace, then each baseline, HEAD's
    first, then its experiments)."""
    found = []
    kind = "baseline"
    for row in baselines:
        if row["rev"] == "workspace":
            if workspace:
                found.append(_experiment(row, kind="workspace", state="success"))
            continue
        baseline = _experiment(row, kind=kind, state="success")
        found.append(replace(baseline, base=baseline.name))
        kind = "branch"
        for group in row.get("experiments") or []:
            executor = group.get("executor") or {}
            for rev in group["revs"]:
                state = "failed" if rev.get("error") else executor.get("state", "success")
                found.append(_experiment(rev, kind="experiment", state=state, base=baseline.name))
    return found


def _experiment(row: dict[str, Any], *, kind: str, state: str, base: str = "") -> Experiment:
    data = row.get("data") or {}
    params = data.get("params", {}).get("params.yaml", {}).get("data", {})
    metrics = {}
    for source in (data.get("metrics") or {}).values():
        for key, value in flatten(source.get("data", {})):
            if isinstance(value, (int, float)):
                metrics[key] = value
    return Experiment(
        name=row.get("name") or ("workspace" if row["rev"] == "workspace" else row["rev"][:7]),
        rev=row["rev"],
        kind=kind,
        state=state,
        params=dict(flatten(params)),
        metrics=metrics,
        base=base,
        prepared=prepared_hash(data),
    )


def prepared_hash(data: Mapping[str, Any]) -> str:
    """The md5 of ``data/prepared`` in a row's ``outs`` (the preprocess stage's output as the
    row's dvc.lock records it), or "" if none.

    Not its ``deps``: ``dvc exp show`` merges every stage's deps by path, and the last stage
    listed wins, so a run that stopped at ``evaluate`` shows the baseline's data/prepared of
    the robustness and sweep stages it did not re-run.
    """
    output = (data.get("outs") or {}).get(PREPARED.as_posix()) or {}
    return output.get("hash") or ""


def is_pruned(metrics: Mapping[str, Any]) -> bool:
    """Whether flat metrics are a pruned run's: a truthy ``pruned``, or ``pruned.*`` (the
    train stage writes ``"pruned": {"epoch": N, "reason": ...}``)."""
    return any(
        (key == "pruned" and bool(value)) or key.startswith("pruned.")
        for key, value in metrics.items()
    )


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"val": {"acc": 1}}`` -> ``("val.acc", 1)``; lists stay values."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def experiment_metrics(repo: Path, name: str) -> dict[str, float] | None:
    """Flat metrics (``val.acc``, ``test.acc``, ...) of the experiment named ``name``.

    Read straight from the experiment's git commit (metrics files are git-tracked), or
    None when no experiment of that name exists.
    """
    ref = _experiment_ref(repo, name)
    if ref is None:
        return None
    metrics: dict[str, float] = {}
    for text in files_at(repo, [f"{ref}:{path}" for path in METRICS_FILES]):
        if text is not None:
            metrics.update(flatten(json.loads(text)))
    return metrics


def experiment_file(repo: Path, name: str, path: str) -> str | None:
    """The text of git-tracked ``path`` on the experiment named ``name``, or None."""
    ref = _experiment_ref(repo, name)
    return None if ref is None else files_at(repo, [f"{ref}:{path}"])[0]


def _experiment_ref(repo: Path, name: str) -> str | None:
    matching = [ref for ref in _experiment_refs(repo) if ref.rsplit("/", 1)[-1] == name]
    return matching[-1] if matching else None


def experiment_names(repo: Path) -> set[str]:
    """Names of every dvc experiment in the repository."""
    return {ref.rsplit("/", 1)[-1] for ref in _experiment_refs(repo)}


def _experiment_refs(repo: Path) -> list[str]:
    listed = run_tool("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=repo)
    return [ref for ref in listed.stdout.split() if not ref.startswith("refs/exps/celery/")]
