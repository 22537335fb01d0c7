"""Read-only dvc commands that read DVC's experiment queue (``dvc queue status``, ``dvc
queue logs``, ``dvc exp show``), asked again while they fail with one of DVC's known
transient errors: a file of the queue read while its writer had written it only in part.

The queue keeps its state in files that their writers do not replace atomically:

- Celery's filesystem broker (kombu), under ``.dvc/tmp/exps/celery/broker/``: an exchange
  table (``control/*.exchange``) and a message (``in/*.msg``) are created empty, then locked
  and written, and read without waiting for the writer. A command that reads one in between
  fails with the bare JSON error: ``ERROR: unexpected error - Expecting value: line 1
  column 1 (char 0)`` (a CI run of ``dvc queue status`` met it while a task ran).
- A task's executor info file, ``.dvc/tmp/exps/run/<rev>/<rev>.run``: truncated, then
  written, each time the task's status changes. ``dvc exp show`` reads it while the task
  runs: ``ERROR: unable to read: '....run', JSON file structure is corrupted: ...``.

Only these are asked again, for :data:`RETRY_SECONDS` after the first failure; a file left
broken (its writer killed) then fails as one line. A missing info file of a finished task
(``ERROR: Invalid experiment '<rev>'.``) is not among them: DVC writes the file before the
task can finish and never deletes it, so it does not come back.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from visiontune.config.errors import VisiontuneError
from visiontune.experiments.dvc_git import error_line, failure, run_tool

TRANSIENT = re.compile(
    r"ERROR: unexpected error - .*: line \d+ column \d+ \(char \d+\)"  # json.JSONDecodeError
    r"|ERROR: unable to read: '.*\.run', JSON file structure is corrupted\b.*"
)
RETRY_SECONDS = 10.0  # after the first failure: each try itself takes 1 to 3 s
PAUSE_SECONDS = 0.5  # between tries


def is_transient(stderr: str) -> bool:
    """Whether a failed dvc command's error line is one of DVC's transient queue errors."""
    return TRANSIENT.fullmatch(error_line(stderr)) is not None


def read_dvc(
    *args: str,
    cwd: Path,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    within: float = RETRY_SECONDS,
) -> subprocess.CompletedProcess[str]:
    """Run the read-only ``dvc args`` in ``cwd``, asking again while it fails with a
    transient error (:data:`TRANSIENT`), for ``within`` seconds after its first failure.
    With ``check``, a failure that persists, or any other, is a one-line VisiontuneError."""
    deadline = None
    while True:
        result = run_tool("dvc", *args, cwd=cwd, check=False, env=env)
        if result.returncode == 0 or not is_transient(result.stderr):
            break
        deadline = deadline or time.monotonic() + within
        if time.monotonic() >= deadline:
            break
        time.sleep(PAUSE_SECONDS)
    if check and result.returncode != 0:
        persisted = f" (still after {within:g} s)" if deadline else ""
        raise VisiontuneError(failure(" ".join(("dvc", *args[:2])), result) + persisted)
    return result
