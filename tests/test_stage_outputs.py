"""A stage's recorded outputs: put back after a failure, dropped when they describe a
replaced model. Real dvc runs them in tests/test_pipeline.py and tests/test_tuning.py; here
dvc.lock and DVC's cache are written as DVC writes them, to reach every case quickly."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from visiontune.config.stage_outputs import drop_results_of_replaced, restore_outputs

MODEL, EVALUATION, RAW = b"model v1", b'{"test": {"acc": 0.9}}\n', {"a.npz": b"AAA", "x/b": b"B"}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cache(root: Path, data: bytes, suffix: str = "") -> str:
    digest = md5(data) + suffix
    path = root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / digest[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def repo(root: Path, *, model_read: bytes = MODEL) -> Path:
    """dvc.lock of download (a folder), train (a model) and evaluate (a metrics file that
    git tracks: not in the cache), with their objects cached."""
    listing = [{"md5": cache(root, data), "relpath": name} for name, data in RAW.items()]
    raw = cache(root, json.dumps(listing).encode(), ".dir")
    lock = {
        "schema": "2.0",
        "stages": {
            "download": {"cmd": "x", "outs": [{"path": "data/raw", "hash": "md5", "md5": raw}]},
            "train": {
                "cmd": "x",
                "deps": [{"path": "data/raw", "hash": "md5", "md5": raw}],
                "outs": [{"path": "models/model.pt", "hash": "md5", "md5": cache(root, MODEL)}],
            },
            "evaluate": {
                "cmd": "x",
                "deps": [{"path": "models/model.pt", "hash": "md5", "md5": md5(model_read)}],
                "outs": [{"path": "metrics/evaluate.json", "hash": "md5", "md5": md5(EVALUATION)}],
            },
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "metrics").mkdir()
    (root / "metrics" / "evaluate.json").write_bytes(EVALUATION)
    git(root, "init", "-q")
    git(root, "add", "dvc.lock", "metrics")
    git(root, "commit", "-qm", "run")
    return root


def git(root: Path, *args: str) -> None:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args]
    subprocess.run(command, cwd=root, check=True)


def test_a_failed_stage_gets_its_recorded_outputs_back(tmp_path):
    root = repo(tmp_path)
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "half-written").write_bytes(b"?")  # what the failure left
    assert restore_outputs("download", root) == []
    assert sorted(
        p.relative_to(root / "data/raw").as_posix()
        for p in (root / "data/raw").rglob("*")
        if p.is_file()
    ) == sorted(RAW)
    assert (root / "data" / "raw" / "x" / "b").read_bytes() == b"B"
    assert restore_outputs("train", root) == []
    assert (root / "models" / "model.pt").read_bytes() == MODEL
    (root / "metrics" / "evaluate.json").unlink()  # as DVC removes it before the command
    assert restore_outputs("evaluate", root) == []  # from git: uncached outputs of a commit
    assert (root / "metrics" / "evaluate.json").read_bytes() == EVALUATION


def test_content_that_is_nowhere_is_reported_and_what_is_there_left_alone(tmp_path):
    root = repo(tmp_path)
    (root / "metrics" / "evaluate.json").write_bytes(b"partial")
    git(root, "rm", "-q", "--cached", "metrics/evaluate.json")
    git(root, "commit", "-qm", "metrics no longer in git")
    assert restore_outputs("evaluate", root) == ["metrics/evaluate.json"]
    assert (root / "metrics" / "evaluate.json").read_bytes() == b"partial"


def test_outputs_of_an_earlier_model_are_not_put_back(tmp_path):
    """train ran in the same dvc run (the lock has its new model): evaluate's recorded
    results describe the old one, and stay gone when evaluate fails."""
    root = repo(tmp_path, model_read=b"model v0")
    (root / "metrics" / "evaluate.json").unlink()
    assert restore_outputs("evaluate", root) == []
    assert not (root / "metrics" / "evaluate.json").exists()


def test_a_new_model_drops_the_results_of_the_old_one(tmp_path):
    root = repo(tmp_path)
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(MODEL)
    assert drop_results_of_replaced("train", root) == []  # the same model: results stay
    assert (root / "metrics" / "evaluate.json").exists()
    (root / "models" / "model.pt").write_bytes(b"model v2")
    assert drop_results_of_replaced("train", root) == ["evaluate"]
    assert not (root / "metrics" / "evaluate.json").exists()


def test_without_a_lock_nothing_is_touched(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "train.json").write_text("{}")
    assert restore_outputs("train", tmp_path) == []
    assert drop_results_of_replaced("train", tmp_path) == []
    assert (tmp_path / "metrics" / "train.json").exists()
