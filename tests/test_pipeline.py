"""End to end: real dvc and git in a temp copy of the repository, with shrunk params."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers.dvc_repo import DvcRepo

pytestmark = pytest.mark.slow


def test_repro_is_complete_reproducible_and_then_a_no_op(baseline_clone):
    """The baseline ran the whole pipeline: in a clone repro has nothing to do; --force runs
    every stage again and gives the same outputs bit for bit."""
    dvc_repo = baseline_clone
    metrics = dvc_repo.metrics()
    assert metrics["test"]["acc"] > 0.5
    assert set(metrics["train"]) == {"loss", "acc"} and set(metrics["val"]) == {"loss", "acc"}
    assert set(metrics["robustness"]) >= {"clean_acc", "mean_acc"}
    assert len(json.loads((dvc_repo.path / "plots" / "sweep" / "grid.json").read_text())) == 4
    model = dvc_repo.path / "models" / "model.pt"
    assert model.stat().st_size > 0
    first = dvc_repo.read_outputs()

    again = dvc_repo.dvc("repro")
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout

    forced = dvc_repo.dvc("repro", "--force")
    for stage in ("download", "preprocess", "train", "evaluate", "robustness", "sweep"):
        assert f"Running stage '{stage}'" in forced.stdout
    assert dvc_repo.read_outputs() == first


def workspace_state(repo: DvcRepo) -> dict[str, object]:
    """Every output's bytes (by md5), what git and dvc status say: a run's footprint."""
    files = [
        p for top in ("data", "models", "metrics", "plots") for p in repo.path.glob(f"{top}/**/*")
    ]
    return {
        "files": {
            str(path.relative_to(repo.path)): hashlib.md5(path.read_bytes()).hexdigest()
            for path in sorted(files)
            if path.is_file()
        },
        "git": repo.git("status", "--porcelain").stdout,
        "dvc": json.loads(repo.dvc("status", "--json").stdout),
    }


def test_a_failed_run_leaves_the_workspace_as_it_was(baseline_clone):
    """A bad param, a missing folder, a stage that raises after writing its outputs: one
    clear failure each, and the outputs, metrics, plots, git and dvc status as before."""
    repo = baseline_clone
    script = repo.path / "stages" / "train.py"
    anchor = "    if group.writes:\n"  # after train() wrote every output
    assert script.read_text().count(anchor) == 1
    bug = "    if params.model.blocks == 1:\n        raise RuntimeError('a bug in my own code')\n"
    script.write_text(script.read_text().replace(anchor, bug + anchor))
    repo.commit("a train stage that crashes after writing everything, with model.blocks=1")
    before = workspace_state(repo)
    for setting, says in (
        ("model.lr=-1", "error: model.lr must be > 0, got -1"),
        ("data.source=/nonexistent/photos", "error: data.source path /nonexistent/photos"),
        ("model.blocks=1", "RuntimeError: a bug in my own code"),
    ):
        result = repo.dvc("exp", "run", "-S", setting, check=False)
        assert result.returncode != 0 and says in result.stderr, result.stderr
        assert "Traceback" not in result.stderr or setting == "model.blocks=1"
        repo.git("checkout", "params.yaml")  # the undo the docs give for -S
        assert workspace_state(repo) == before, setting


def test_committed_lock_file_matches_code_and_params(tmp_path):
    """dvc.lock on main records the current code and params.yaml: only outputs are missing."""
    repo = DvcRepo.copy_of_project(tmp_path / "repo", overrides={})
    status = json.loads(repo.dvc("status", "--json").stdout)
    stale = [
        (stage, kind, path, state)
        for stage, changes in status.items()
        for change in changes
        for kind, paths in change.items()
        for path, state in (paths.items() if isinstance(paths, dict) else [(paths, "?")])
        if kind not in ("changed deps", "changed outs") or state not in ("deleted", "not in cache")
    ]
    assert not stale, f"dvc.lock is stale (run dvc repro and commit it): {stale}"
