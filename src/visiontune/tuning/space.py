"""``tune.space`` to Optuna ``suggest_*`` calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visiontune.config.tune_settings import SpaceParam

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.Trial, space: tuple[SpaceParam, ...]) -> dict[str, Any]:
    """Ask the trial for a value of every dimension of ``tune.space``."""
    values: dict[str, Any] = {}
    for param in space:
        if param.type == "categorical":
            values[param.key] = trial.suggest_categorical(param.key, list(param.choices))
        elif param.type == "int":
            values[param.key] = trial.suggest_int(param.key, param.low, param.high, log=param.log)
        else:
            values[param.key] = trial.suggest_float(param.key, param.low, param.high, log=param.log)
    return values
