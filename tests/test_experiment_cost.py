"""An experiment costs its training: a fresh clone stays offline, DVC's run-cache restores a
repeated experiment, and the sweep re-trains only cells whose result can change.

Real dvc and git. The fresh clone keeps the repository's own remote configuration (the
placeholder bucket, not made default), as a newcomer gets it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.dvc_repo import SHRINK, DvcRepo

pytestmark = pytest.mark.slow

# What any attempt to reach the placeholder bucket prints (gcsfs, dvc -v).
NETWORK_SIGNS = ("googleapis", "your-bucket", "storage gs", "Traceback")
CACHED = "is cached - skipping run, checking out outputs"


def assert_offline(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    for sign in NETWORK_SIGNS:
        assert sign not in output, f"{sign!r} in:\n{output[-3000:]}"


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The team's git host: the project, shrunk and committed with its dvc.lock."""
    root = tmp_path_factory.mktemp("cost")
    repo = DvcRepo.copy_of_project(root / "work", SHRINK)
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(repo.path), str(root / "origin.git")], check=True
    )
    return root / "origin.git"


def test_a_fresh_clone_runs_every_command_offline_and_quietly(origin: Path, tmp_path: Path):
    clone = DvcRepo.clone(origin, tmp_path / "clone")
    first = clone.dvc("-v", "exp", "run", "-n", "first", "-S", "model.lr=0.02")
    assert_offline(first)
    assert "Running stage 'download'" in first.stdout  # nothing in the cache: all of it runs

    clone.dvc("exp", "run", "--queue", "-n", "queued", "-S", "model.lr=0.03")
    clone.start_queue()
    clone.wait_for_queue(timeout=300)
    assert_offline(clone.read("queue", "logs", "queued"))
    assert {"first", "queued"} <= set(clone.experiments())

    assert_offline(clone.dvc("repro"))
    tuned = clone.run(
        sys.executable, "-m", "visiontune", "tune", "--trials", "1", "--set", "train.epochs=1"
    )
    assert_offline(tuned)
    assert_offline(clone.run(sys.executable, "-m", "visiontune", "report", "--out", "r.md"))

    push = clone.dvc("push", check=False)
    assert push.returncode != 0
    assert_offline(push)
    assert "no remote specified" in push.stderr and "dvc remote default" in push.stderr


@pytest.fixture(scope="module")
def pipeline(baseline: DvcRepo, tmp_path_factory: pytest.TempPathFactory) -> DvcRepo:
    """A clone of the baseline, whose whole pipeline ran: the experiments below start here."""
    return baseline.clone_with_cache(tmp_path_factory.mktemp("pipeline") / "repo")


def test_a_changed_param_reruns_only_the_stages_and_sweep_cells_it_can_change(pipeline: DvcRepo):
    """model.lr: the stages from train on run again, not download or preprocess; and the
    sweep's x axis is model.lr, so no cell depends on it. Every cell depends on model.dropout."""
    grid = pipeline.path / "plots" / "sweep" / "grid.json"
    before = json.loads(grid.read_text())
    lr = pipeline.dvc("exp", "run", "-n", "sweep-lr", "-S", "model.lr=0.05")
    for stage in ("train", "evaluate", "robustness", "sweep"):
        assert f"Running stage '{stage}'" in lr.stdout
    for stage in ("download", "preprocess"):
        assert f"Running stage '{stage}'" not in lr.stdout
    assert "4 cells, 0 failed, 4 reused" in lr.stdout
    assert json.loads(grid.read_text()) == before

    dropout = pipeline.dvc("exp", "run", "-n", "sweep-dropout", "-S", "model.dropout=0.3")
    assert "4 cells, 0 failed, 0 reused" in dropout.stdout
    assert json.loads(grid.read_text()) != before
    pipeline.git("checkout", "-q", "--", "params.yaml")  # back to the baseline's params
    pipeline.dvc("exp", "apply", "sweep-lr")  # the workspace holds sweep-lr's outputs again
    assert json.loads(grid.read_text()) == before

    # The sweep's numbers are not experiment metrics: a run that stops at evaluate shows none.
    short = pipeline.dvc("exp", "run", "-n", "no-sweep", "evaluate", "-S", "model.lr=0.07")
    assert "Running stage 'sweep'" not in short.stdout
    for row in pipeline.experiments().values():
        assert not [name for name in row["metrics"] if "sweep" in name], row["metrics"]


def test_a_repeated_experiment_is_restored_from_the_run_cache(pipeline: DvcRepo):
    """Through the workspace, --temp and the queue: the second identical run trains nothing."""
    run = pipeline.dvc("exp", "run", "-n", "ws-a", "evaluate", "-S", "model.lr=0.04")
    assert "Running stage 'train'" in run.stdout
    pipeline.dvc("exp", "run", "-n", "ws-b", "evaluate", "-S", "model.lr=0.03")
    again = pipeline.dvc("exp", "run", "-n", "ws-c", "evaluate", "-S", "model.lr=0.04")
    assert f"Stage 'train' {CACHED}" in again.stdout and "Running stage" not in again.stdout
    rows = pipeline.experiments()
    assert rows["ws-c"]["metrics"] == rows["ws-a"]["metrics"]

    for name in ("temp-a", "temp-b"):
        temp = pipeline.dvc("exp", "run", "--temp", "-n", name, "evaluate", "-S", "model.lr=0.06")
    assert f"Stage 'train' {CACHED}" in temp.stdout, temp.stdout

    for name in ("queue-a", "queue-b"):
        pipeline.dvc("exp", "run", "--queue", "-n", name, "evaluate", "-S", "model.lr=0.08")
    pipeline.start_queue(jobs=1)
    pipeline.wait_for_queue(timeout=300)
    logs = [pipeline.read("queue", "logs", name).stdout for name in ("queue-a", "queue-b")]
    assert sum(f"Stage 'train' {CACHED}" in log for log in logs) == 1, logs
    rows = pipeline.experiments()
    assert rows["queue-a"]["metrics"] == rows["queue-b"]["metrics"]
    assert rows["temp-a"]["metrics"] == rows["temp-b"]["metrics"]
