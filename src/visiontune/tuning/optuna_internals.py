"""Every Optuna name visiontune calls that is not Optuna's public API, in one place.

Trials that run as dvc experiments live outside ``Study.optimize``: the tuner marks them
alive, finds those whose tuner died, and a trial's train stage reports to a trial another
process asked for. Optuna's storage methods and its ``Trial`` constructor do that, but they
are meant for storage implementers and Optuna itself, and an upgrade may change them.
:data:`USED` lists them; :func:`check` fails in one line when this Optuna lacks one (the
tuner checks when it opens its storage), and tests/test_optuna_internals.py exercises each
on a real storage. Everything else in visiontune uses Optuna's public API.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from visiontune.config.errors import VisiontuneError

if TYPE_CHECKING:
    import optuna

# RDBStorage methods called below (the storage API, or private: _get_stale_trial_ids).
STORAGE_METHODS = (
    "get_study_id_from_name",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
)
TRIAL_CONSTRUCTOR = ("study", "trial_id")  # optuna.trial.Trial(study, trial_id)
USED = (
    *(f"RDBStorage.{name}" for name in STORAGE_METHODS),
    f"Trial({', '.join(TRIAL_CONSTRUCTOR)})",
)


def missing() -> list[str]:
    """The names of :data:`USED` that the installed Optuna lacks."""
    import optuna

    lacking = [
        f"RDBStorage.{name}"
        for name in STORAGE_METHODS
        if not callable(getattr(optuna.storages.RDBStorage, name, None))
    ]
    parameters = list(inspect.signature(optuna.trial.Trial.__init__).parameters)[1:]
    if tuple(parameters) != TRIAL_CONSTRUCTOR:
        lacking.append(USED[-1])
    return lacking


def check() -> None:
    """VisiontuneError, one line, if the installed Optuna lacks a name of :data:`USED`."""
    import optuna

    if lacking := missing():
        raise VisiontuneError(
            f"Optuna {optuna.__version__} no longer has {', '.join(lacking)}, which visiontune's "
            "tuner calls (src/visiontune/tuning/optuna_internals.py); install an earlier Optuna"
        )


def study_id(storage: optuna.storages.RDBStorage, name: str) -> int:
    """The storage's id of the study ``name``; KeyError if there is none."""
    return storage.get_study_id_from_name(name)


def trial_id(storage: optuna.storages.RDBStorage, study: int, number: int) -> int:
    """The storage's id of trial ``number`` of study id ``study``; KeyError if none."""
    return storage.get_trial_id_from_study_id_trial_number(study, number)


def frozen_trial(storage: optuna.storages.RDBStorage, trial: int) -> optuna.trial.FrozenTrial:
    """The trial of storage id ``trial``, as it is now."""
    return storage.get_trial(trial)


def record_heartbeat(storage: optuna.storages.RDBStorage, trial: int) -> None:
    """Mark the trial of storage id ``trial`` alive now."""
    storage.record_heartbeat(trial)


def stale_trial_ids(storage: optuna.storages.RDBStorage, study: int) -> list[int]:
    """Storage ids of study ``study``'s RUNNING trials whose heartbeat stopped for longer
    than the storage's grace period (Optuna has no public method for it)."""
    return storage._get_stale_trial_ids(study)


def trial_handle(study: optuna.Study, trial: int) -> optuna.Trial:
    """A ``Trial`` of ``study`` for the storage id ``trial``, asked before or elsewhere, to
    report to, ask about pruning, or tell."""
    import optuna

    return optuna.Trial(study, trial)
