"""What became of a trial's experiment, read from recorded dvc output (no dvc run): the
queue status table, and logs of runs that succeeded, hit a user error or crashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from visiontune.tuning.dvc_queue import FAILED, QUEUED, RUNNING, SUCCESS, Task, parse_queue_status
from visiontune.tuning.outcome import (
    Outcome,
    RunResult,
    classify_failure,
    classify_run,
    exception_line,
    log_tail,
    should_retry,
    stage_exit_codes,
)

RECORDED = Path(__file__).parent / "recorded"  # captured from dvc 3.67 on this project


def recorded(name: str) -> str:
    return (RECORDED / f"dvc-{name}.txt").read_text()


def test_queue_status_tables_are_parsed_into_tasks():
    assert parse_queue_status(recorded("status")) == [
        Task("93c690a", "bad", FAILED),
        Task("1594fbf", "diverge", FAILED),
        Task("8cd885b", "good", SUCCESS),
    ]
    running = parse_queue_status(recorded("status-running"))
    assert [(t.name, t.status) for t in running[:3]] == [
        ("q1", RUNNING),
        ("q2", QUEUED),
        ("q3", QUEUED),
    ]
    assert len(running) == 6  # the header and the worker line are not tasks
    assert parse_queue_status("") == []


@pytest.mark.parametrize("log", ["log-bad", "temp-bad"])
def test_a_stage_user_error_is_not_retried_and_keeps_its_message(log):
    assert stage_exit_codes(recorded(log)) == [3, 3]
    result = classify_failure(recorded(log))
    assert result == RunResult(Outcome.USER_ERROR, "model.lr must be > 0, got -1")
    assert not should_retry(result, attempts=1)


def test_a_crash_is_retried_once_and_named_by_its_exception_with_the_log_tail():
    log = recorded("temp-crash")
    assert stage_exit_codes(log) == [1, 1]
    result = classify_run(255, log, metrics=None)
    assert result.outcome == Outcome.CRASHED
    assert result.reason == (
        "python stages/train.py crashed: "
        "IndexError: index 5 is out of bounds for axis 0 with size 3"
    )
    # the log's last 10 lines: the traceback, then dvc's error (printed twice, kept once)
    assert len(result.tail) == 10
    assert result.tail[0] == "Traceback (most recent call last):"
    assert result.tail[-2:] == (
        "IndexError: index 5 is out of bounds for axis 0 with size 3",
        "ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 1",
    )
    assert should_retry(result, attempts=1) and not should_retry(result, attempts=2)


def test_the_exception_line_is_the_last_tracebacks_end():
    chained = (
        "Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'x'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "a.py", line 3\n    raise\n'
        "ValueError: bad\n  second line of its message\nERROR: failed\n"
    )
    assert exception_line(chained) == "ValueError: bad"
    assert exception_line(recorded("log-good")) is None
    assert log_tail("a\n\nb\nb\n  \nc\n", lines=2) == ("b", "c")


def test_a_user_error_line_from_another_tool_is_not_mistaken_for_ours():
    """Only the stage's exit code makes a user error: an ``error:`` line alone does not."""
    log = "error: git could not lock the ref\nERROR: unexpected error - lock\n"
    result = classify_failure(log)
    assert (result.outcome, result.reason) == (Outcome.CRASHED, "ERROR: unexpected error - lock")


def test_the_experiment_decides_success():
    found = {"val.acc": 0.85}
    assert classify_run(0, recorded("log-good"), found) == RunResult(Outcome.DONE, metrics=found)
    assert classify_run(255, recorded("temp-crash"), found).outcome == Outcome.DONE
    lost = classify_run(0, recorded("log-good"), metrics=None)
    assert lost == RunResult(Outcome.LOST, "dvc reported success but no experiment")
    assert should_retry(lost, attempts=1)
    timed_out = RunResult(Outcome.TIMED_OUT, "timed out after 5 s")
    assert not should_retry(timed_out, attempts=1)
