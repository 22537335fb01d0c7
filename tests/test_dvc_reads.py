"""Read-only dvc queue queries asked again past DVC's transient errors: real dvc, a real
queue that ran a real experiment, and its files caught half-written as their writers
leave them for a moment."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from helpers.dvc_repo import DvcRepo

from visiontune.config.errors import VisiontuneError
from visiontune.experiments.dvc_git import error_line, run_tool
from visiontune.experiments.dvc_reads import is_transient, read_dvc
from visiontune.tuning.dvc_queue import SUCCESS, DvcQueue, parse_queue_status

PIPELINE = """\
stages:
  copy:
    cmd: cp params.yaml copy.yaml
    params: [x]
    outs: [copy.yaml]
"""
# What a CI run of `dvc queue status` printed while a task ran (an exchange table of
# Celery's filesystem broker, created empty and only then written).
EMPTY_JSON = "ERROR: unexpected error - Expecting value: line 1 column 1 (char 0)"


@pytest.fixture(scope="module")
def queue_repo(tmp_path_factory: pytest.TempPathFactory) -> DvcRepo:
    """A one-stage dvc project whose queue ran one experiment (``two``) to success, its
    workers gone: the tests break the broker's files, which a live worker reads (one left
    that way never exited)."""
    repo = DvcRepo(tmp_path_factory.mktemp("queue"))
    repo.git("init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    repo.dvc("config", "core.analytics", "false")  # as the project's own .dvc/config
    (repo.path / "params.yaml").write_text("x: 1\n")
    (repo.path / "dvc.yaml").write_text(PIPELINE)
    repo.commit("a one-stage pipeline")
    repo.dvc("exp", "run", "--queue", "-n", "two", "-S", "x=2")
    repo.start_queue()
    repo.wait_for_queue(timeout=300)
    repo.stop_queue()
    return repo


def exchange_table(repo: DvcRepo) -> Path:
    """The broker's table of the queue workers' control queues (read by every status)."""
    return repo.path / ".dvc/tmp/exps/celery/broker/control/celery.pidbox.exchange"


def info_file(repo: DvcRepo) -> Path:
    """The finished task's executor info file, ``.dvc/tmp/exps/run/<rev>/<rev>.run``."""
    (path,) = (repo.path / ".dvc/tmp/exps/run").glob("*/*.run")
    return path


# Each file as its writer leaves it for a moment: the table created but not yet written,
# the info file truncated and written in part; and dvc's error line for each.
HALF_WRITTEN: dict[str, tuple[Callable[[DvcRepo], Path], Callable[[str], str], str]] = {
    "broker exchange table": (exchange_table, lambda text: "", EMPTY_JSON),
    "task info file": (
        info_file,
        lambda text: text[: len(text) // 2],
        "JSON file structure is corrupted",
    ),
}


@pytest.fixture(params=sorted(HALF_WRITTEN))
def half_written(request: pytest.FixtureRequest, queue_repo: DvcRepo):
    """(the file, its whole text, dvc's error line for it) with the file half-written for
    the test; whole again afterwards."""
    locate, cut, message = HALF_WRITTEN[request.param]
    path = locate(queue_repo)
    whole = path.read_text()
    path.write_text(cut(whole))
    yield path, whole, message
    write_atomically(path, whole)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s text at once: no reader can catch it half-written."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def queue_processes() -> set[int]:
    """The pids of this test's ``dvc queue`` processes running now."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "queue" in child.cmdline():
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def after_first_try(action: Callable[[], None]) -> threading.Thread:
    """A started thread that calls ``action`` once a ``dvc queue`` process of this test
    has come and gone (its first try failed, or found a task missing), while the query
    still asks again."""

    def wait_then_act() -> None:
        seen: set[int] = set()
        while not seen or seen <= queue_processes():
            seen |= queue_processes()
            time.sleep(0.02)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def test_dvc_itself_fails_on_a_half_written_queue_file(queue_repo, half_written):
    _, _, message = half_written
    result = run_tool("dvc", "queue", "status", cwd=queue_repo.path, check=False)
    assert result.returncode != 0
    assert message in error_line(result.stderr)
    assert is_transient(result.stderr)


def test_the_query_succeeds_once_the_file_is_completed_within_its_retries(queue_repo, half_written):
    path, whole, _ = half_written
    writer = after_first_try(lambda: write_atomically(path, whole))
    tasks = DvcQueue(queue_repo.path).tasks()  # the tuner's query
    writer.join(timeout=60)
    assert not writer.is_alive()  # the file was completed after a failed try
    assert [(task.name, task.status) for task in tasks] == [("two", SUCCESS)]


def test_a_file_that_stays_broken_is_one_line_after_the_retries(queue_repo, half_written):
    _, _, message = half_written
    with pytest.raises(VisiontuneError) as caught:
        read_dvc("queue", "status", cwd=queue_repo.path, within=1)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("dvc queue status failed (exit status 255): ERROR: ")
    assert message in text and text.endswith(" (still after 1 s)")


def test_other_errors_are_not_asked_again(queue_repo):
    """A finished task's missing info file is persistent (DVC never deletes it): one try."""
    path = info_file(queue_repo)
    whole = path.read_text()
    path.unlink()
    try:
        with pytest.raises(VisiontuneError) as caught:
            read_dvc("queue", "status", cwd=queue_repo.path)
    finally:
        write_atomically(path, whole)
    assert str(caught.value).startswith("dvc queue status failed (exit status 255): ERROR: ")
    assert "Invalid experiment" in str(caught.value)
    assert "still after" not in str(caught.value)


def test_a_dvc_failure_names_its_error_line_not_dvc_s_footer(queue_repo):
    """dvc follows an unexpected error with "Having any troubles? Hit us up at ..."."""
    path = exchange_table(queue_repo)
    whole = path.read_text()
    path.write_text("")
    try:
        with pytest.raises(VisiontuneError) as caught:
            run_tool("dvc", "queue", "status", cwd=queue_repo.path)
    finally:
        write_atomically(path, whole)
    assert str(caught.value) == f"dvc queue status failed (exit status 255): {EMPTY_JSON}"


def processed_message(repo: DvcRepo) -> Path:
    """The finished task's message in the broker's processed folder (where a worker moves
    it from the queue folder when it takes the task)."""
    (path,) = (repo.path / ".dvc/tmp/exps/celery/broker/processed").glob(
        "*.celery.msg"
    )  # the task; not the control messages
    return path


@pytest.fixture
def in_transit(queue_repo: DvcRepo, tmp_path: Path):
    """The task's message moved out of the broker, as a worker taking it leaves it between
    `dvc queue status`'s two reads; (its place, where it is now). Back in place afterwards."""
    path = processed_message(queue_repo)
    away = tmp_path / path.name
    os.replace(path, away)
    yield path, away
    if away.exists():
        os.replace(away, path)


def test_a_task_in_transit_is_missing_from_dvc_s_status(queue_repo, in_transit):
    assert DvcQueue(queue_repo.path).tasks() == []


def test_an_expected_task_missing_is_asked_about_again(queue_repo, in_transit):
    path, away = in_transit
    (task,) = {t.task for t in parse_queue_status(queue_status(queue_repo, path, away))}
    mover = after_first_try(lambda: os.replace(away, path))
    tasks = DvcQueue(queue_repo.path).tasks(expect=[task])
    mover.join(timeout=60)
    assert not mover.is_alive()
    assert [(t.task, t.name, t.status) for t in tasks] == [(task, "two", SUCCESS)]


def test_an_expected_task_still_missing_after_the_bound_is_gone(queue_repo, in_transit):
    path, away = in_transit
    (task,) = {t.task for t in parse_queue_status(queue_status(queue_repo, path, away))}
    assert DvcQueue(queue_repo.path).tasks(expect=[task], within=1) == []


def queue_status(repo: DvcRepo, path: Path, away: Path) -> str:
    """``dvc queue status`` with the message in place for the moment."""
    os.replace(away, path)
    try:
        return run_tool("dvc", "queue", "status", cwd=repo.path).stdout
    finally:
        os.replace(path, away)
