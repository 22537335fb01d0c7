"""Pruning: Optuna's pruners stop lagging trials, which stay dvc experiments marked pruned."""

from __future__ import annotations

import json
import sys

import optuna
import pytest
from helpers.dvc_repo import SPACE
from helpers.studies import in_process_study
from optuna.trial import TrialState

from visiontune.config.params import Params, ParamsError, parse_params
from visiontune.config.tune_settings import parse_settings
from visiontune.training.fit import fit
from visiontune.tuning.options import TuneOptions
from visiontune.tuning.study import open_study, pruner_spec
from visiontune.tuning.trial_link import (
    EXPERIMENT_ATTR,
    EXPERIMENT_ENV,
    PRUNER_ATTR,
    STORAGE_ENV,
    build_pruner,
    link_from_environment,
)

# Keep only the best trial at each epoch once one trial finished: trials after it that lag
# it at any epoch before the last are pruned.
HARSH = {"pruner": "percentile", "pruning": {"percentile": 1.0, "n_startup_trials": 1}}
HARSH["pruning"]["n_warmup_steps"] = 0


@pytest.mark.parametrize(
    ("name", "kind", "options"),
    [
        ("none", optuna.pruners.NopPruner, []),
        ("median", optuna.pruners.MedianPruner, ["n_startup_trials", "n_warmup_steps"]),
        ("percentile", optuna.pruners.PercentilePruner, ["percentile", "n_min_trials"]),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner, ["min_resource"]),
        ("hyperband", optuna.pruners.HyperbandPruner, ["max_resource", "reduction_factor"]),
    ],
)
def test_each_pruner_is_optunas_own_with_its_options_explicit(name, kind, options):
    spec = pruner_spec(Params(), parse_settings({"pruner": name}))
    assert spec["name"] == name and set(options) <= set(spec)
    assert isinstance(build_pruner(spec), kind)
    json.dumps(spec)  # a trial's user attribute


def test_hyperband_budget_is_a_full_trial():
    hyperband = parse_settings({"pruner": "hyperband"})
    assert pruner_spec(parse_params({"train": {"epochs": 7}}), hyperband)["max_resource"] == 7
    space = {"train.epochs": {"type": "int", "low": 2, "high": 30}}
    settings = parse_settings({"pruner": "hyperband", "space": space})
    assert pruner_spec(Params(), settings)["max_resource"] == 30
    given = {"pruner": "hyperband", "pruning": {"max_resource": 9}}
    assert pruner_spec(Params(), parse_settings(given))["max_resource"] == 9


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"pruner": "asha"}, "tune.pruner must be one of none, median, percentile, "),
        ({"pruning": {"percentile": 0}}, "tune.pruning.percentile must be > 0, got 0"),
        ({"pruning": {"reduction_factor": 1}}, "tune.pruning.reduction_factor must be >= 2"),
        ({"pruning": {"warmup": 2}}, "tune.pruning.warmup is not a known key"),
        ({"pruning": 3}, "tune.pruning must be a mapping"),
    ],
)
def test_bad_pruner_params_name_the_key(tune, message):
    with pytest.raises(ParamsError, match=message.replace(".", r"\.")):
        parse_settings(tune)


def test_a_stage_finds_its_trial_only_when_a_tuner_runs_it(tmp_path, monkeypatch):
    """No storage in the environment, a name that is no trial, a settled trial, a trial
    another experiment runs: no link, the stage trains as always."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    params, settings = Params(), parse_settings({"space": SPACE})
    study = open_study(params, TuneOptions(trials=1, storage=storage, study="s", settings=settings))
    trial = study.ask()
    trial.set_user_attr(PRUNER_ATTR, pruner_spec(params, settings))
    trial.set_user_attr(EXPERIMENT_ATTR, "s-0")
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.setenv(EXPERIMENT_ENV, "s-0")
    assert link_from_environment() is None  # dvc repro, or a plain dvc exp run
    monkeypatch.setenv(STORAGE_ENV, storage)
    for name in ("s-1", "other-0", "s-x", "nodash"):
        monkeypatch.setenv(EXPERIMENT_ENV, name)
        assert link_from_environment() is None
    monkeypatch.setenv(EXPERIMENT_ENV, "s-0")
    link = link_from_environment()
    assert link is not None and link.trial.number == 0 and link.metric == "val.acc"
    assert link.report(1, {"val/acc": 0.5}) is None  # median: never before 5 trials finish
    assert study.trials[0].intermediate_values == {1: 0.5}
    study.tell(trial, 0.5)
    assert link_from_environment() is None  # settled: not a running trial any more
    assert link.report(2, {"val/acc": 0.6}) is None  # told once, then training goes on
    assert link.broken


def test_in_process_trials_report_every_epoch_and_lagging_ones_are_pruned(prepared, tmp_path):
    study = in_process_study(prepared, tmp_path, trials=4, epochs=3, **HARSH)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and states[0] == TrialState.COMPLETE  # pruned trials count
    assert TrialState.PRUNED in states, states
    assert study.metric_names == ["val.acc"]
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))  # a learning curve from epoch 1
        assert len(steps) == 3 if trial.state == TrialState.COMPLETE else len(steps) < 3
        assert trial.value == trial.intermediate_values[steps[-1]]
    summary = json.loads((tmp_path / "metrics" / "tune.json").read_text())["tune"]
    assert summary["trials"]["pruned"] == states.count(TrialState.PRUNED)


def test_a_pruned_fit_says_where_and_why_and_keeps_its_best_epoch_with_patience(prepared):
    params = parse_params(
        {"model": {"width": 8}, "train": {"epochs": 4, "threads": 1, "patience": 3}}
    )
    fitted = fit(params, prepared, on_epoch=lambda r: "lagging" if r.epoch == 3 else None)
    assert len(fitted.history) == 3
    assert fitted.summary()["pruned"] == {"epoch": 3, "reason": "lagging"}
    assert fitted.kept.val.acc == max(r.val.acc for r in fitted.history)  # patience's pick
    last = fit(params, prepared, on_epoch=lambda r: "lagging" if r.epoch == 4 else None)
    assert last.pruned is None and len(last.history) == 4  # the budget was trained anyway


# --- real dvc experiments --------------------------------------------------------------


@pytest.mark.slow
def test_pruned_trials_are_successful_experiments_and_never_replayed(baseline_clone, tmp_path):
    repo = baseline_clone
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    repo.set_param("train", "epochs", 3)
    for key, value in HARSH.items():
        repo.set_tune(key, value)
    repo.commit("harsh pruning")
    repo.run(sys.executable, "-m", "visiontune", "tune", "--storage", storage, "--trials", "3")

    study = optuna.load_study(study_name="visiontune", storage=storage)
    assert study.metric_names == ["val.acc"]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and study.trials[0].state == TrialState.COMPLETE, study.trials
    experiments = repo.experiments()
    for trial in study.trials:
        train = experiments[f"visiontune-{trial.number}"]["metrics"]["metrics/train.json"]["data"]
        assert len(trial.intermediate_values) == train["epochs"]  # one report per epoch
        assert train["val"]["acc"] == trial.value
        if trial.state == TrialState.PRUNED:
            assert train["pruned"]["epoch"] == train["epochs"] < 3
            assert train["pruned"]["reason"].startswith("percentile pruner: val.acc ")
        else:
            assert train["epochs"] == 3 and "pruned" not in train

    # DVC's run-cache saved the pruned train stage under the key of a full run with its
    # params: the same params, run again, must train all 3 epochs, not restore the stop.
    threads = experiments[f"visiontune-{pruned[0].number}"]["params"]["train"]["threads"]
    params = {**pruned[0].params, "train.threads": threads}
    sets = [arg for key, value in params.items() for arg in ("-S", f"{key}={value!r}")]
    repo.dvc("exp", "run", "-n", "again", *sets, "train")
    again = repo.experiments()["again"]["metrics"]["metrics/train.json"]["data"]
    assert again["epochs"] == 3 and "pruned" not in again
