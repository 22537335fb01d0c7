"""One Optuna study tuned from several machines: workers in separate clones share a real
PostgreSQL server (started here on loopback), each trial an experiment of its worker's clone."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from helpers.dvc_repo import SPACE, DvcRepo
from helpers.postgres import NOT_FOUND, Postgres, postgres_server, server_bin_dir
from helpers.servers import wait_for
from optuna.trial import TrialState

from visiontune.config.params import Params
from visiontune.config.tune_settings import parse_settings
from visiontune.tuning.accounting import REASON, SURPLUS, WORKER, counted
from visiontune.tuning.options import TuneOptions
from visiontune.tuning.runners import TempRunner
from visiontune.tuning.space import suggest
from visiontune.tuning.study import open_storage, open_study

WORKER_TIMEOUT = 420  # seconds: a worker that runs longer has hung


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for this module's tests, stopped and removed after them."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        pytest.skip(NOT_FOUND)
    with postgres_server(bin_dir) as server:
        yield server


def new_database(postgres: Postgres) -> str:
    """A fresh database: its URL as users type it (``postgresql://user@host:port/db``)."""
    return postgres.create_database(f"optuna_{uuid.uuid4().hex[:12]}")


def load(url: str, study: str) -> optuna.Study:
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the project ships psycopg2.
    storage = url.replace("postgresql://", "postgresql+psycopg2://")
    return optuna.load_study(study_name=study, storage=storage)


# --- fast: the race between workers that ask at the same moment ------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return new_database(request.getfixturevalue("postgres"))


def test_two_workers_asking_at_once_do_not_overshoot(storage: str, tmp_path: Path) -> None:
    params, settings = Params(), parse_settings({"space": SPACE})
    options = TuneOptions(trials=2, storage=storage, settings=settings)
    storage = open_storage(storage)
    study = open_study(params, options, storage)
    study.tell(study.ask(), 0.5)
    first, second = (TempRunner(params, options, tmp_path, storage, study) for _ in range(2))
    assert first.remaining(study, 0) == second.remaining(study, 0) == 1  # both see one to go

    running = first.ask(study)
    assert running is not None
    assert second.ask(study) is None  # trial 2: trials 0 and 1 already reach 2
    surplus = study.trials[2]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs[REASON] == SURPLUS
    assert [counted(t) for t in study.trials] == [True, False, False]

    first.interrupted(study, [running[0]])  # trial 1 stops without counting: ask again
    assert second.remaining(study, 0) == 1
    assert second.ask(study) is not None and study.trials[3].state == TrialState.RUNNING


def test_workers_opening_a_new_database_at_once(postgres: Postgres) -> None:
    """Workers started together on an empty database race to create Optuna's tables."""
    params, settings = Params(), parse_settings({"space": SPACE})
    options = TuneOptions(trials=2, storage=new_database(postgres), settings=settings)
    together = threading.Barrier(4, timeout=60)

    def start() -> str:
        together.wait()
        return open_study(params, options).study_name

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        names = [future.result(timeout=120) for future in [pool.submit(start) for _ in range(4)]]
    assert names == ["visiontune"] * 4


def test_racing_workers_count_exactly_the_target(postgres: Postgres, tmp_path: Path) -> None:
    """Four workers (threads, each with its own connections) race for 10 trials on PostgreSQL
    in lockstep rounds: in the third round all four see the last two trials missing."""
    url = new_database(postgres)
    params, settings = Params(), parse_settings({"space": SPACE})
    options = TuneOptions(trials=10, storage=url, settings=settings)
    open_study(params, options)  # created once, then opened by each worker
    rounds = threading.Barrier(4, timeout=60)

    def work() -> None:
        storage = open_storage(url)
        study = open_study(params, options, storage)
        runner = TempRunner(params, options, tmp_path, storage, study)
        for _ in range(3):
            rounds.wait()
            if runner.remaining(study, 0) > 0 and (asked := runner.ask(study)):
                runner.complete(study, asked[0], {"val.acc": 0.5})

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(work) for _ in range(4)]:
            future.result(timeout=120)
    trials = load(url, "visiontune").trials
    assert sum(counted(t) for t in trials) == 10
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE or t.user_attrs[REASON] == SURPLUS for t in trials)


def test_workers_of_a_shared_study_draw_different_points(
    postgres: Postgres, tmp_path: Path
) -> None:
    params, settings = Params(), parse_settings({"space": SPACE})
    shared = TuneOptions(trials=2, storage=new_database(postgres), settings=settings)
    first, second = open_study(params, shared), open_study(params, shared)  # started together
    assert suggest(first.ask(), settings.space) != suggest(second.ask(), settings.space)

    # A SQLite study (one machine) stays reproducible: the same seed, the same draws.
    alone, again = (
        TuneOptions(trials=2, storage=f"sqlite:///{tmp_path / n}", settings=settings) for n in "ab"
    )
    draw = suggest(open_study(params, alone).ask(), settings.space)
    assert suggest(open_study(params, again).ask(), settings.space) == draw


# --- slow: two clones ("machines"), each running `visiontune tune` ----------------------


@pytest.fixture(scope="module")
def machines(
    baseline: DvcRepo, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DvcRepo, DvcRepo]:
    """Two clones of the project, as on two machines: the first ran the pipeline and pushed
    its data to a shared dvc remote; the second is a `git clone` of it that pulled the data."""
    root = tmp_path_factory.mktemp("machines")
    remote = str(root / "dvc-remote")
    first = baseline.clone_with_cache(root / "first")
    first.dvc("remote", "add", "--local", "shared", remote)
    first.dvc("push", "-r", "shared")
    first.git("clone", "-q", str(first.path), str(root / "second"))
    second = DvcRepo(root / "second")
    second.dvc("remote", "add", "--local", "shared", remote)
    second.dvc("pull", "-r", "shared", "evaluate")  # what the first machine built and pushed
    assert second.run("git", "status", "--porcelain").stdout == ""
    return first, second


@dataclass
class Worker:
    """``visiontune tune`` running in ``repo`` in its own process group, output in ``log``."""

    repo: DvcRepo
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """``start_worker(repo, url, study, *args)``; every worker's process group (dvc children
    included) is killed at the end of the test."""
    started: list[Worker] = []

    def start(repo: DvcRepo, url: str, study: str, *args: str) -> Worker:
        log = repo.path.parent / f"{repo.path.name}-{study}.log"
        command = [sys.executable, "-m", "visiontune", "tune", "--storage", url]
        command += ["--study", study, "--set", "train.threads=1", *args]
        with log.open("w") as out:
            process = subprocess.Popen(
                command,
                cwd=repo.path,
                env=repo.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(Worker(repo, process, log))
        return started[-1]

    yield start
    for worker in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=30)


def finish(*workers: Worker) -> None:
    """Wait (bounded) for each worker; each must succeed."""
    deadline = time.monotonic() + WORKER_TIMEOUT
    for worker in workers:
        try:
            worker.process.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logs = "\n".join(w.output() for w in workers)
            raise AssertionError(
                f"workers still running after {WORKER_TIMEOUT} s:\n{logs}"
            ) from None
        assert worker.process.returncode == 0, worker.output()


def experiments(repo: DvcRepo, study: str) -> dict[str, dict]:
    return {name: row for name, row in repo.experiments().items() if name.startswith(study)}


def worker_of(repo: DvcRepo) -> str:
    """The ``worker`` user attr of the trials a tuner in ``repo`` ran (host:clone)."""
    return f"{socket.gethostname()}:{repo.path.resolve()}"


@pytest.mark.slow
def test_two_machines_share_one_study(
    postgres: Postgres, machines: tuple[DvcRepo, DvcRepo], start_worker: Callable[..., Worker]
) -> None:
    url = new_database(postgres)
    first, second = machines
    finish(*[start_worker(repo, url, "shared", "--trials", "4") for repo in machines])

    trials = load(url, "shared").trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # none twice
    assert sum(counted(t) for t in trials) == 4
    assert all(t.state == TrialState.COMPLETE or t.user_attrs[REASON] == SURPLUS for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4  # no point twice
    # each worker's train stages report their epochs to the shared study: learning curves
    assert all(sorted(t.intermediate_values) == [1, 2] for t in complete)

    found = {repo.path: experiments(repo, "shared-") for repo in machines}
    assert found[first.path] and found[second.path]  # both machines ran trials
    assert not set(found[first.path]) & set(found[second.path])
    assert set(found[first.path]) | set(found[second.path]) == {
        f"shared-{t.number}" for t in complete
    }
    clones = {worker_of(repo): repo for repo in machines}
    for trial in complete:  # each in the clone of the worker that ran it, with its results
        row = found[clones[trial.user_attrs[WORKER]].path][f"shared-{trial.number}"]
        assert row["metrics"]["metrics/train.json"]["data"]["val"]["acc"] == trial.value
        assert row["params"]["model"]["lr"] == pytest.approx(trial.params["model.lr"])

    report = first.run(
        sys.executable, "-m", "visiontune", "report", "--storage", url, "--study", "shared"
    )
    assert "wrote report.md" in report.stdout  # the report reads the shared study too
    assert (first.path / "report_plots" / "tune_history.png").is_file()


@pytest.mark.slow
def test_a_killed_worker_is_failed_and_replaced_by_the_other(
    postgres: Postgres, machines: tuple[DvcRepo, DvcRepo], start_worker: Callable[..., Worker]
) -> None:
    url = new_database(postgres)
    first, second = machines
    victim = start_worker(first, url, "killed", "--trials", "3")
    wait_for(lambda: in_trial(victim))
    survivor = start_worker(second, url, "killed", "--trials", "3")
    wait_for(lambda: in_trial(survivor))
    wait_for(lambda: in_trial(victim))
    victim.process.kill()  # kill -9 of the tuner mid-trial; its `dvc exp run` lives on, orphaned
    victim.process.wait(timeout=30)
    finish(survivor)

    trials = load(url, "killed").trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # none twice
    assert sum(counted(t) for t in trials) == 3
    assert not any(t.state == TrialState.RUNNING for t in trials)
    ran = {
        repo.path: [t for t in trials if t.user_attrs[WORKER] == worker_of(repo)]
        for repo in machines
    }
    assert len(ran[first.path]) + len(ran[second.path]) == len(trials)
    (dead,) = [t for t in ran[first.path] if t.state != TrialState.COMPLETE]
    assert dead.state == TrialState.FAIL and REASON not in dead.user_attrs  # failed as stale
    assert f"killed-{dead.number}: its tuner stopped; recorded as FAIL" in survivor.output()
    names = {
        path: {f"killed-{t.number}" for t in ran[path] if t.state == TrialState.COMPLETE}
        for path in ran
    }
    assert set(experiments(second, "killed-")) == names[second.path]
    # the orphaned `dvc exp run` may have finished the dead trial's experiment meanwhile
    assert (
        names[first.path]
        <= set(experiments(first, "killed-"))
        <= names[first.path] | {f"killed-{dead.number}"}
    )


def in_trial(worker: Worker) -> bool:
    """Whether the worker's last line says that a trial of it runs."""
    lines = worker.output().splitlines()
    return bool(lines) and ": running " in lines[-1]
