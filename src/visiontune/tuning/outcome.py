"""What became of a trial's dvc experiment, decided from exit codes, queue states and the
experiment's presence, never from the wording of a message; and the one retry policy.

A stage stopped by a user error (bad params, a combination the schema refuses, diverging
training) exits with :data:`~visiontune.errors.USER_ERROR_EXIT`, which dvc reports as
``failed to run: <cmd>, exited with <code>``: that repeats on every retry. A crash, a task
the queue lost or a run that reports success without an experiment may not: those are
retried once.

The reason recorded for a failure is one line: a user error's own ``error:`` line; for a
crash, the exception its traceback ends with, and the last lines of the log beside it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from visiontune.config.errors import USER_ERROR_EXIT
from visiontune.experiments.dvc_git import last_line

# How dvc reports a stage command's exit status (dvc.stage.exceptions.StageCmdFailedError).
_STAGE_EXIT = re.compile(r"failed to run: (.*), exited with (-?\d+)")
_TRACEBACK = "Traceback (most recent call last):"
MAX_ATTEMPTS = 2
TAIL_LINES = 10  # of a crashed run's log, recorded with its reason


class Outcome(enum.Enum):
    DONE = "done"  # the experiment exists: its metrics are the trial's
    USER_ERROR = "user error"  # a stage exited USER_ERROR_EXIT: deterministic
    TIMED_OUT = "timed out"  # stopped after tune.trial_timeout
    LOST = "lost"  # the queue lost the task, or dvc reported success but no experiment
    CRASHED = "crashed"  # anything else


@dataclass(frozen=True)
class RunResult:
    """A finished attempt at a trial's experiment: if DONE, the experiment's metrics (read
    once, when deciding); else why it failed, in one line, and for a crash the last lines
    of its log (``tail``); ``log``: where the runner kept that log, if it did."""

    outcome: Outcome
    reason: str = ""
    metrics: dict[str, float] | None = None
    tail: tuple[str, ...] = ()
    log: str = ""

    @property
    def retryable(self) -> bool:
        return self.outcome in (Outcome.LOST, Outcome.CRASHED)


def should_retry(result: RunResult, attempts: int) -> bool:
    """The one retry policy: a lost or crashed run gets one more attempt."""
    return result.retryable and attempts < MAX_ATTEMPTS


def stage_exit_codes(log: str) -> list[int]:
    """Exit statuses of the stage commands that failed in a ``dvc exp run`` log."""
    return [int(code) for _, code in _STAGE_EXIT.findall(log)]


def classify_failure(log: str) -> RunResult:
    """A failed ``dvc exp run``'s outcome from its log: a user error by the stage's exit
    code (its reason is the stage's own ``error:`` line), else a crash (its reason: the
    exception its traceback ends with, else dvc's error; with the log's last lines)."""
    if USER_ERROR_EXIT in stage_exit_codes(log):
        return RunResult(Outcome.USER_ERROR, _stage_error(log))
    return RunResult(Outcome.CRASHED, _crash_reason(log), tail=log_tail(log))


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


def log_tail(log: str, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of a log, right-stripped; a line repeated at once
    is kept once (dvc prints its error twice)."""
    kept: list[str] = []
    for line in log.splitlines():
        line = line.rstrip()
        if line.strip() and (not kept or kept[-1] != line):
            kept.append(line)
    return tuple(kept[-lines:])


def exception_line(log: str) -> str | None:
    """The line naming the exception that a log's last Python traceback ends with
    (``RuntimeError: ...``), or None without a traceback: the first line after the
    traceback's header that is not an indented frame."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK]
    if not starts:
        return None
    for line in lines[starts[-1] + 1 :]:
        if line.strip() and not line[0].isspace():
            return line.strip()
    return None


def _crash_reason(log: str) -> str:
    """``python stages/train.py crashed: RuntimeError: ...``, or dvc's error line."""
    exception = exception_line(log)
    if exception is None:
        return _dvc_error(log)
    commands = _STAGE_EXIT.findall(log)
    return f"{commands[-1][0]} crashed: {exception}" if commands else exception


def _dvc_error(log: str) -> str:
    theirs = [line.strip() for line in log.splitlines() if line.strip().startswith("ERROR")]
    return theirs[-1] if theirs else last_line(log) or "the dvc experiment failed without a message"
