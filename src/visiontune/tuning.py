"""``visiontune tune``: an Optuna TPE study whose trials run as dvc experiments.

Ask-and-tell: the study (in Optuna storage) proposes params, each trial runs as
``dvc exp run --queue -n <study>-<number> -S ...`` through DVC's queue, its metrics are
read back from the experiment's commit and told to the study. The study survives
interruption: re-running the same command resumes it until ``--trials`` trials count.

A trial counts once it is COMPLETE or FAILED by itself (diverged, crashed, timed out).
Trials stopped from outside (Ctrl-C, a killed tuner whose heartbeat went stale) are
recorded as FAIL too but do not count, so a resumed study still gets its full number.

Several tuners (workers), each in its own clone on its own machine, can share one study
in a database server: each runs trials as experiments of its clone, marks them alive from
a heartbeat thread, fails the trials of a worker that died, and stops once the study
counts ``--trials`` trials; see :func:`surplus` for how they never overshoot it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontune.dvc_queue import (
    FAILED,
    QUEUED,
    RUNNING,
    SUCCESS,
    DvcQueue,
    experiment_metrics,
    experiment_names,
    failure_reason,
    temp_run_command,
)
from visiontune.errors import VisiontuneError, first_line
from visiontune.params import OBJECTIVES, Params, SpaceParam, with_overrides

POLL_SECONDS = 1.0
TRIAL_TARGET = "evaluate"  # a trial runs the pipeline up to evaluate: not the sweep
REASON = "fail_reason"  # user attr of a FAIL that counts, unless absent or one of these:
INTERRUPTED = "interrupted"  # stopped by Ctrl-C
SURPLUS = "surplus"  # asked while other workers' trials already reached --trials
NOT_COUNTED = (INTERRUPTED, SURPLUS)
WORKER = "worker"  # user attr: host and clone of the tuner that ran the trial


@dataclass(frozen=True)
class TuneOptions:
    """What the command line sets: how many trials, where the study lives, fixed params."""

    trials: int
    jobs: int = 1
    storage: str = "sqlite:///.optuna/studies.db"
    study: str = "visiontune"
    fixed: dict[str, Any] = field(default_factory=dict)
    in_process: bool = False
    sampler: str = "tpe"


@dataclass
class _Running:
    """A trial whose dvc experiment is queued or running."""

    trial: Any  # optuna.Trial
    name: str
    overrides: dict[str, Any]
    task: str
    started: float
    attempts: int = 1


def tune(params: Params, options: TuneOptions, repo: Path) -> Any:
    """Run (or resume) the study until ``options.trials`` trials count; return the study."""
    if options.trials < 1 or options.jobs < 1:
        raise VisiontuneError("--trials and --jobs must be >= 1")
    if not params.tune.space:
        raise VisiontuneError("tune.space in params.yaml is empty: nothing to tune")
    study = open_study(params, options)
    if not options.in_process:
        _check_names_free(study, repo)
    kind = _InProcess if options.in_process else _Queue if options.jobs > 1 else _Temp
    runner = kind(params, options, repo)
    with _heartbeats(study, runner.alive, params.tune.heartbeat):
        try:
            runner.run(study)
        except KeyboardInterrupt:
            runner.stop(study)
            raise
    write_summary(study, params, repo, applicable=not options.in_process)
    return study


def _check_names_free(study: Any, repo: Path) -> None:
    """Refuse to overwrite experiments of an earlier study that had the same name."""
    taken = sorted(
        name
        for name in experiment_names(repo)
        if name.startswith(f"{study.study_name}-")
        and name.rpartition("-")[2].isdigit()
        and int(name.rpartition("-")[2]) >= len(study.trials)
    )
    if taken:
        raise VisiontuneError(
            f"experiments {', '.join(taken[:3])}{' ...' if len(taken) > 3 else ''} exist but are "
            f"not in study {study.study_name} of this storage; use another --study, or remove "
            f"them with `dvc exp remove {' '.join(taken[:3])}`"
        )


def open_study(params: Params, options: TuneOptions) -> Any:
    """Load or create the study with an explicitly configured TPE sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats are ours to record: trials run outside Study.optimize, as experiments.
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(options.storage, params.tune.heartbeat)
    try:
        existing = optuna.load_study(study_name=options.study, storage=storage)
        previous = len(existing.trials)
    except KeyError:
        previous = 0
    # A resumed study must not replay its first draws. In a database server, workers that
    # start together would also draw the same points: there each worker seeds from fresh
    # entropy (timing decides which worker gets which trial, so no seed reproduces it).
    shared = _shared(options.storage)
    seed = None if shared else params.tune.seed + previous
    if options.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            multivariate=params.tune.multivariate,
            n_startup_trials=params.tune.n_startup_trials,
            constant_liar=options.jobs > 1 or shared,
            n_ei_candidates=24,
        )
    direction = OBJECTIVES[params.tune.metric]
    try:
        study = optuna.create_study(
            study_name=options.study,
            storage=storage,
            sampler=sampler,
            direction=direction,
            load_if_exists=True,
        )
    except ValueError as exc:
        raise VisiontuneError(f"study {options.study}: {exc}") from None
    if study.direction.name.lower() != direction:
        raise VisiontuneError(
            f"study {options.study} was created to {study.direction.name.lower()} but "
            f"tune.metric={params.tune.metric} needs {direction}; use another --study"
        )
    study.set_user_attr("metric", params.tune.metric)
    return study


def _shared(url: str) -> bool:
    """A database server, which several workers on several machines may share; not SQLite."""
    return not url.startswith("sqlite:")


def open_storage(url: str, heartbeat: int | None = None) -> Any:
    """Optuna's RDB storage at ``url``, heartbeats every ``heartbeat`` s; one-line errors."""
    import importlib.util

    import optuna
    import sqlalchemy.exc

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine_url = url
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        # SQLAlchemy 2.1 reads postgresql:// as psycopg (3); the project installs psycopg2.
        engine_url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    for _ in range(3):
        try:
            return optuna.storages.RDBStorage(
                engine_url,
                heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat if heartbeat else None,
                engine_kwargs={"pool_pre_ping": True},
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Workers opening an empty database at once race to create Optuna's tables:
            # the losers find them there when they try again.
            error: Exception = exc
            time.sleep(1)
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as exc:
            error = exc
            break
    raise VisiontuneError(f"cannot open Optuna storage {url}: {first_line(error)}") from None


def counted(trial: Any) -> bool:
    """A trial that counts toward ``--trials``: complete, or failed by itself."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return True
    reason = trial.user_attrs.get(REASON)
    return trial.state == TrialState.FAIL and reason is not None and reason not in NOT_COUNTED


def surplus(study: Any, number: int, target: int) -> bool:
    """Whether trial ``number`` would overshoot ``target``: the trials numbered below it that
    count or still run already reach the target.

    Two workers that each see one trial missing both ask. Optuna numbers new trials under a
    lock on the study, so every lower-numbered trial is visible here: the lowest-numbered
    of the racing trials run, the rest are recorded as surplus (FAIL, not counted). If a
    running trial later fails without counting, the waiting workers ask again.
    """
    from optuna.trial import TrialState

    return (
        sum(
            counted(t) or t.state == TrialState.RUNNING
            for t in study.get_trials(deepcopy=False)
            if t.number < number
        )
        >= target
    )


def suggest(trial: Any, space: tuple[SpaceParam, ...]) -> dict[str, Any]:
    """Ask the trial for a value of every dimension of ``tune.space``."""
    values = {}
    for param in space:
        if param.type == "categorical":
            values[param.key] = trial.suggest_categorical(param.key, list(param.choices))
        elif param.type == "int":
            values[param.key] = trial.suggest_int(param.key, param.low, param.high, log=param.log)
        else:
            values[param.key] = trial.suggest_float(param.key, param.low, param.high, log=param.log)
    return values


class _Runner:
    """What the temp-run, queue and in-process runners share: asking, telling, counting."""

    def __init__(self, params: Params, options: TuneOptions, repo: Path):
        self.params = params
        self.options = options
        self.repo = repo
        self.metric = params.tune.metric
        threads = max(1, (os.cpu_count() or 1) // options.jobs)
        self.fixed = {"train.threads": threads, **options.fixed}
        self.alive: set[int] = set()  # ids of our running trials, kept alive by _heartbeats
        self.worker = f"{socket.gethostname()}:{repo.resolve()}"
        self.waiting = False

    def overrides(self, trial: Any) -> dict[str, Any]:
        values = {**self.fixed, **suggest(trial, self.params.tune.space)}
        try:
            with_overrides(self.params, values)
        except VisiontuneError as exc:  # e.g. a sampled combination the schema refuses
            raise _TrialFailed(str(exc)) from None
        return values

    def ask(self, study: Any) -> tuple[Any, dict[str, Any]] | None:
        """A new trial and its params; a surplus trial or a refused combination fails at once."""
        trial = study.ask()
        study._storage.record_heartbeat(trial._trial_id)  # from now on, staleness is watched
        self.alive.add(trial._trial_id)
        trial.set_user_attr(WORKER, self.worker)
        if surplus(study, trial.number, self.options.trials):
            self.fail(study, trial, SURPLUS)
            return None
        try:
            return trial, self.overrides(trial)
        except _TrialFailed as exc:
            self.fail(study, trial, str(exc))
            return None

    def name(self, trial: Any) -> str:
        return f"{self.options.study}-{trial.number}"

    def finish(self, study: Any, trial: Any, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            self.fail(study, trial, f"the experiment wrote no finite {self.metric}")
            return
        for key in ("val.acc", "val.loss", "test.acc", "test.loss"):
            if key in metrics:
                trial.set_user_attr(key, metrics[key])
        study.tell(trial, value)
        self.alive.discard(trial._trial_id)
        _say(f"{self.name(trial)}: {self.metric} {value:.4f}  {_short(trial.params)}")

    def fail(self, study: Any, trial: Any, reason: str) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr(REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        self.alive.discard(trial._trial_id)
        note = ", not counted" if reason in NOT_COUNTED else ""
        _say(f"{self.name(trial)}: FAIL ({reason}{note})")

    def interrupted(self, study: Any, trials: list[Any]) -> None:
        """Record trials stopped by Ctrl-C as FAIL that does not count toward --trials."""
        from optuna.trial import TrialState

        for trial in trials:
            trial.set_user_attr(REASON, INTERRUPTED)
            study.tell(trial, state=TrialState.FAIL)
            self.alive.discard(trial._trial_id)
        _say(f"stopped: {len(trials)} running trial(s) recorded as interrupted")

    def remaining(self, study: Any, in_flight: int) -> int:
        """Trials still to start: the target less counted ones and those running anywhere."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        done = sum(counted(t) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return self.options.trials - done - max(running, in_flight)

    def reached(self, study: Any) -> bool:
        """Whether the study counts ``--trials`` trials: the tuner's work is done."""
        return sum(counted(t) for t in study.get_trials(deepcopy=False)) >= self.options.trials

    def wait(self) -> None:
        """Nothing to start, but other workers' trials run: they may yet fail or go stale."""
        if not self.waiting:
            _say("waiting for the trials other workers run")
            self.waiting = True
        time.sleep(POLL_SECONDS)


class _TrialFailed(Exception):
    """A trial that cannot run: recorded as FAIL with this reason."""


class _Queue(_Runner):
    """Trials as dvc experiments through DVC's queue, ``--jobs`` at a time."""

    def __init__(self, params: Params, options: TuneOptions, repo: Path):
        super().__init__(params, options, repo)
        self.queue = DvcQueue(repo)
        self.running: dict[int, _Running] = {}

    def run(self, study: Any) -> None:
        last_start = 0.0
        while True:
            _fail_stale(study, self.repo, self)
            launched = False
            while (
                len(self.running) < self.options.jobs
                and self.remaining(study, len(self.running)) > 0
            ):
                self.launch(study)
                launched = True
            if not self.running:
                if self.reached(study):
                    return
                self.wait()
                continue
            if launched or time.monotonic() - last_start > 30:  # workers exit when idle
                self.queue.start(self.options.jobs)
                last_start = time.monotonic()
            self.poll(study)
            time.sleep(POLL_SECONDS)

    def launch(self, study: Any) -> None:
        asked = self.ask(study)
        if asked is None:
            return
        trial, overrides = asked
        name = self.name(trial)
        task = self.queue.enqueue(name, overrides, TRIAL_TARGET)
        self.running[trial.number] = _Running(trial, name, overrides, task, time.monotonic())
        _say(f"{name}: queued  {_short(overrides)}")

    def poll(self, study: Any) -> None:
        tasks = {task.task: task for task in self.queue.tasks()}
        for number, entry in list(self.running.items()):
            task = tasks.get(entry.task)
            status = task.status if task else None
            if status == SUCCESS:
                metrics = experiment_metrics(self.repo, entry.name)
                del self.running[number]
                if metrics is None:
                    self.retry_or_fail(study, entry, "dvc reported success but no experiment")
                else:
                    self.finish(study, entry.trial, metrics)
            elif status == FAILED:
                reason = self.queue.error(entry.task)
                del self.running[number]
                # A visiontune error (bad params, divergence) repeats: retrying cannot help.
                if reason.startswith("error: "):
                    self.fail(study, entry.trial, reason.removeprefix("error: "))
                else:
                    self.retry_or_fail(study, entry, reason)
            elif status is None:
                del self.running[number]
                self.retry_or_fail(study, entry, "the dvc queue lost the task")
            elif time.monotonic() - entry.started > self.params.tune.trial_timeout:
                self.queue.kill(entry.task)
                del self.running[number]
                self.fail(study, entry.trial, f"timed out after {self.params.tune.trial_timeout} s")

    def retry_or_fail(self, study: Any, entry: _Running, reason: str) -> None:
        """Queue a lost or crashed trial once more; a second failure records it as FAIL."""
        metrics = experiment_metrics(self.repo, entry.name)
        if metrics is not None:  # its experiment exists after all: nothing was lost
            self.finish(study, entry.trial, metrics)
            return
        if entry.attempts >= 2:
            self.fail(study, entry.trial, reason)
            return
        _say(f"{entry.name}: {reason}; retrying once")
        task = self.queue.enqueue(entry.name, entry.overrides, TRIAL_TARGET)
        self.running[entry.trial.number] = _Running(
            entry.trial, entry.name, entry.overrides, task, time.monotonic(), attempts=2
        )

    def stop(self, study: Any) -> None:
        """Ctrl-C: kill or unqueue every trial of ours; record them as interrupted."""
        for entry in self.running.values():
            self.queue.kill(entry.task)
            self.queue.remove(entry.task)
        self.interrupted(study, [entry.trial for entry in self.running.values()])
        self.running.clear()


class _Temp(_Runner):
    """One trial at a time, each a ``dvc exp run --temp``: no queue workers to wait for."""

    process: subprocess.Popen | None = None
    trial: Any = None

    def run(self, study: Any) -> None:
        while True:
            _fail_stale(study, self.repo, self)
            if self.remaining(study, 0) <= 0:
                if self.reached(study):
                    return
                self.wait()
                continue
            asked = self.ask(study)
            if asked is None:
                continue
            self.trial, overrides = asked
            name = self.name(self.trial)
            _say(f"{name}: running  {_short(overrides)}")
            outcome = self.attempt(name, overrides)
            if outcome is not None and not outcome.startswith("error: "):
                _say(f"{name}: {outcome}; retrying once")
                outcome = self.attempt(name, overrides)
            if outcome is None:
                self.finish(study, self.trial, experiment_metrics(self.repo, name) or {})
            else:
                self.fail(study, self.trial, outcome.removeprefix("error: "))
            self.trial = None

    def attempt(self, name: str, overrides: dict[str, Any]) -> str | None:
        """Run the experiment; None on success, else why it failed."""
        command = temp_run_command(name, overrides, TRIAL_TARGET)
        with tempfile.TemporaryFile("w+") as log:
            self.process = subprocess.Popen(
                command, cwd=self.repo, stdout=log, stderr=subprocess.STDOUT, text=True
            )
            try:
                self.process.wait(timeout=self.params.tune.trial_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return f"error: timed out after {self.params.tune.trial_timeout} s"
            log.seek(0)
            output = log.read()
        if self.process.returncode == 0 and experiment_metrics(self.repo, name) is not None:
            return None
        return failure_reason(output)

    def stop(self, study: Any) -> None:
        """Ctrl-C: stop the running experiment; record its trial as interrupted."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.trial is not None:
            self.interrupted(study, [self.trial])


class _InProcess(_Runner):
    """Trials trained in this process on data/prepared: no dvc experiments (benchmarks)."""

    current: Any = None

    def run(self, study: Any) -> None:
        while self.remaining(study, 0) > 0:
            asked = self.ask(study)
            if asked is None:
                continue
            self.current, overrides = asked
            try:
                metrics = _quiet(lambda o=overrides: self.train_and_evaluate(o))
            except VisiontuneError as exc:
                self.fail(study, self.current, str(exc))
                continue
            self.finish(study, self.current, metrics)
        self.current = None

    def train_and_evaluate(self, overrides: dict[str, Any]) -> dict[str, float]:
        """The train and evaluate stages' work for one trial, without dvc."""
        from visiontune.checkpoint import save_checkpoint
        from visiontune.evaluation import evaluate
        from visiontune.training import fit

        params = with_overrides(self.params, overrides)
        prepared = self.repo / "data" / "prepared"
        fitted = fit(params, prepared)
        with tempfile.TemporaryDirectory() as tmp:
            model_path = Path(tmp) / "model.pt"
            save_checkpoint(model_path, fitted.model, fitted.meta)
            tested = evaluate(params, model_path, prepared, Path(tmp) / "m.json", Path(tmp))
        return _flat({**fitted.summary(), **tested})

    def stop(self, study: Any) -> None:
        """Ctrl-C: the trial in hand is recorded as interrupted."""
        if self.current is not None:
            self.interrupted(study, [self.current])


@contextlib.contextmanager
def _heartbeats(study: Any, trial_ids: set[int], interval: float) -> Iterator[None]:
    """Mark the trials in ``trial_ids`` alive every ``interval`` seconds while the tuner runs.

    A thread, so that a slow dvc call never lets a live trial look stale to another worker.
    """
    import optuna

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            for trial_id in trial_ids.copy():
                with contextlib.suppress(optuna.exceptions.StorageInternalError):
                    study._storage.record_heartbeat(trial_id)  # a lost beat: the next one

    thread = threading.Thread(target=beat, name="visiontune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _fail_stale(study: Any, repo: Path, runner: _Runner) -> None:
    """Trials whose tuner died: keep any that finished as experiments here, fail the rest.

    The runner's own trials are alive whatever their heartbeat says. A dead worker's trial
    from another clone has no experiment here: it is failed (not counted), and the orphaned
    ``dvc exp run`` of that worker, if its machine still runs it, no longer matters.
    """
    import optuna

    storage = study._storage  # Optuna exposes staleness only on the storage
    stale = [i for i in storage._get_stale_trial_ids(study._study_id) if i not in runner.alive]
    queue = DvcQueue(repo) if stale else None
    for trial_id in stale:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            _settle_stale(storage, repo, runner, study.study_name, trial_id, queue)


def _settle_stale(
    storage: Any, repo: Path, runner: _Runner, study_name: str, trial_id: int, queue: DvcQueue
) -> None:
    """Complete a stale trial from its finished experiment, or stop it and fail it.

    Another tuner may settle it first: Optuna then raises UpdateFinishedTrialError.
    """
    import optuna

    trial = storage.get_trial(trial_id)
    name = f"{study_name}-{trial.number}"
    metrics = experiment_metrics(repo, name)
    value = metrics.get(runner.metric) if metrics else None
    if value is not None and math.isfinite(value):
        for key, item in metrics.items():
            storage.set_trial_user_attr(trial_id, key, item)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [value])
        _say(f"{name}: recovered from its finished experiment")
        return
    for task in queue.tasks():  # the dead tuner's experiment: stop it, it is failed
        if task.name == name and task.status in (QUEUED, RUNNING):
            queue.kill(task.task)
            queue.remove(task.task)
    _say(f"{name}: its tuner stopped; recorded as FAIL (not counted)")
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)


def write_summary(
    study: Any, params: Params, repo: Path, applicable: bool = True
) -> dict[str, Any] | None:
    """Print and save the best trial; write optimisation history and importances as HTML."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        _say("no trial completed: nothing to report")
        return None
    best = study.best_trial
    name = f"{study.study_name}-{best.number}"
    summary = {
        "study": study.study_name,
        "best": {
            "name": name,
            "params": best.params,
            params.tune.metric: best.value,
            "test.acc": best.user_attrs.get("test.acc"),
        },
        "trials": {
            "complete": len(complete),
            "fail": sum(t.state == TrialState.FAIL for t in trials),
        },
    }
    out = repo / "metrics" / "tune.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tune": summary}, indent=2) + "\n")
    _write_plots(study, repo / "plots" / "tune")
    test = summary["best"]["test.acc"]
    where = ""
    if applicable and name not in experiment_names(repo):  # another worker ran it
        where = f" in {best.user_attrs.get(WORKER, 'the clone that ran it')}"
    _say(
        f"best: {name}  {params.tune.metric} {best.value:.4f}"
        + (f"  test.acc {test:.4f}" if test is not None else "")
        + f"  {_short(best.params)}"
        + (f"\napply it{where} with: dvc exp apply {name}" if applicable else "")
    )
    return summary


def _write_plots(study: Any, out: Path) -> None:
    import optuna.visualization as vis

    out.mkdir(parents=True, exist_ok=True)
    vis.plot_optimization_history(study).write_html(out / "history.html", include_plotlyjs="cdn")
    with contextlib.suppress(ValueError, RuntimeError):  # needs >= 2 complete trials
        vis.plot_param_importances(study).write_html(
            out / "importances.html", include_plotlyjs="cdn"
        )


def _flat(nested: dict[str, Any]) -> dict[str, float]:
    from visiontune.experiments import flatten

    return {k: v for k, v in flatten(nested) if isinstance(v, (int, float))}


def _quiet(fn: Callable[[], Any]) -> Any:
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


def _short(values: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def _say(line: str) -> None:
    print(line, flush=True)
