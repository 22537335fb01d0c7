"""Work in progress that stages and commands write beside their outputs is git-ignored, so a
killed run's leftovers never reach a commit through `git add -A`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "path",
    [
        "data/.prepared.partial/train-images.npy",
        "data/.raw.partial/source.json",
        "metrics/.data.json.k2j4x8_a.partial/data.json",
        "models/.model.pt.0q9w8e7r.partial/model.pt",
        "models/.export-3fz1q0/model.onnx",
        "models/.model.onnx.4242.tmp",
    ],
)
def test_work_in_progress_is_git_ignored(path: str) -> None:
    check = ["git", "check-ignore", "--no-index", "--quiet", path]
    assert subprocess.run(check, cwd=ROOT).returncode == 0, f"{path} is not git-ignored"


@pytest.mark.parametrize("path", ["data/.gitignore", "metrics/data.json", "dvc.lock"])
def test_outputs_and_sources_are_not_ignored_by_it(path: str) -> None:
    check = ["git", "check-ignore", "--no-index", "--quiet", path]
    assert subprocess.run(check, cwd=ROOT).returncode == 1
