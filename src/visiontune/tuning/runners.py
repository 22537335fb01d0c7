"""Three ways to run a study's trials: ``dvc exp run --temp`` one at a time, DVC's queue
``--jobs`` at a time, or in this process without dvc (quick, nothing to apply)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import with_overrides
from visiontune.config.paths import PREPARED
from visiontune.experiments.listing import experiment_metrics, experiment_names, flatten
from visiontune.tuning.dvc_queue import FAILED, SUCCESS, DvcQueue, temp_run_command
from visiontune.tuning.options import POLL_SECONDS, TRIAL_TARGET
from visiontune.tuning.outcome import (
    Outcome,
    RunResult,
    classify_failure,
    classify_run,
    should_retry,
)
from visiontune.tuning.summary import say, short
from visiontune.tuning.trial_link import TrialLink
from visiontune.tuning.trials import Runner

if TYPE_CHECKING:
    import optuna

QUEUE_RESTART_SECONDS = 30  # idle queue workers exit: make sure enough run this often
# Between looks at the queue's tasks for failures, losses and timeouts: each `dvc queue
# status` costs about a second of CPU. A finished experiment is seen sooner, through git.
STATUS_SECONDS = 5.0


class TempRunner(Runner):
    """One trial at a time, each a ``dvc exp run --temp``: no queue workers to wait for."""

    process: subprocess.Popen | None = None
    trial: optuna.Trial | None = None

    def run(self, study: optuna.Study) -> None:
        """Ask, run and settle trials until the study counts ``--trials``."""
        while True:
            self.settle_stale(study)
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
            say(f"{name}: running  {short(overrides)}{self.hand_out_gpus(name)}")
            attempts = 1
            result = self.attempt(name, overrides)
            while should_retry(result, attempts):
                say(f"{name}: {result.reason}; retrying once")
                attempts += 1
                result = self.attempt(name, overrides)
            self.settle(study, self.trial, result)
            self.trial = None

    def attempt(self, name: str, overrides: dict[str, Any]) -> RunResult:
        """Run the trial's experiment once, within ``tune.trial_timeout``."""
        timeout = self.options.settings.trial_timeout
        with tempfile.TemporaryFile("w+") as log:
            self.process = subprocess.Popen(
                temp_run_command(name, overrides, TRIAL_TARGET),
                cwd=self.repo,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self.env,
            )
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                log.seek(0)
                timed_out = RunResult(Outcome.TIMED_OUT, f"timed out after {timeout} s")
                return self.with_log(name, timed_out, log.read())
            log.seek(0)
            output = log.read()
        metrics = experiment_metrics(self.repo, name)
        return self.with_log(name, classify_run(self.process.returncode, output, metrics), output)

    def stop(self, study: optuna.Study) -> None:
        """Ctrl-C: stop the running experiment; record its trial as interrupted."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.trial is not None:
            self.interrupted(study, [self.trial])


@dataclass
class _Queued:
    """A trial whose dvc experiment is queued or running."""

    trial: optuna.Trial
    name: str
    overrides: dict[str, Any]
    task: str
    started: float
    attempts: int = 1


class QueueRunner(Runner):
    """Trials as dvc experiments through DVC's queue, ``--jobs`` at a time."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.queue = DvcQueue(self.repo)
        self.running: dict[int, _Queued] = {}
        self.next_status = 0.0

    def run(self, study: optuna.Study) -> None:
        """Keep ``--jobs`` trials queued or running until the study counts ``--trials``."""
        last_start = 0.0
        while True:
            self.settle_stale(study)
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
            if launched or time.monotonic() - last_start > QUEUE_RESTART_SECONDS:
                self.queue.start(self.options.jobs, self.env)
                last_start = time.monotonic()
            self.poll(study)
            time.sleep(POLL_SECONDS)

    def launch(self, study: optuna.Study) -> None:
        """Ask for a trial and queue its experiment."""
        asked = self.ask(study)
        if asked is None:
            return
        trial, overrides = asked
        name = self.name(trial)
        gpus = self.hand_out_gpus(name)
        task = self.queue.enqueue(name, overrides, TRIAL_TARGET)
        self.running[trial.number] = _Queued(trial, name, overrides, task, time.monotonic())
        say(f"{name}: queued  {short(overrides)}{gpus}")

    def poll(self, study: optuna.Study) -> None:
        """Settle the trials whose task finished, was lost or ran past its time.

        The queue's tasks are read when a running trial's experiment appeared (one git
        call each :data:`POLL_SECONDS`) or every :data:`STATUS_SECONDS`, not each time.
        """
        finished = experiment_names(self.repo) & {e.name for e in self.running.values()}
        if not finished and time.monotonic() < self.next_status:
            return
        self.next_status = time.monotonic() + STATUS_SECONDS
        ours = [entry.task for entry in self.running.values()]
        tasks = {task.task: task for task in self.queue.tasks(expect=ours)}
        for number, entry in list(self.running.items()):
            task = tasks.get(entry.task)
            timeout = self.options.settings.trial_timeout
            if task is not None and task.status not in (SUCCESS, FAILED):
                if time.monotonic() - entry.started <= timeout:
                    continue
                self.queue.kill(entry.task)
                timed_out = RunResult(Outcome.TIMED_OUT, f"timed out after {timeout} s")
                result = self.with_log(entry.name, timed_out, self.queue.log(entry.task))
            else:
                result = self.task_result(entry, task.status if task else None)
            del self.running[number]
            if should_retry(result, entry.attempts):
                say(f"{entry.name}: {result.reason}; retrying once")
                retry = self.queue.enqueue(entry.name, entry.overrides, TRIAL_TARGET)
                self.running[number] = _Queued(
                    entry.trial, entry.name, entry.overrides, retry, time.monotonic(), 2
                )
            else:
                self.settle(study, entry.trial, result)

    def task_result(self, entry: _Queued, status: str | None) -> RunResult:
        """A finished (or vanished) task's outcome; an experiment that exists is DONE. The
        log of a failed one is kept: DVC's own goes once its task is removed."""
        if (metrics := experiment_metrics(self.repo, entry.name)) is not None:
            return RunResult(Outcome.DONE, metrics=metrics)
        if status == FAILED:
            output = self.queue.log(entry.task)
            return self.with_log(entry.name, classify_failure(output), output)
        if status == SUCCESS:
            lost = RunResult(Outcome.LOST, "dvc reported success but no experiment")
            return self.with_log(entry.name, lost, self.queue.log(entry.task))
        return RunResult(Outcome.LOST, "the dvc queue lost the task")

    def stop(self, study: optuna.Study) -> None:
        """Ctrl-C: kill or unqueue every trial of ours; record them as interrupted."""
        for entry in self.running.values():
            self.queue.kill(entry.task)
            self.queue.remove(entry.task)
        self.interrupted(study, [entry.trial for entry in self.running.values()])
        self.running.clear()


class InProcessRunner(Runner):
    """Trials trained in this process on data/prepared: no dvc experiments (benchmarks)."""

    current: optuna.Trial | None = None

    def run(self, study: optuna.Study) -> None:
        """Train and evaluate trials here until the study counts ``--trials``."""
        while self.remaining(study, 0) > 0:
            asked = self.ask(study)
            if asked is None:
                continue
            self.current, overrides = asked
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    metrics = self.train_and_evaluate(self.current, overrides)
            except VisiontuneError as exc:
                self.fail(study, self.current, str(exc))
                continue
            self.complete(study, self.current, metrics)
        self.current = None

    def train_and_evaluate(
        self, trial: optuna.Trial, overrides: dict[str, Any]
    ) -> dict[str, float]:
        """The train and evaluate stages' work for one trial, without dvc; the trial's
        metric is reported every epoch, and its pruner may stop it."""
        from visiontune.evaluation.evaluate import evaluate
        from visiontune.models.checkpoint import save_checkpoint
        from visiontune.training.fit import fit

        params = with_overrides(self.params, overrides)
        prepared = self.repo / PREPARED
        link = TrialLink(trial, self.metric, self.pruner["name"])
        fitted = fit(params, prepared, on_epoch=link.after_epoch)
        with tempfile.TemporaryDirectory() as tmp:
            model_path = Path(tmp) / "model.pt"
            save_checkpoint(model_path, fitted.model, fitted.meta)
            tested = evaluate(params, model_path, prepared, Path(tmp) / "m.json", Path(tmp))
        nested = {**fitted.summary(), **tested}
        return {k: v for k, v in flatten(nested) if isinstance(v, (int, float))}

    def stop(self, study: optuna.Study) -> None:
        """Ctrl-C: the trial in hand is recorded as interrupted."""
        if self.current is not None:
            self.interrupted(study, [self.current])
