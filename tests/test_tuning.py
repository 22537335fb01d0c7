"""visiontune tune: a real Optuna study whose trials are real dvc experiments."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from helpers.dvc_repo import SPACE, TUNE, DvcRepo
from helpers.servers import wait_for
from helpers.studies import in_process_study
from optuna.trial import TrialState

from visiontune.config.params import Params, with_overrides
from visiontune.config.tune_settings import parse_settings
from visiontune.experiments.listing import experiment_file
from visiontune.tuning.accounting import LOG, REASON, TAIL, counted
from visiontune.tuning.options import TuneOptions
from visiontune.tuning.space import suggest
from visiontune.tuning.study import open_study
from visiontune.tuning.trials import Runner


@pytest.fixture
def tune_repo(baseline_clone, tmp_path):
    """A clone of the baseline (pipeline run up to evaluate): trials run train+evaluate."""
    baseline_clone.storage = f"sqlite:///{tmp_path / 'study.db'}"
    return baseline_clone


def run_tune(repo, *args, check=True):
    return repo.run(
        sys.executable, "-m", "visiontune", "tune", "--storage", repo.storage, *args, check=check
    )


def load(repo, name="visiontune"):
    return optuna.load_study(study_name=name, storage=repo.storage)


def trial_experiments(repo) -> dict:
    return {name: row for name, row in repo.experiments().items() if name.startswith("visiontune-")}


# --- fast unit tests -------------------------------------------------------------------


def test_suggest_covers_the_space_within_bounds():
    settings = parse_settings(
        {"space": {**SPACE, "model.width": {"type": "categorical", "choices": [8, 16]}}}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = suggest(study.ask(), settings.space)
        assert 0.003 <= values["model.lr"] <= 0.05
        assert 0 <= values["model.dropout"] <= 0.3
        assert values["model.width"] in (8, 16)


def test_counted_trials(tmp_path):
    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 0.5)
    failed = study.ask()
    failed.set_user_attr(REASON, "training diverged")
    study.tell(failed, state=TrialState.FAIL)
    stopped = study.ask()
    stopped.set_user_attr(REASON, "interrupted")
    study.tell(stopped, state=TrialState.FAIL)
    stale = study.ask()
    study.tell(stale, state=TrialState.FAIL)  # failed by staleness: no reason recorded
    assert [counted(t) for t in study.trials] == [True, True, False, False]


def test_resumed_study_does_not_replay_its_first_draws(tmp_path):
    settings = parse_settings({"space": SPACE, "n_startup_trials": 10})
    options = TuneOptions(trials=4, storage=f"sqlite:///{tmp_path / 's.db'}", settings=settings)
    first = open_study(Params(), options)
    drawn = [suggest(first.ask(), settings.space) for _ in range(2)]
    for trial in first.trials:
        first.tell(trial.number, 0.5)
    resumed = open_study(Params(), options)
    again = suggest(resumed.ask(), settings.space)
    assert again not in drawn


def test_in_process_study_trains_and_evaluates_each_trial(prepared, tmp_path, capsys):
    """--in-process: the stages' work without dvc; each trial saves and tests a checkpoint."""
    study = in_process_study(prepared, tmp_path, trials=2, epochs=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(0 <= t.user_attrs["test.acc"] <= 1 for t in study.trials)
    assert json.loads((tmp_path / "metrics" / "tune.json").read_text())["tune"]["trials"] == {
        "complete": 2,
        "pruned": 0,
        "fail": 0,
    }
    assert "dvc exp apply" not in capsys.readouterr().out  # nothing to apply


@pytest.mark.parametrize(("threads", "nproc", "expected"), [(0, 1, 4), (0, 2, 2), (3, 2, None)])
def test_each_trial_process_gets_its_share_of_the_cores(
    tmp_path, monkeypatch, threads, nproc, expected
):
    """train.threads 0: --jobs 2 trials of train.nproc processes each share 8 cores."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)  # the machine: 8 cores
    params = with_overrides(Params(), {"train.threads": threads})
    options = TuneOptions(trials=1, jobs=2, fixed={"train.nproc": nproc})
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    runner = Runner(params, options, tmp_path, storage, optuna.create_study(storage=storage))
    assert runner.fixed.get("train.threads") == expected


def test_unreachable_storage_is_one_clear_line(tmp_path):
    repo = DvcRepo.copy_of_project(tmp_path / "repo", TUNE)
    repo.storage = "postgresql://nobody@127.0.0.1:9/optuna"
    result = run_tune(repo, "--trials", "1", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot open Optuna storage postgresql://")
    assert "Traceback" not in result.stderr


def test_bad_fixed_override_fails_before_any_trial(tmp_path):
    repo = DvcRepo.copy_of_project(tmp_path / "repo", TUNE)
    repo.storage = f"sqlite:///{tmp_path / 's.db'}"
    result = run_tune(repo, "--trials", "1", "--set", "train.epochs=0", check=False)
    assert result.returncode == 1
    assert result.stderr == "error: train.epochs must be >= 1, got 0\n"
    result = run_tune(repo, "--trials", "1", "--set", "sweep.epochs=2", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --set sweep.epochs: --set fixes a param of every ")
    result = run_tune(repo, "--trials", "1", "--set", "tune.pruner=asha", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: tune.pruner must be one of none, median")


def test_more_gpus_than_present_fails_before_any_trial(tmp_path):
    repo = DvcRepo.copy_of_project(tmp_path / "repo", TUNE)
    repo.storage = f"sqlite:///{tmp_path / 's.db'}"
    repo.env["CUDA_VISIBLE_DEVICES"] = "0,1,2"
    result = run_tune(repo, "--jobs", "2", "--gpus-per-trial", "2", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "error: --jobs 2 x --gpus-per-trial 2 needs 4 GPUs, 3 present "
        "(CUDA_VISIBLE_DEVICES=0,1,2)\n"
    )
    result = run_tune(repo, "--in-process", "--gpus-per-trial", "1", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --gpus-per-trial hands GPUs to dvc experiments")
    assert not (tmp_path / "s.db").exists()  # no study opened, no trial started


# --- real dvc experiments --------------------------------------------------------------


@pytest.mark.slow
def test_study_runs_trials_as_experiments_and_resumes(tune_repo):
    out = run_tune(tune_repo, "--trials", "2").stdout
    assert "apply it with: dvc exp apply visiontune-" in out
    study = load(tune_repo)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2

    run_tune(tune_repo, "--trials", "3")  # resume: one more, none repeated
    study = load(tune_repo)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)

    experiments = trial_experiments(tune_repo)
    assert set(experiments) == {"visiontune-0", "visiontune-1", "visiontune-2"}
    for trial in study.trials:
        row = experiments[f"visiontune-{trial.number}"]
        assert row["params"]["model"]["lr"] == pytest.approx(trial.params["model.lr"])
        assert row["params"]["train"]["epochs"] == 2
        train = row["metrics"]["metrics/train.json"]["data"]
        test = row["metrics"]["metrics/evaluate.json"]["data"]
        assert trial.value == train["val"]["acc"]
        assert trial.user_attrs["test.acc"] == test["test"]["acc"]
        # Trials stop at evaluate: no robustness numbers of the baseline's model in their row.
        robustness = row["metrics"].get("metrics/robustness.json", {}).get("data", {})
        clean = robustness.get("robustness", {}).get("clean_acc")
        assert clean is None or clean == test["test"]["acc"]

    summary = json.loads((tune_repo.path / "metrics" / "tune.json").read_text())["tune"]
    assert summary["best"]["name"] == f"visiontune-{study.best_trial.number}"
    assert summary["best"]["val.acc"] == study.best_value
    assert (tune_repo.path / "plots" / "tune" / "history.html").stat().st_size > 1000
    assert (tune_repo.path / "plots" / "tune" / "importances.html").exists()
    assert_best_trial_reproduces(tune_repo, summary["best"]["name"])

    tune_repo.storage = tune_repo.storage.replace("study.db", "other.db")  # same name, new study
    clash = run_tune(tune_repo, "--trials", "1", check=False)
    assert clash.returncode == 1
    assert clash.stderr.startswith("error: experiments visiontune-0, visiontune-1, visiontune-2")


def assert_best_trial_reproduces(repo, name: str) -> None:
    """What the tuning docs tell the user to do, ``dvc exp apply`` then ``dvc repro --force``,
    gives the trial's own val and test metrics bit for bit (its experiment ran in the
    tuner's environment, linked to its trial)."""
    recorded = {
        path: json.loads(experiment_file(repo.path, name, path))
        for path in ("metrics/train.json", "metrics/evaluate.json")
    }
    repo.dvc("exp", "apply", name)
    repo.dvc("repro", "--force", "evaluate")  # the stages of the files compared
    for path, metrics in recorded.items():
        assert json.loads((repo.path / path).read_text()) == metrics, path


@pytest.mark.slow
def test_failing_trials_say_why_and_where_their_log_is_and_the_study_goes_on(tune_repo):
    """A crash one at a time (``dvc exp run --temp``): a bug in the user's own code that
    model.blocks=1 reaches, a traceback, retried once. Then the study goes on through the
    queue: a stage's user error (model.blocks=4 is too deep for 8 px), not retried."""
    stage = tune_repo.path / "stages" / "train.py"
    anchor = "    with joined(params.train) as group:"
    bug = '    if params.model.blocks == 1:\n        raise RuntimeError("a bug in my own code")\n'
    assert anchor in stage.read_text()
    stage.write_text(stage.read_text().replace(anchor, bug + anchor))
    tune_repo.commit("a bug that model.blocks=1 reaches")
    out = run_tune(tune_repo, "--trials", "1", "--set", "model.blocks=1").stdout
    out += run_tune(tune_repo, "--trials", "2", "--jobs", "2", "--set", "model.blocks=4").stdout
    study = load(tune_repo)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2, out
    assert all(counted(t) for t in study.trials)

    crash = "python stages/train.py crashed: RuntimeError: a bug in my own code"
    user_error = (
        "model.blocks=4 halves data.image_size=8 below 1 pixel; "
        "use model.blocks <= 3 or data.image_size >= 16"
    )
    summary = json.loads((tune_repo.path / "metrics" / "tune.json").read_text())["tune"]
    assert summary["best"] is None and summary["trials"]["fail"] == 2
    failed = summary["failed"]
    for trial, entry, reason in zip(study.trials, failed, (crash, user_error), strict=True):
        log = f".optuna/logs/visiontune-{trial.number}.log"  # git-ignored, kept by the tuner
        assert entry["name"] == f"visiontune-{trial.number}"
        assert entry["params"] == trial.params
        assert trial.user_attrs[REASON] == entry["reason"] == reason
        assert trial.user_attrs[LOG] == entry["log"] == log
        assert f"visiontune-{trial.number}: FAIL ({reason})  log: {log}\n" in out
        assert reason.rpartition(": ")[2] in (tune_repo.path / log).read_text()
    assert f"visiontune-0: {crash}; retrying once\n" in out
    assert "Traceback (most recent call last):" in (tune_repo.path / failed[0]["log"]).read_text()
    assert failed[0]["tail"] == study.trials[0].user_attrs[TAIL]
    assert failed[0]["tail"][-2:] == [
        "RuntimeError: a bug in my own code",
        "ERROR: failed to reproduce 'train': failed to run: python stages/train.py, exited with 1",
    ]
    assert "tail" not in failed[1]  # a user error: its one line says it all


@pytest.mark.slow
def test_two_jobs_run_through_the_queue_each_on_its_own_gpus(tune_repo):
    """The tuner's CUDA_VISIBLE_DEVICES is its pool of GPUs: the two trials running at once
    get 0,1 and 2,3, and each of their stages records what it saw."""
    tune_repo.env["CUDA_VISIBLE_DEVICES"] = "0,1,2,3"
    run_tune(tune_repo, "--trials", "2", "--jobs", "2", "--gpus-per-trial", "2")
    study = load(tune_repo)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    # the queue's workers run each train stage linked to its trial: a curve per trial
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1, 2]] * 2
    assert study.trials[0].intermediate_values[2] == study.trials[0].value
    assert set(trial_experiments(tune_repo)) == {"visiontune-0", "visiontune-1"}
    assert "Queued" not in tune_repo.read("queue", "status").stdout
    seen = []
    for name in ("visiontune-0", "visiontune-1"):
        log = tune_repo.read("queue", "logs", name).stdout
        seen.append(re.findall(r"^CUDA_VISIBLE_DEVICES=(\S+): the GPUs its tuner", log, re.M))
    assert seen == [["0,1", "0,1"], ["2,3", "2,3"]]  # train's and evaluate's
    assert not any((tune_repo.path / ".optuna" / "devices").iterdir())  # all given back


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_killed_tuner_is_resumed(tune_repo):
    # Ctrl-C while the first trial runs: nothing left queued or running, trial interrupted.
    tuner = start_tuner(tune_repo, "--trials", "2")
    wait_for(lambda: _states(tune_repo) == [TrialState.RUNNING])
    time.sleep(3)
    tuner.send_signal(signal.SIGINT)
    _, err = tuner.communicate(timeout=120)
    assert tuner.returncode != 0 and "interrupted" in err
    study = load(tune_repo)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.trials[0].user_attrs[REASON] == "interrupted"
    status = tune_repo.read("queue", "status").stdout
    assert "Queued" not in status and "Running" not in status

    # kill -9 mid-trial: the resumed study fails (or recovers) that trial, then completes.
    tuner = start_tuner(tune_repo, "--trials", "2")
    wait_for(lambda: TrialState.RUNNING in _states(tune_repo))
    tuner.kill()
    tuner.communicate()
    time.sleep(7)  # > 3 heartbeats of 2 s: the killed tuner's trial is stale
    run_tune(tune_repo, "--trials", "2")
    study = load(tune_repo)
    assert sum(counted(t) for t in study.trials) == 2
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert not any(t.state == TrialState.RUNNING for t in study.trials)
    complete = {f"visiontune-{t.number}" for t in study.trials if t.state == TrialState.COMPLETE}
    assert complete <= set(trial_experiments(tune_repo))
    status = tune_repo.read("queue", "status").stdout
    assert "Queued" not in status and "Running" not in status


def start_tuner(repo, *args: str) -> subprocess.Popen:
    """``visiontune tune`` in the background, its output captured, Ctrl-C as on a terminal.

    pytest-xdist's workers ignore SIGINT, and a child inherits that (Python then never
    raises KeyboardInterrupt): the tuner gets the default disposition back.
    """
    command = [sys.executable, "-m", "visiontune", "tune", "--storage", repo.storage, *args]
    return subprocess.Popen(
        command,
        cwd=repo.path,
        env=repo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _states(repo) -> list:
    try:
        return [t.state for t in load(repo).trials]
    except KeyError:
        return []
