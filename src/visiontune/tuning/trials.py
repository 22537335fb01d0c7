"""What every runner does with trials: ask for one, complete it, fail it, settle the trials
of tuners that died. :meth:`Runner.complete` is the one way a trial gets its value."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import Params, with_overrides
from visiontune.config.trial_devices import FOLDER_ENV
from visiontune.experiments.listing import experiment_metrics, is_pruned
from visiontune.tuning import accounting
from visiontune.tuning import optuna_internals as internals
from visiontune.tuning.accounting import LOG, REASON, SURPLUS, TAIL, WORKER
from visiontune.tuning.dvc_queue import QUEUED, RUNNING, DvcQueue
from visiontune.tuning.gpu_slots import GpuSlots
from visiontune.tuning.liveness import Liveness
from visiontune.tuning.options import POLL_SECONDS, TRIAL_DEVICES, TRIAL_LOGS, TuneOptions
from visiontune.tuning.outcome import Outcome, RunResult
from visiontune.tuning.run_cache import forget_pruned
from visiontune.tuning.space import suggest
from visiontune.tuning.study import trial_pruner, trial_url
from visiontune.tuning.summary import say, short
from visiontune.tuning.trial_link import EXPERIMENT_ATTR, PRUNER_ATTR, STORAGE_ENV

if TYPE_CHECKING:
    import optuna

# Metrics every settled trial records as user attributes (the study optimises one of them).
RECORDED = ("val.acc", "val.loss", "test.acc", "test.loss")
SHOWN_REASON = 160  # characters of a failure's reason in its progress line (all in the study)


class Runner:
    """Asks, completes and fails trials of one study for one tuner; subclasses run them,
    each with a slot of ``slots`` GPUs (``--gpus-per-trial``) while it runs."""

    def __init__(
        self,
        params: Params,
        options: TuneOptions,
        repo: Path,
        storage: optuna.storages.RDBStorage,
        study: optuna.Study,
        slots: Sequence[str] = (),
    ):
        self.params = params
        self.options = options
        self.repo = repo
        self.metric = options.settings.metric
        # train.threads 0 (every core): each trial's process gets its share of the cores
        # (--jobs trials of train.nproc processes each), recorded in its params.
        nproc = with_overrides(params, options.fixed).train.nproc
        threads = max(1, (os.cpu_count() or 1) // (options.jobs * nproc))
        auto = {"train.threads": threads} if params.train.threads == 0 else {}
        self.fixed = {**auto, **options.fixed}
        self.pruner = trial_pruner(params, options)  # as the study's own (in-process)
        # The train stage of each trial's experiment finds its trial from this (and from
        # the experiment's name), to report every epoch and ask whether to prune.
        self.env = {**os.environ, STORAGE_ENV: trial_url(options.storage)}
        self.gpus = GpuSlots(slots, repo.resolve() / TRIAL_DEVICES)
        if slots:  # each stage of a trial takes its slot from there
            self.env[FOLDER_ENV] = str(self.gpus.folder)
        self.liveness = Liveness(storage, study)
        self.worker = accounting.worker(repo)
        self.waiting = False

    def name(self, trial: optuna.Trial) -> str:
        return accounting.experiment_name(self.options.study, trial.number)

    def hand_out_gpus(self, name: str) -> str:
        """Hand the trial's experiment ``name`` its GPUs, if any, before it can start; the
        words its progress line says them in."""
        gpus = self.gpus.hand_out(name)
        return f"  GPUs {gpus}" if gpus else ""

    def ask(self, study: optuna.Study) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """A new trial and its params; a surplus trial or a refused combination fails at once."""
        trial = study.ask()
        self.liveness.start(trial.number)  # from now on, staleness is watched
        trial.set_user_attr(WORKER, self.worker)
        trial.set_user_attr(EXPERIMENT_ATTR, self.name(trial))
        trial.set_user_attr(PRUNER_ATTR, self.pruner)
        if accounting.surplus(study, trial.number, self.options.trials):
            self.fail(study, trial, SURPLUS)
            return None
        values = {**self.fixed, **suggest(trial, self.options.settings.space)}
        try:
            with_overrides(self.params, values)
        except VisiontuneError as exc:  # e.g. a sampled combination the schema refuses
            self.fail(study, trial, str(exc))
            return None
        return trial, values

    def complete(self, study: optuna.Study, trial: optuna.Trial, metrics: dict[str, float]) -> bool:
        """Tell the study ``trial``'s value from its experiment's metrics, recording
        :data:`RECORDED` as user attributes; a trial without a finite value fails instead,
        and a pruned one is told PRUNED (its value: the last epoch it reported).
        Returns whether it completed."""
        from optuna.trial import TrialState

        value = self.value(metrics)
        if value is None:
            self.fail(study, trial, f"the experiment wrote no finite {self.metric}")
            return False
        for key in RECORDED:
            if key in metrics:
                trial.set_user_attr(key, metrics[key])
        name = self.name(trial)
        if is_pruned(metrics):
            study.tell(trial, state=TrialState.PRUNED)
            if not self.options.in_process:
                forget_pruned(self.repo, name)
            verdict = f"pruned after epoch {metrics.get('pruned.epoch', '?')}, {self.metric}"
        else:
            study.tell(trial, value)
            verdict = self.metric
        self.liveness.stop(trial.number)
        say(f"{name}: {verdict} {value:.4f}  {short(trial.params)}")
        return True

    def settle(self, study: optuna.Study, trial: optuna.Trial, result: RunResult) -> None:
        """Complete a trial whose experiment exists, with its metrics; fail any other. Its
        GPUs are free again."""
        self.gpus.take_back(self.name(trial))
        if result.outcome == Outcome.DONE:
            self.complete(study, trial, result.metrics or {})
        else:
            self.fail(study, trial, result.reason, log=result.log, tail=result.tail)

    def fail(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        reason: str,
        *,
        log: str = "",
        tail: tuple[str, ...] = (),
    ) -> None:
        """Record ``trial`` as FAIL with its one-line reason, and the log its runner kept
        (:meth:`keep_log`) and a crash's last lines, if any; it counts toward --trials
        unless ``reason`` says it was stopped from outside
        (:data:`~visiontune.tuning.accounting.NOT_COUNTED`)."""
        from optuna.trial import TrialState

        trial.set_user_attr(REASON, reason)
        if log:
            trial.set_user_attr(LOG, log)
        if tail:
            trial.set_user_attr(TAIL, list(tail))
        study.tell(trial, state=TrialState.FAIL)
        self.liveness.stop(trial.number)
        note = ", not counted" if reason in accounting.NOT_COUNTED else ""
        if len(reason) > SHOWN_REASON:
            reason = reason[: SHOWN_REASON - 3] + "..."
        say(f"{self.name(trial)}: FAIL ({reason}{note})" + (f"  log: {log}" if log else ""))

    def with_log(self, name: str, result: RunResult, output: str) -> RunResult:
        """``result`` of a failed attempt, with its ``output`` kept (:meth:`keep_log`)."""
        if result.outcome == Outcome.DONE or not output.strip():
            return result
        return dataclasses.replace(result, log=self.keep_log(name, output))

    def keep_log(self, name: str, output: str) -> str:
        """Save a trial's ``dvc exp run`` output where it stays (:data:`TRIAL_LOGS`, the
        last attempt's); return its path relative to the repository, as users type it."""
        path = TRIAL_LOGS / f"{name}.log"
        (self.repo / TRIAL_LOGS).mkdir(parents=True, exist_ok=True)
        (self.repo / path).write_text(output)
        return path.as_posix()

    def interrupted(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        """Record trials stopped by Ctrl-C as FAIL that does not count toward --trials."""
        for trial in trials:
            self.gpus.take_back(self.name(trial))
            self.fail(study, trial, accounting.INTERRUPTED)
        say(f"stopped: {len(trials)} running trial(s) recorded as interrupted")

    def remaining(self, study: optuna.Study, in_flight: int) -> int:
        return accounting.remaining(study, self.options.trials, in_flight)

    def reached(self, study: optuna.Study) -> bool:
        return accounting.reached(study, self.options.trials)

    def wait(self) -> None:
        """Nothing to start, but other workers' trials run: they may yet fail or go stale."""
        if not self.waiting:
            say("waiting for the trials other workers run")
            self.waiting = True
        time.sleep(POLL_SECONDS)

    def settle_stale(self, study: optuna.Study) -> None:
        """Trials whose tuner died: complete any that finished as experiments here, fail the
        rest (not counted).

        A dead worker's trial from another clone has no experiment here: it is failed, and
        the orphaned ``dvc exp run`` of that worker, if its machine still runs it, no longer
        matters. Another tuner may settle a trial first: Optuna then refuses the update.
        """
        import optuna
        from optuna.trial import TrialState

        stale = self.liveness.stale()
        queue = DvcQueue(self.repo) if stale else None
        for number in stale:
            trial = internals.trial_handle(study, self.liveness.trial_id(number))
            name = self.name(trial)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                metrics = experiment_metrics(self.repo, name)
                if metrics is not None and self.value(metrics) is not None:
                    say(f"{name}: recovered from its finished experiment")
                    self.complete(study, trial, metrics)
                    continue
                for task in queue.tasks():  # the dead tuner's experiment: stop it
                    if task.name == name and task.status in (QUEUED, RUNNING):
                        queue.kill(task.task)
                        queue.remove(task.task)
                study.tell(trial, state=TrialState.FAIL)  # no reason: it did not fail by itself
                say(f"{name}: its tuner stopped; recorded as FAIL (not counted)")

    def value(self, metrics: dict[str, float]) -> float | None:
        """The study's value in an experiment's metrics: its finite ``tune.metric``."""
        value = metrics.get(self.metric)
        return value if value is not None and math.isfinite(value) else None
