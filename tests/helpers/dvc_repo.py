"""A temp git + dvc copy of this repository, driven through the real command-line tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import tomlkit
import yaml

from visiontune.experiments.dvc_reads import read_dvc
from visiontune.tuning.dvc_queue import FAILED, SUCCESS, parse_queue_status

ROOT = Path(__file__).resolve().parents[2]

# The real params.yaml, shrunk so that one pipeline run takes seconds: each CPU's fastest
# kernels (tests/test_cpu_kernels.py runs the shipped ones; pinned AVX2 code trains a timm
# network 2 to 3 times slower on an AVX-512 CPU).
SHRINK = {
    "train": {"epochs": 2, "threads": 1, "cpu_kernels": "native"},
    "sweep": {"x_values": [0.01, 0.1], "y_values": [8, 16], "epochs": 1},
}
# A cheap tune space and quick liveness marks, so that trials and staleness take seconds
# (the "tune" section goes to pyproject.toml's [tool.visiontune.tune], the rest to params.yaml).
SPACE = {
    "model.lr": {"type": "float", "low": 0.003, "high": 0.05, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
}
TUNE = {**SHRINK, "tune": {"space": SPACE, "heartbeat": 2, "n_startup_trials": 2}}

QUEUE_LOOK_SECONDS = 10.0  # wait_for_queue: the longest between two asks


class DvcRepo:
    """A copy of the project in ``path`` with its own git history and dvc cache."""

    def __init__(self, path: Path):
        self.path = path
        self._started: set[str] = set()  # the queue's tasks started (wait_for_queue)
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "GIT_AUTHOR_NAME": "visiontune tests",
            "GIT_AUTHOR_EMAIL": "tests@visiontune.invalid",
            "GIT_COMMITTER_NAME": "visiontune tests",
            "GIT_COMMITTER_EMAIL": "tests@visiontune.invalid",
            "DVC_NO_ANALYTICS": "1",
        }

    @classmethod
    def copy_of_project(cls, path: Path, overrides: dict[str, dict[str, Any]]) -> DvcRepo:
        """Copy the project's tracked (and new, not ignored) files, shrink params (and the
        tuner's settings: ``overrides["tune"]``), commit."""
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\0")
        for name in filter(None, listed):
            source = ROOT / name
            if source.is_file():
                target = path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        repo = cls(path)
        for section, values in overrides.items():
            for key, value in values.items():
                if section == "tune":
                    repo.set_tune(key, value)
                else:
                    repo.set_param(section, key, value)
        repo.git("init", "-q", "-b", "main")
        repo.commit("copy of visiontune")
        return repo

    def clone_with_cache(self, path: Path) -> DvcRepo:
        """Another checkout of this (committed) repository with a copy of its DVC cache and
        its outputs checked out: it starts where this one is, and shares nothing with it."""
        clone = DvcRepo.clone(self.path, path)
        shutil.copytree(self.path / ".dvc" / "cache", path / ".dvc" / "cache")
        clone.dvc("checkout")
        return clone

    @classmethod
    def clone(cls, source: str | Path, path: Path) -> DvcRepo:
        """``git clone source path``: another machine's checkout of the project."""
        subprocess.run(["git", "clone", "-q", str(source), str(path)], check=True, timeout=120)
        return cls(path)

    def run(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def read(self, *args: str) -> subprocess.CompletedProcess:
        """A read-only dvc command (``queue status``, ``queue logs``, ``exp show``), asked
        again past DVC's transient queue errors as the tuner asks it (``read_dvc``)."""
        result = read_dvc(*args, cwd=self.path, env=self.env, check=False)
        if result.returncode != 0:
            raise AssertionError(
                f"dvc {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def git(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("git", *args)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def set_param(self, section: str, key: str, value: Any) -> None:
        path = self.path / "params.yaml"
        params = yaml.safe_load(path.read_text())
        params.setdefault(section, {})[key] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    def set_tune(self, key: str, value: Any) -> None:
        """Set ``key`` of the tuner's settings, pyproject.toml's [tool.visiontune.tune]."""
        path = self.path / "pyproject.toml"
        document = tomlkit.parse(path.read_text())
        document["tool"]["visiontune"]["tune"][key] = value
        path.write_text(tomlkit.dumps(document))

    def metrics(self) -> dict[str, Any]:
        """All metrics/*.json files merged, as ``dvc metrics show`` groups them."""
        merged: dict[str, Any] = {}
        for path in sorted((self.path / "metrics").glob("*.json")):
            merged.update(json.loads(path.read_text()))
        return merged

    def read_outputs(self) -> dict[str, str]:
        """Metrics and evaluation plot files by name, for bit-for-bit comparisons."""
        files = [*self.path.glob("metrics/*.json"), *self.path.glob("plots/evaluate/*.json")]
        return {str(p.relative_to(self.path)): p.read_text() for p in sorted(files)}

    def experiments(self) -> dict[str, dict[str, Any]]:
        """``dvc exp show --json`` as {experiment name: {"params": ..., "metrics": ...}}."""
        rows = json.loads(self.read("exp", "show", "--json").stdout)
        found = {}
        for baseline in rows:
            for group in baseline.get("experiments") or []:
                for rev in group["revs"]:
                    data = rev["data"]
                    found[rev["name"]] = {
                        "params": data["params"]["params.yaml"]["data"],
                        "metrics": data["metrics"],
                    }
        return found

    def start_queue(self, jobs: int = 1) -> None:
        """``dvc queue start -j jobs``, its output to a file: queue workers inherit dvc's
        streams, and a pipe they hold open would block this call until they exit. The
        tasks queued by then are those :meth:`wait_for_queue` waits for."""
        self._started |= self._task_statuses().keys()
        log = self.path.parent / "queue-start.log"
        with log.open("w") as out:
            command = [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)]
            subprocess.run(command, cwd=self.path, env=self.env, stdout=out, stderr=out, check=True)

    def wait_for_queue(self, timeout: float) -> None:
        """Ask ``dvc queue status`` until every task started (:meth:`start_queue`) has
        succeeded or failed: again each time a task's result is stored, and at least every
        :data:`QUEUE_LOOK_SECONDS` (each ask costs dvc about a second of CPU, which the
        queue's own runs would otherwise lose), and none shows as queued or running. That
        none shows so is not enough: a task a worker is taking shows as neither
        (``IN_TRANSIT_SECONDS``), and the heatmap test once read the experiments then."""
        deadline = time.monotonic() + timeout
        while True:
            stored = self._queue_results()
            statuses = self._task_statuses()
            done = {task for task, status in statuses.items() if status in (SUCCESS, FAILED)}
            if self._started <= done and done == statuses.keys():
                return
            look = min(time.monotonic() + QUEUE_LOOK_SECONDS, deadline)
            while self._queue_results() == stored and time.monotonic() < look:
                time.sleep(0.2)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"dvc queue still busy after {timeout} s: {statuses}")

    def _task_statuses(self) -> dict[str, str]:
        """``dvc queue status`` as {task id: status}."""
        tasks = parse_queue_status(self.read("queue", "status").stdout)
        return {task.task: task.status for task in tasks}

    def stop_queue(self, timeout: float = 60) -> None:
        """``dvc queue stop``, then wait until the queue's workers have exited: after the
        queue empties, a worker lives on for a while, reading the broker's files."""
        self.dvc("queue", "stop")
        deadline = time.monotonic() + timeout
        while workers := self._queue_workers():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"dvc queue workers {workers} still running after {timeout} s")
            time.sleep(0.2)

    def _queue_workers(self) -> list[int]:
        """The pids of this repository's queue workers (``dvc exp queue-worker``)."""
        here = str(self.path.resolve())
        return [
            process.pid
            for process in psutil.process_iter(["cwd", "cmdline"])
            if process.info["cwd"] == here and "queue-worker" in (process.info["cmdline"] or ())
        ]

    def _queue_results(self) -> set[str]:
        """The task results the queue's workers have stored (Celery's result files): a
        hint that a task ended, which ``dvc queue status`` then confirms."""
        folder = self.path / ".dvc" / "tmp" / "exps" / "celery" / "result"
        return {entry.name for entry in os.scandir(folder)} if folder.is_dir() else set()
