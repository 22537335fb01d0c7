"""``visiontune tune``: run (or resume) the study until ``--trials`` trials count."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import TUNABLE_SECTIONS, Params
from visiontune.experiments.listing import experiment_names
from visiontune.tuning.gpu_slots import cut_slots
from visiontune.tuning.options import TuneOptions
from visiontune.tuning.runners import InProcessRunner, QueueRunner, TempRunner
from visiontune.tuning.study import open_storage, open_study
from visiontune.tuning.summary import write_summary

if TYPE_CHECKING:
    import optuna


def tune(params: Params, options: TuneOptions, repo: Path) -> optuna.Study:
    """Run (or resume) the study until ``options.trials`` trials count; return the study."""
    if options.trials < 1 or options.jobs < 1:
        raise VisiontuneError("--trials and --jobs must be >= 1")
    if options.gpus_per_trial and options.in_process:
        raise VisiontuneError("--gpus-per-trial hands GPUs to dvc experiments, not --in-process")
    slots = cut_slots(options.jobs, options.gpus_per_trial)  # before any trial starts
    settings = options.settings
    if not settings.space:
        raise VisiontuneError("tune.space is empty: nothing to tune")
    for key in options.fixed:
        if key.partition(".")[0] not in TUNABLE_SECTIONS:
            raise VisiontuneError(
                f"--set {key}: --set fixes a param of every trial (data.*, model.*, train.*); "
                "the tuner's own (tune.*) are in pyproject.toml"
            )
    storage = open_storage(options.storage, settings.heartbeat)
    study = open_study(params, options, storage)
    if not options.in_process:
        _check_names_free(study, repo)
    if options.in_process:
        kind: type[TempRunner | InProcessRunner] = InProcessRunner
    else:
        kind = QueueRunner if options.jobs > 1 else TempRunner
    runner = kind(params, options, repo, storage, study, slots)
    with runner.liveness.beating(settings.heartbeat):
        try:
            runner.run(study)
        except KeyboardInterrupt:
            runner.stop(study)
            raise
    write_summary(study, settings.metric, repo, applicable=not options.in_process)
    return study


def _check_names_free(study: optuna.Study, repo: Path) -> None:
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
