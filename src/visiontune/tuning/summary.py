"""The end of a study: the best trial printed and saved, optimisation plots, and the
one-line progress notes the tuner prints as it goes."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.config.pages import write_plotly_page
from visiontune.config.params import Params
from visiontune.config.paths import TUNE_PLOTS, TUNE_SUMMARY, write_json
from visiontune.experiments.listing import experiment_names
from visiontune.tuning.accounting import WORKER

if TYPE_CHECKING:
    import optuna


def write_summary(
    study: optuna.Study, params: Params, repo: Path, applicable: bool = True
) -> dict[str, Any] | None:
    """Print and save the best trial; write optimisation history and importances as HTML."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        say("no trial completed: nothing to report")
        return None
    best = study.best_trial
    name = f"{study.study_name}-{best.number}"
    summary = {
        "study": study.study_name,
        "best": {
            "name": name,
            "params": best.params,
            params.tune.metric: best.value,
            "test.acc": best.user_attrs.get("test.acc"),
        },
        "trials": {
            "complete": len(complete),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "fail": sum(t.state == TrialState.FAIL for t in trials),
        },
    }
    write_json(repo / TUNE_SUMMARY, {"tune": summary})
    _write_plots(study, repo / TUNE_PLOTS)
    test = summary["best"]["test.acc"]
    where = ""
    if applicable and name not in experiment_names(repo):  # another worker ran it
        where = f" in {best.user_attrs.get(WORKER, 'the clone that ran it')}"
    say(
        f"best: {name}  {params.tune.metric} {best.value:.4f}"
        + (f"  test.acc {test:.4f}" if test is not None else "")
        + f"  {short(best.params)}"
        + (f"\napply it{where} with: dvc exp apply {name}" if applicable else "")
    )
    return summary


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
