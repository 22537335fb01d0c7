"""Optuna storage and the study: opened (or created) with explicitly configured samplers."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.params import OBJECTIVES, Params, with_overrides
from visiontune.config.paths import engine_url
from visiontune.config.tune_settings import TuneSettings
from visiontune.tuning import optuna_internals as internals
from visiontune.tuning.options import TuneOptions
from visiontune.tuning.trial_link import build_pruner

if TYPE_CHECKING:
    import optuna


def open_storage(url: str, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url``, heartbeats every ``heartbeat`` s; one-line errors."""
    import optuna
    import sqlalchemy.exc

    _quiet_optuna()
    internals.check()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    database = engine_url(url)
    error: Exception | None = None
    for _ in range(3):
        try:
            return optuna.storages.RDBStorage(
                database,
                heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat if heartbeat else None,
                engine_kwargs={"pool_pre_ping": True},
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Workers opening an empty database at once race to create Optuna's tables:
            # the losers find them there when they try again.
            error = exc
            time.sleep(1)
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as exc:
            error = exc
            break
    raise VisiontuneError(f"cannot open Optuna storage {url}: {reason(error)}") from None


def open_study(
    params: Params, options: TuneOptions, storage: optuna.storages.BaseStorage | None = None
) -> optuna.Study:
    """Load or create the study in ``storage`` (else ``options.storage``), with an explicitly
    configured sampler and ``tune.pruner``; its metric is named ``tune.metric``."""
    import optuna

    if storage is None:
        storage = open_storage(options.storage, options.settings.heartbeat)
    try:
        previous = len(optuna.load_study(study_name=options.study, storage=storage).trials)
    except KeyError:
        previous = 0
    metric = options.settings.metric
    direction = OBJECTIVES[metric]
    try:
        study = optuna.create_study(
            study_name=options.study,
            storage=storage,
            sampler=_sampler(options, previous),
            pruner=build_pruner(trial_pruner(params, options)),
            direction=direction,
            load_if_exists=True,
        )
    except ValueError as exc:
        raise VisiontuneError(f"study {options.study}: {exc}") from None
    if study.direction.name.lower() != direction:
        raise VisiontuneError(
            f"study {options.study} was created to {study.direction.name.lower()} but "
            f"tune.metric={metric} needs {direction}; use another --study"
        )
    study.set_user_attr("metric", metric)
    study.set_metric_names([metric])  # optuna-dashboard's axis: val.acc, not Objective
    return study


def _quiet_optuna() -> None:
    """Optuna's own info lines and warnings that do not concern users of the tuner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats are ours to record: trials run outside Study.optimize, as experiments.
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def trial_pruner(params: Params, options: TuneOptions) -> dict[str, Any]:
    """The pruner spec of the study's trials: ``tune.pruner`` for the params every trial
    shares (``--set`` included: hyperband's budget follows a fixed ``train.epochs``)."""
    return pruner_spec(with_overrides(params, options.fixed), options.settings)


# Each pruner's options, as Optuna's constructors name them (tune.pruning.<option>).
_OPTIONS = {
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "percentile": (
        "percentile",
        "n_startup_trials",
        "n_warmup_steps",
        "interval_steps",
        "n_min_trials",
    ),
    "successive_halving": (
        "min_resource",
        "reduction_factor",
        "min_early_stopping_rate",
        "bootstrap_count",
    ),
    "hyperband": ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
}


def pruner_spec(params: Params, settings: TuneSettings) -> dict[str, Any]:
    """``tune.pruner`` and the options it takes, every one explicit: ``{"name": ..., ...}``.

    Hyperband's ``max_resource`` 0 means a full trial's epochs: ``train.epochs``, or the
    largest value ``tune.space`` may give it.
    """
    name = settings.pruner
    options = {key: getattr(settings.pruning, key) for key in _OPTIONS[name]}
    if options.get("max_resource") == 0:
        options["max_resource"] = _full_budget(params, settings)
    return {"name": name, **options}


def _full_budget(params: Params, settings: TuneSettings) -> int:
    for param in settings.space:
        if param.key == "train.epochs":
            return int(max(param.choices) if param.type == "categorical" else param.high)
    return params.train.epochs


def trial_url(url: str) -> str:
    """The storage ``url`` as the trials' train stages open it, from other folders: a
    relative SQLite path made absolute, the PostgreSQL driver named."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser().resolve()
        return f"sqlite:///{path}"
    return engine_url(url)


def shared(url: str) -> bool:
    """A database server, which several workers on several machines may share; not SQLite."""
    return not url.startswith("sqlite:")


def _sampler(options: TuneOptions, previous: int) -> optuna.samplers.BaseSampler:
    """TPE (or random) with every option set: defaults change between Optuna versions.

    A resumed study must not replay its first draws. In a database server, workers that
    start together would also draw the same points: there each worker seeds from fresh
    entropy (timing decides which worker gets which trial, so no seed reproduces it).
    """
    import optuna

    settings = options.settings
    seed = None if shared(options.storage) else settings.seed + previous
    if options.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=settings.multivariate,
        n_startup_trials=settings.n_startup_trials,
        constant_liar=options.jobs > 1 or shared(options.storage),
        n_ei_candidates=24,
    )
