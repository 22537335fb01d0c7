"""A trial's link to its Optuna study: report the metric every epoch, ask whether to prune.

``visiontune tune`` sets :data:`STORAGE_ENV` (the storage URL) in the environment of the
dvc experiments it runs, and dvc names each experiment ``<study>-<number>``
(``DVC_EXP_NAME``). Neither is in params.yaml, so neither enters dvc.lock. The train stage
finds its trial from them (:func:`link_from_environment`); a stage run by hand, by
``dvc repro`` or by a plain ``dvc exp run`` finds none and trains as always.

The tuner records on each trial which experiment runs it and which pruner judges it
(:data:`EXPERIMENT_ATTR`, :data:`PRUNER_ATTR`), so the stage prunes exactly as the tuner
asked, whatever params.yaml says by the time the experiment runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visiontune.config.errors import reason
from visiontune.config.trial_devices import EXPERIMENT_ENV
from visiontune.tuning import optuna_internals as internals

if TYPE_CHECKING:
    import optuna

    from visiontune.training.fit import EpochResult

STORAGE_ENV = "VISIONTUNE_TRIAL_STORAGE"
EXPERIMENT_ATTR = "experiment"  # trial user attr: the dvc experiment that runs the trial
PRUNER_ATTR = "pruner"  # trial user attr: the pruner spec (tuning.study.pruner_spec)


def build_pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Optuna's own pruner for a spec recorded on a trial (``{"name": ..., options}``)."""
    import optuna

    options = {key: value for key, value in spec.items() if key != "name"}
    kinds = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    return kinds[spec["name"]](**options)


def metric_key(metric: str) -> str:
    """A study's metric (``val.acc``) as the train stage logs it per epoch (``val/acc``)."""
    return metric.replace(".", "/")


@dataclass
class TrialLink:
    """Reports one trial's metric each epoch and says when its pruner stops it."""

    trial: optuna.Trial
    metric: str  # the study's metric, e.g. val.acc
    pruner: str  # the pruner's name, for the reason a trial was pruned
    broken: bool = False  # the storage failed once: train on, report no more

    def report(self, epoch: int, metrics: dict[str, float]) -> str | None:
        """Report epoch ``epoch``'s metric; the reason to stop training now, or None.

        A storage that fails (unreachable, the trial settled by another tuner) ends the
        reporting with one line; training goes on, and the tuner settles the trial from
        the experiment's metrics.
        """
        import optuna
        import sqlalchemy.exc

        if self.broken:
            return None
        value = metrics[metric_key(self.metric)]
        try:
            self.trial.report(value, epoch)
            if not self.trial.should_prune():
                return None
        except (optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError) as exc:
            self.broken = True
            print(f"trial {self.trial.number}: no longer reporting to its study ({reason(exc)})")
            return None
        return f"{self.pruner} pruner: {self.metric} {value:.4f} at epoch {epoch}"

    def after_epoch(self, result: EpochResult) -> str | None:
        """:meth:`report` an epoch of training (a :func:`~visiontune.training.fit.fit`
        callback)."""
        return self.report(result.epoch, result.metrics())


def link_from_environment() -> TrialLink | None:
    """The link of a train stage that a tuner's dvc experiment runs, or None."""
    url, experiment = os.environ.get(STORAGE_ENV), os.environ.get(EXPERIMENT_ENV)
    if not url or not experiment:
        return None
    study_name, _, number = experiment.rpartition("-")
    if not study_name or not number.isdigit():
        return None
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(url)
        study_id = internals.study_id(storage, study_name)
        trial_id = internals.trial_id(storage, study_id, int(number))
        frozen = internals.frozen_trial(storage, trial_id)
    except KeyError:
        return None  # not a trial of this storage: an experiment like any other
    except (optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        print(f"{experiment}: cannot reach its study, training without it ({reason(exc)})")
        return None
    spec = frozen.user_attrs.get(PRUNER_ATTR)
    running = frozen.state == optuna.trial.TrialState.RUNNING
    if frozen.user_attrs.get(EXPERIMENT_ATTR) != experiment or not running or spec is None:
        return None
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=build_pruner(spec))
    metric = study.metric_names[0] if study.metric_names else study.user_attrs["metric"]
    print(f"trial {number} of study {study_name}: reporting {metric} each epoch")
    return TrialLink(internals.trial_handle(study, trial_id), metric, spec["name"])
