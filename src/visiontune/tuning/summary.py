"""The end of a study: the best trial printed and saved, optimisation plots, and the
one-line progress notes the tuner prints as it goes."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.config.pages import write_plotly_page
from visiontune.config.paths import TUNE_PLOTS, TUNE_SUMMARY, write_json
from visiontune.experiments.listing import experiment_names
from visiontune.tuning.accounting import (
    LOG,
    REASON,
    TAIL,
    WORKER,
    counted,
    experiment_name,
    worker,
)

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def write_summary(
    study: optuna.Study, metric: str, repo: Path, applicable: bool = True
) -> dict[str, Any]:
    """Print and save the best trial (``best``: null when none completed) and the trials
    that failed by themselves, each with its reason and log; write optimisation history
    and importances as HTML."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "best": None,
        "trials": {
            "complete": len(complete),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "fail": sum(t.state == TrialState.FAIL for t in trials),
        },
        "failed": [_failed(study, t, repo) for t in trials if _failed_by_itself(t)],
    }
    if not complete:
        write_json(repo / TUNE_SUMMARY, {"tune": summary})
        say(f"no trial completed: nothing to apply (failures in {TUNE_SUMMARY.as_posix()})")
        return summary
    best = study.best_trial
    name = experiment_name(study.study_name, best.number)
    summary["best"] = {
        "name": name,
        "params": best.params,
        metric: best.value,
        "test.acc": best.user_attrs.get("test.acc"),
    }
    write_json(repo / TUNE_SUMMARY, {"tune": summary})
    _write_plots(study, repo / TUNE_PLOTS)
    test = summary["best"]["test.acc"]
    where = ""
    if applicable and name not in experiment_names(repo):  # another worker ran it
        where = f" in {best.user_attrs.get(WORKER, 'the clone that ran it')}"
    say(
        f"best: {name}  {metric} {best.value:.4f}"
        + (f"  test.acc {test:.4f}" if test is not None else "")
        + f"  {short(best.params)}"
        + (f"\napply it{where} with: dvc exp apply {name}" if applicable else "")
    )
    return summary


def _failed_by_itself(trial: FrozenTrial) -> bool:
    """A FAIL that counts (bad params, a crash, a timeout): not one stopped from outside."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and counted(trial)


def _failed(study: optuna.Study, trial: FrozenTrial, repo: Path) -> dict[str, Any]:
    """A failed trial in metrics/tune.json: name, params, reason, and where its log is (in
    the clone of the worker that ran it, named when that is another)."""
    attrs = trial.user_attrs
    entry = {"name": experiment_name(study.study_name, trial.number), "params": trial.params}
    entry["reason"] = attrs.get(REASON)
    if LOG in attrs:
        entry["log"] = attrs[LOG]
        if WORKER in attrs and attrs[WORKER] != worker(repo):
            entry["worker"] = attrs[WORKER]
    if TAIL in attrs:
        entry["tail"] = attrs[TAIL]
    return entry


def _write_plots(study: optuna.Study, out: Path) -> None:
    import optuna.visualization as vis

    write_plotly_page(vis.plot_optimization_history(study), out / "history.html")
    with contextlib.suppress(ValueError, RuntimeError), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # too few complete trials: all equal
        write_plotly_page(vis.plot_param_importances(study), out / "importances.html")


def short(values: dict[str, Any]) -> str:
    """``model.lr=0.01 model.width=16``: params on one line, floats to 4 digits."""
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def say(line: str) -> None:
    print(line, flush=True)
