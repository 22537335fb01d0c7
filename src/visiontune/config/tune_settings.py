"""The tuner's own settings: the study, its search space and its pruner.

They live in pyproject.toml's ``[tool.visiontune.tune]`` table, versioned with the code
like every other tool's settings there, and not in params.yaml: no stage reads them, so
they change no result, and `dvc exp show` (which lists every key of params.yaml) shows
none of them. ``visiontune tune --set tune.<key>=<value>`` overrides any of them for one
run. Errors name keys as users type them (``tune.pruning.n_warmup_steps``); the defaults
are the values pyproject.toml ships (tests/test_tune_settings.py keeps them equal).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visiontune.config.params import (
    OBJECTIVES,
    ParamsError,
    build,
    check_candidates,
    check_list,
    check_value,
    spec,
)

SETTINGS_FILE = Path("pyproject.toml")
TABLE = ("tool", "visiontune", "tune")  # [tool.visiontune.tune]


@dataclass(frozen=True)
class SpaceParam:
    """One dimension of the search space (``tune.space."<key>"``)."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()


def parse_space(raw: Any) -> tuple[SpaceParam, ...]:
    """``tune.space``: a mapping of params keys (``model.lr``) to their ranges."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ParamsError(f"tune.space must be a mapping of params keys to ranges, got {raw!r}")
    return tuple(_parse_dimension(key, spec) for key, spec in raw.items())


def _parse_dimension(key: str, given: Any) -> SpaceParam:
    where = f"tune.space.{key}"
    if not isinstance(given, dict):
        raise ParamsError(f"{where} must be a mapping with a type, got {given!r}")
    kind = given.get("type")
    allowed = {"categorical": {"type", "choices"}}.get(kind, {"type", "low", "high", "log"})
    if kind not in ("float", "int", "categorical"):
        raise ParamsError(f"{where}.type must be one of float, int, categorical, got {kind!r}")
    unknown = set(given) - allowed
    if unknown:
        raise ParamsError(f"{where}.{sorted(unknown)[0]} is not a known key for type {kind}")
    if kind == "categorical":
        param = SpaceParam(key, kind, choices=check_list(f"{where}.choices", given.get("choices")))
        check_candidates(where, key, param.choices)
        return param
    number = float if kind == "float" else int
    low, high = (
        check_value(f"{where}.{bound}", given.get(bound), number, {}) for bound in ("low", "high")
    )
    log = check_value(f"{where}.log", given.get("log", False), bool, {})
    if low >= high:
        raise ParamsError(f"{where}.low must be < {where}.high, got {low!r} and {high!r}")
    if log and low <= 0:
        raise ParamsError(f"{where}.low must be > 0 with log: true, got {low!r}")
    check_candidates(where, key, (low, high))
    return SpaceParam(key, kind, low=low, high=high, log=log)


# The search space pyproject.toml ships.
SPACE = (
    SpaceParam("model.lr", "float", low=0.001, high=0.1, log=True),
    SpaceParam("model.width", "categorical", choices=(8, 16, 32)),
    SpaceParam("model.dropout", "float", low=0.0, high=0.5),
    SpaceParam("train.weight_decay", "float", low=1.0e-5, high=0.01, log=True),
    SpaceParam("train.batch_size", "categorical", choices=(32, 64, 128)),
    SpaceParam("model.name", "categorical", choices=("cnn", "resnet18")),
)

PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband")


@dataclass(frozen=True)
class PruningSettings:
    """Options of Optuna's pruners, as Optuna names them; each pruner reads its own."""

    n_startup_trials: int = spec(5, ge=0, doc="median, percentile: trials before any prunes")
    n_warmup_steps: int = spec(3, ge=0, doc="median, percentile: epochs never pruned")
    interval_steps: int = spec(1, ge=1, doc="median, percentile: epochs between checks")
    n_min_trials: int = spec(1, ge=1, doc="median, percentile: trials reporting an epoch")
    percentile: float = spec(25.0, gt=0, lt=100, doc="percentile: keep trials above it")
    min_resource: int = spec(1, ge=1, doc="successive_halving, hyperband: first rung's epochs")
    max_resource: int = spec(0, ge=0, doc="hyperband: a full trial's epochs; 0 = train.epochs")
    reduction_factor: int = spec(3, ge=2, doc="successive_halving, hyperband: rung ratio")
    min_early_stopping_rate: int = spec(0, ge=0, doc="successive_halving")
    bootstrap_count: int = spec(0, ge=0, doc="successive_halving, hyperband")


@dataclass(frozen=True)
class TuneSettings:
    """The Optuna study that ``visiontune tune`` runs as dvc experiments."""

    study: str = spec("visiontune", doc="study name; trials are named <study>-<number>")
    trials: int = spec(12, ge=1, le=100_000, doc="trials the study should count (--trials)")
    metric: str = spec("val.acc", choices=tuple(OBJECTIVES), doc="validation metric to optimise")
    seed: int = spec(0, ge=0, doc="TPE sampler seed")
    n_startup_trials: int = spec(5, ge=0, doc="random trials before TPE takes over")
    multivariate: bool = spec(True, doc="TPE models the params jointly")
    trial_timeout: int = spec(900, ge=1, doc="seconds before a trial is stopped and failed")
    heartbeat: int = spec(10, ge=1, le=3600, doc="seconds between liveness marks of a trial")
    space: tuple = spec(SPACE, parse=parse_space, doc="key: {type, low, high, log, choices}")
    pruner: str = spec("median", choices=PRUNERS, doc="stops trials whose metric lags")
    pruning: PruningSettings = field(default_factory=PruningSettings)


def parse_settings(raw: Any) -> TuneSettings:
    """Validate a ``tune`` mapping into :class:`TuneSettings`."""
    settings = build(TuneSettings, raw, "tune.")
    if not settings.study.replace("-", "").replace("_", "").isalnum():
        raise ParamsError(
            f"tune.study must use letters, digits, - and _ only, got {settings.study!r}"
        )
    return settings


def load_settings(root: Path, overrides: dict[str, Any] | None = None) -> TuneSettings:
    """The settings in ``root``'s pyproject.toml (the shipped ones where it has none), with
    ``overrides`` (``{"tune.pruner": "none"}``, as ``--set`` gives them) applied."""
    raw = read_table(root / SETTINGS_FILE)
    for key, value in (overrides or {}).items():
        _override(raw, key, value)
    return parse_settings(raw)


def read_table(path: Path) -> dict[str, Any]:
    """The ``[tool.visiontune.tune]`` table of ``path`` ({} where there is none)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        table: Any = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ParamsError(f"{path} is not valid TOML: {exc}") from None
    for name in TABLE:
        table = table.get(name, {}) if isinstance(table, dict) else {}
    return dict(table)


def _override(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tune.<name>`` (or ``tune.space.<params key>``, ``tune.pruning.<option>``) in
    ``raw``; a space dimension set to null leaves the space."""
    section, _, rest = key.partition(".")
    name, _, inner = rest.partition(".")
    if section != "tune" or not name:
        raise ParamsError(f"{key} is not a tune setting; expected e.g. tune.pruner")
    if not inner:
        raw[name] = value
    elif name in ("space", "pruning"):
        table = dict(raw.get(name) or {})
        if value is None and name == "space":
            table.pop(inner, None)
        else:
            table[inner] = value
        raw[name] = table
    else:
        raise ParamsError(f"{key} is not a tune setting; tune.{name} has no keys inside")


def to_raw(settings: TuneSettings) -> dict[str, Any]:
    """``settings`` as plain data, the shape of the pyproject.toml table."""
    raw = asdict(settings)
    raw["space"] = {param.key: _space_raw(param) for param in settings.space}
    return raw


def _space_raw(param: SpaceParam) -> dict[str, Any]:
    if param.type == "categorical":
        return {"type": param.type, "choices": list(param.choices)}
    return {"type": param.type, "low": param.low, "high": param.high, "log": param.log}
