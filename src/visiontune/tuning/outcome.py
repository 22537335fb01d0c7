"""What became of a trial's dvc experiment, decided from exit codes, queue states and the
experiment's presence, never from the wording of a message; and the one retry policy.

A stage stopped by a user error (bad params, a combination the schema refuses, diverging
training) exits with :data:`~visiontune.errors.USER_ERROR_EXIT`, which dvc reports as
``failed to run: <cmd>, exited with <code>``: that repeats on every retry. A crash, a task
the queue lost or a run that reports success without an experiment may not: those are
retried once.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from visiontune.config.errors import USER_ERROR_EXIT
from visiontune.experiments.dvc_git import last_line

# How dvc reports a stage command's exit status (dvc.stage.exceptions.StageCmdFailedError).
_STAGE_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)")
MAX_ATTEMPTS = 2


class Outcome(enum.Enum):
    DONE = "done"  # the experiment exists: its metrics are the trial's
    USER_ERROR = "user error"  # a stage exited USER_ERROR_EXIT: deterministic
    TIMED_OUT = "timed out"  # stopped after tune.trial_timeout
    LOST = "lost"  # the queue lost the task, or dvc reported success but no experiment
    CRASHED = "crashed"  # anything else


@dataclass(frozen=True)
class RunResult:
    """A finished attempt at a trial's experiment: if DONE, the experiment's metrics (read
    once, when deciding); else why it failed."""

    outcome: Outcome
    reason: str = ""
    metrics: dict[str, float] | None = None

    @property
    def retryable(self) -> bool:
        return self.outcome in (Outcome.LOST, Outcome.CRASHED)


def should_retry(result: RunResult, attempts: int) -> bool:
    """The one retry policy: a lost or crashed run gets one more attempt."""
    return result.retryable and attempts < MAX_ATTEMPTS


def stage_exit_codes(log: str) -> list[int]:
    """Exit statuses of the stage commands that failed in a ``dvc exp run`` log."""
    return [int(code) for code in _STAGE_EXIT.findall(log)]


def classify_failure(log: str) -> RunResult:
    """A failed ``dvc exp run``'s outcome from its log: a user error by the stage's exit
    code (its reason is the stage's own ``error:`` line), else a crash."""
    if USER_ERROR_EXIT in stage_exit_codes(log):
        return RunResult(Outcome.USER_ERROR, _stage_error(log))
    return RunResult(Outcome.CRASHED, _dvc_error(log))


def classify_run(returncode: int, log: str, metrics: dict[str, float] | None) -> RunResult:
    """The outcome of one ``dvc exp run --temp`` that exited with ``returncode``, given the
    metrics of its experiment (None when there is no experiment)."""
    if metrics is not None:
        return RunResult(Outcome.DONE, metrics=metrics)
    if returncode == 0:
        return RunResult(Outcome.LOST, "dvc reported success but no experiment")
    return classify_failure(log)


def _stage_error(log: str) -> str:
    ours = [line.strip() for line in log.splitlines() if line.strip().startswith("error: ")]
    return ours[-1].removeprefix("error: ") if ours else f"a stage exited {USER_ERROR_EXIT}"


def _dvc_error(log: str) -> str:
    theirs = [line.strip() for line in log.splitlines() if line.strip().startswith("ERROR")]
    return theirs[-1] if theirs else last_line(log) or "the dvc experiment failed without a message"
