"""The dvc experiment queue and experiment results, driven through the real dvc and git CLIs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontune.errors import VisiontuneError
from visiontune.experiments import flatten

_STATUS_LINE = re.compile(r"^(?P<task>[0-9a-f]{7,})\s+(?P<name>\S+)\s.*\s(?P<status>\w+)\s*$")
QUEUED, RUNNING, SUCCESS, FAILED = "Queued", "Running", "Success", "Failed"


@dataclass(frozen=True)
class Task:
    """One entry of ``dvc queue status``."""

    task: str
    name: str
    status: str


class DvcQueue:
    """Queue, start, watch and stop dvc experiments of the repository at ``repo``."""

    def __init__(self, repo: Path):
        self.repo = repo

    def _dvc(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        try:
            result = subprocess.run(
                [sys.executable, "-m", "dvc", *args],
                cwd=self.repo,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise VisiontuneError(f"dvc {' '.join(args)} did not answer in {timeout:g} s") from None
        if check and result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise VisiontuneError(f"dvc {args[0]} {args[1]} failed: {detail[-1] if detail else ''}")
        return result.stdout

    def tasks(self) -> list[Task]:
        """Every task dvc knows: queued, running, succeeded or failed."""
        tasks = []
        for line in self._dvc("queue", "status").splitlines():
            match = _STATUS_LINE.match(line.strip())
            if match and match["status"] in (QUEUED, RUNNING, SUCCESS, FAILED):
                tasks.append(Task(match["task"], match["name"], match["status"]))
        return tasks

    def enqueue(self, name: str, overrides: dict[str, Any], target: str) -> str:
        """Queue ``dvc exp run -n name -S key=value ... target``; return the new task's id."""
        before = {task.task for task in self.tasks()}
        self._dvc("exp", "run", "--queue", "-n", name, *_sets(overrides), target)
        new = [t for t in self.tasks() if t.name == name and t.task not in before]
        if not new:
            raise VisiontuneError(f"dvc exp run --queue -n {name} queued no task")
        return new[0].task

    def start(self, jobs: int) -> None:
        """Make sure ``jobs`` queue workers run (dvc starts only the missing ones).

        The workers inherit dvc's output streams: they go to a file, never to a pipe
        that would keep this call waiting until the queue is empty.
        """
        with tempfile.TemporaryFile("w+") as log:
            result = subprocess.run(
                [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
                cwd=self.repo,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            if result.returncode != 0:
                log.seek(0)
                raise VisiontuneError(f"dvc queue start failed: {failure_reason(log.read())}")

    def kill(self, task: str) -> None:
        self._dvc("queue", "kill", task, check=False)

    def remove(self, task: str) -> None:
        self._dvc("queue", "remove", task, check=False)

    def error(self, task: str) -> str:
        """Why a task failed, from its log (see :func:`failure_reason`)."""
        return failure_reason(self._dvc("queue", "logs", task, check=False))


def temp_run_command(name: str, overrides: dict[str, Any], target: str) -> list[str]:
    """``dvc exp run --temp -n name -S ... target``: one experiment, run here and now."""
    return [
        sys.executable,
        "-m",
        "dvc",
        "exp",
        "run",
        "--temp",
        "-n",
        name,
        *_sets(overrides),
        target,
    ]


def failure_reason(log: str) -> str:
    """The most telling line of a failed run's output: visiontune's own ``error:`` if any."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("error: ")]
    if ours:
        return ours[-1]
    theirs = [line for line in lines if line.startswith("ERROR")]
    return theirs[-1] if theirs else "the dvc experiment failed without a message"


def _sets(overrides: dict[str, Any]) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("-S", f"{key}={_yaml(value)}")]


def experiment_metrics(repo: Path, name: str) -> dict[str, float] | None:
    """Flat metrics (``val.acc``, ``test.acc``, ...) of the experiment named ``name``.

    Read straight from the experiment's git commit (metrics files are git-tracked), or
    None when no experiment of that name exists.
    """
    matching = [ref for ref in _experiment_refs(repo) if ref.rsplit("/", 1)[-1] == name]
    if not matching:
        return None
    metrics: dict[str, float] = {}
    for path in ("metrics/train.json", "metrics/evaluate.json"):
        text = _git(repo, "show", f"{matching[-1]}:{path}", check=False)
        if text:
            metrics.update(flatten(json.loads(text)))
    return metrics


def experiment_names(repo: Path) -> set[str]:
    """Names of every dvc experiment in the repository."""
    return {ref.rsplit("/", 1)[-1] for ref in _experiment_refs(repo)}


def _experiment_refs(repo: Path) -> list[str]:
    refs = _git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return [ref for ref in refs if not ref.startswith("refs/exps/celery/")]


def _git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise VisiontuneError(f"git {args[0]} failed: {result.stderr.strip()}")
    return result.stdout if result.returncode == 0 else ""


def _yaml(value: Any) -> str:
    """A -S value as dvc parses it (YAML): booleans lower-case, strings bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
