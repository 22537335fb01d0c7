"""DVC's experiment queue, driven through the dvc CLI: queue, start, watch, stop, read logs.

``parse_queue_status`` reads the table ``dvc queue status`` prints; it is a pure function
so that recorded tables test it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontune.config.errors import VisiontuneError
from visiontune.experiments.dvc_git import command, last_line, run_tool
from visiontune.experiments.dvc_reads import read_dvc

_STATUS_LINE = re.compile(r"^(?P<task>[0-9a-f]{7,})\s+(?P<name>\S+)\s.*\s(?P<status>\w+)\s*$")
QUEUED, RUNNING, SUCCESS, FAILED = "Queued", "Running", "Success", "Failed"
# A task a worker takes moves from the broker's queue folder to its processed one, and
# `dvc queue status` lists the processed (running) tasks before the queued ones: a task
# taken between the two reads is in neither. One missing is asked about again this long.
IN_TRANSIT_SECONDS = 5.0
IN_TRANSIT_PAUSE = 0.5


@dataclass(frozen=True)
class Task:
    """One entry of ``dvc queue status``."""

    task: str
    name: str
    status: str


def parse_queue_status(table: str) -> list[Task]:
    """The tasks of a ``dvc queue status`` table: queued, running, succeeded or failed."""
    tasks = []
    for line in table.splitlines():
        match = _STATUS_LINE.match(line.strip())
        if match and match["status"] in (QUEUED, RUNNING, SUCCESS, FAILED):
            tasks.append(Task(match["task"], match["name"], match["status"]))
    return tasks


def set_args(overrides: dict[str, Any]) -> list[str]:
    """``-S key=value`` arguments, values written as dvc parses them (YAML)."""
    return [arg for key, value in overrides.items() for arg in ("-S", f"{key}={_yaml(value)}")]


def temp_run_command(name: str, overrides: dict[str, Any], target: str) -> list[str]:
    """``dvc exp run --temp -n name -S ... target``: one experiment, run here and now."""
    return command("dvc", "exp", "run", "--temp", "-n", name, *set_args(overrides), target)


class DvcQueue:
    """Queue, start, watch and stop dvc experiments of the repository at ``repo``."""

    def __init__(self, repo: Path):
        self.repo = repo

    def tasks(self, expect: Collection[str] = (), within: float = IN_TRANSIT_SECONDS) -> list[Task]:
        """Every task dvc knows: queued, running, succeeded or failed (asked again past
        DVC's transient errors: :mod:`~visiontune.experiments.dvc_reads`). While one of the
        ``expect``-ed task ids is missing (in transit, see :data:`IN_TRANSIT_SECONDS`), ask
        again for ``within`` seconds; a task missing after that is gone."""
        deadline = time.monotonic() + within
        while True:
            tasks = parse_queue_status(read_dvc("queue", "status", cwd=self.repo).stdout)
            if set(expect) <= {task.task for task in tasks} or time.monotonic() >= deadline:
                return tasks
            time.sleep(IN_TRANSIT_PAUSE)

    def enqueue(self, name: str, overrides: dict[str, Any], target: str) -> str:
        """Queue ``dvc exp run -n name -S key=value ... target``; return the new task's id."""
        before = {task.task for task in self.tasks()}
        run_tool(
            "dvc", "exp", "run", "--queue", "-n", name, *set_args(overrides), target, cwd=self.repo
        )
        new = [t for t in self.tasks() if t.name == name and t.task not in before]
        if not new:
            raise VisiontuneError(f"dvc exp run --queue -n {name} queued no task")
        return new[0].task

    def start(self, jobs: int, env: dict[str, str] | None = None) -> None:
        """Make sure ``jobs`` queue workers run (dvc starts only the missing ones), with
        ``env`` as their environment (else this process's).

        The workers inherit dvc's output streams: they go to a file, never to a pipe
        that would keep this call waiting until the queue is empty.
        """
        with tempfile.TemporaryFile("w+") as log:
            result = subprocess.run(
                command("dvc", "queue", "start", "-j", str(jobs)),
                cwd=self.repo,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
            if result.returncode != 0:
                log.seek(0)
                raise VisiontuneError(f"dvc queue start failed: {last_line(log.read())}")

    def kill(self, task: str) -> None:
        run_tool("dvc", "queue", "kill", task, cwd=self.repo, check=False)

    def remove(self, task: str) -> None:
        run_tool("dvc", "queue", "remove", task, cwd=self.repo, check=False)

    def log(self, task: str) -> str:
        """The output of a task's experiment run, as ``dvc queue logs`` keeps it."""
        return read_dvc("queue", "logs", task, cwd=self.repo, check=False).stdout


def _yaml(value: Any) -> str:
    """A -S value as dvc parses it (YAML): booleans lower-case, strings bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
