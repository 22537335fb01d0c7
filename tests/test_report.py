"""Reports: the table logic on hand-made runs, and `visiontune report` over real dvc
experiments (none yet, then a successful and a failed one, plus an Optuna study)."""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from helpers.dvc_repo import DvcRepo
from PIL import Image

from visiontune.experiments.frame import experiments_frame, to_frame
from visiontune.experiments.listing import Experiment, parse_exp_show
from visiontune.experiments.report import (
    HIGHLIGHTED,
    build_table,
    by_data,
    differing_params,
    line_figure,
    markdown_table,
    optuna_plot,
    other_data_tables,
    ranked,
    reference_data,
    robustness_figure,
    study_figures,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(name: str, acc: float | None, state: str = "success", **params: object) -> Experiment:
    metrics = {} if acc is None else {"val.acc": acc, "test.acc": acc - 0.01, "epochs": 3}
    base = {"model.lr": 0.01, "model.width": 16, "sweep.x_values": [0.1, 1]}
    return Experiment(name, f"rev-{name}", "experiment", state, {**base, **params}, metrics)


RUNS = [
    run("low", 0.5, **{"model.lr": 0.1}),
    run("failed", None, "failed", **{"model.blocks": 4}),
    run("queued", 0.99, "queued"),  # shows its baseline's metrics: not its own
    run("high", 0.9, **{"sweep.x_values": [0.1, 2]}),
    run("mid", 0.7),
]
FRAME = to_frame(RUNS)


def names(frame) -> list[str]:
    return list(frame.index)


def test_runs_are_ranked_by_val_acc_with_runs_without_their_own_last():
    assert names(ranked(FRAME)) == ["high", "mid", "low", "failed", "queued"]


def test_a_frame_has_run_params_and_metrics_apart_and_only_a_successful_runs_metrics():
    assert list(FRAME.columns.get_level_values(0).unique()) == ["run", "params", "metrics"]
    assert list(FRAME.run.columns) == ["rev", "kind", "base", "state", "pruned", "data"]
    assert FRAME.loc["high", ("params", "sweep.x_values")] == [0.1, 2]
    assert FRAME.loc["mid", ("metrics", "val.acc")] == 0.7
    assert FRAME.loc[["failed", "queued"], "metrics"].isna().all(axis=None)  # none of their own
    assert list(FRAME.run.state) == ["success", "failed", "queued", "success", "success"]


def test_runs_are_ranked_by_the_tuned_metric_lowest_loss_first():
    """With tune.metric val.loss the report ranks as the tuner optimises: lowest first."""
    losses = {"low": 0.9, "high": 0.2, "mid": 0.5}
    runs = [
        Experiment(
            r.name, r.rev, r.kind, r.state, r.params, {**r.metrics, "val.loss": losses[r.name]}
        )
        if r.name in losses
        else r
        for r in RUNS
    ]
    frame = to_frame(runs)
    assert names(ranked(frame, "val.loss")) == ["high", "mid", "low", "failed", "queued"]
    table = build_table(frame, top=5, metric="val.loss")
    assert table.best == "high" and table.metric == "val.loss"


def test_only_params_that_differ_become_columns():
    assert differing_params(FRAME) == ["model.lr", "sweep.x_values", "model.blocks"]
    assert differing_params(to_frame(RUNS[2:3] + RUNS[4:])) == []


def test_the_tuners_threads_and_device_are_not_differing_hyperparameters():
    """The tuner divides train.threads among its jobs and may pick the device: plumbing."""
    runs = [
        run("a", 0.8, **{"train.threads": 8, "train.device": "cpu"}),
        run("b", 0.7, **{"train.threads": 4, "train.device": "cuda", "model.lr": 0.1}),
        run("c", 0.6, **{"train.threads": 2, "train.resident_mb": 64, "data.workers": 1}),
    ]
    assert differing_params(to_frame(runs)) == ["model.lr"]
    assert build_table(to_frame(runs), top=3).params == ["model.lr"]


def test_a_pruned_run_shows_as_pruned_with_its_epochs_after_the_finished_ones():
    """``{"pruned": {"epoch": 2, "reason": ...}}`` in train.json flattens to pruned.epoch
    (strings are dropped); a plain truthy ``pruned`` counts too, a falsy one does not."""
    early = Experiment(
        "early", "rev-e", "experiment", "success", {}, {"val.acc": 0.95, "pruned.epoch": 2}
    )
    flagged = Experiment(
        "flagged", "rev-f", "experiment", "success", {}, {"val.acc": 0.93, "pruned": 1}
    )
    kept = Experiment("kept", "rev-k", "experiment", "success", {}, {"val.acc": 0.6, "pruned": 0})
    runs = [*RUNS, early, flagged, kept]
    table = build_table(to_frame(runs), top=20)
    assert names(table.rows) == [
        *("high", "mid", "kept", "low"),  # finished, by val.acc
        *("early", "flagged"),  # pruned: never best, even with a higher val.acc
        *("failed", "queued"),
    ]
    assert table.best == "high"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in markdown_table(table).splitlines()}
    assert rows["early"].endswith("| 0.9500 |  | 2 | pruned |")  # epochs run: where it stopped
    assert rows["flagged"].endswith("| 0.9300 |  |  | pruned |")
    assert rows["kept"].endswith("| success |")
    stopped = Experiment(
        "s", "rev-s", "experiment", "success", {}, {"epochs": 3, "pruned.epoch": 3}
    )
    assert markdown_table(build_table(to_frame([stopped]), top=1)).endswith("|  |  | 3 | pruned |")


def test_the_table_shows_the_top_runs_marks_the_best_and_counts_the_rest():
    table = build_table(FRAME, top=2)
    assert names(table.rows) == ["high", "mid"] and table.more == 3
    assert table.params == ["sweep.x_values"]
    assert markdown_table(table).splitlines() == [
        "| experiment | sweep.x_values | val acc | test acc | epochs | state |",
        "| --- | --- | --- | --- | --- | --- |",
        "| **high** ★ best | [0.1, 2] | 0.9000 | 0.8900 | 3 | success |",
        "| mid | [0.1, 1] | 0.7000 | 0.6900 | 3 | success |",
        "",
        "… and 3 more experiments",
    ]
    failed_only = markdown_table(build_table(to_frame(RUNS[1:3]), top=20)).splitlines()
    assert failed_only[2:] == [
        "| failed | 4 |  |  |  | failed |",
        "| queued |  |  |  |  | queued |",
    ]


def exp_show_row(name: str, prepared: str | None, **data: object) -> dict:
    """A ``dvc exp show --json`` row whose deps hold the sweep stage's stale data/prepared
    (the last stage listed wins there) and whose outs hold ``prepared``, the run's own."""
    row = {
        "params": {"params.yaml": {"data": {"data": {"source": "digits", "workers": 0, **data}}}},
        "deps": {"data/prepared": {"hash": "5tale.dir"}},
        "outs": {"data/prepared": {"hash": prepared}} if prepared else {},
    }
    return {"rev": f"{name}-rev", "name": name, "data": row}


def test_a_runs_data_is_its_prepared_outputs_md5_else_its_data_params():
    runs = parse_exp_show(
        [
            {
                **exp_show_row("main", "d1g175.dir"),
                "experiments": [
                    {"revs": [exp_show_row("cats", "ca75.dir", source="/photos/cats")]},
                    {"revs": [exp_show_row("old", None, source="/photos", workers=4)]},
                    {
                        "revs": [exp_show_row("later", "d1g175.dir", source="/photos/cats")],
                        "executor": {"state": "queued"},
                    },
                ],
            }
        ]
    )
    assert [run.prepared for run in runs] == ["d1g175.dir", "ca75.dir", "", "d1g175.dir"]
    assert to_frame(runs).run.data.to_dict() == {
        "main": "d1g175.dir",
        "cats": "ca75.dir",
        "old": 'params {"data.source": "/photos"}',  # data.workers makes the same bytes
        "later": "",  # queued: shows its baseline's outs, not its own
    }


def on(prepared: str, name: str, acc: float | None, state: str = "success", **params) -> Experiment:
    """:func:`run` on the prepared data of md5 ``prepared``, from ``data.source`` digits."""
    made = run(name, acc, state, **{"data.source": "digits", "data.image_size": 8, **params})
    return replace(made, prepared=prepared)


CATS = {"data.source": "/photos/cats", "data.image_size": 32}
REFOLDED = "0ddba11fa11ed0ddba11fa11ed0ddba1.dir"  # data.source digits, other images
MIXED = [
    replace(on("d1g175.dir", "workspace", 0.95), kind="workspace"),
    replace(on("d1g175.dir", "main", 0.95), kind="baseline"),
    on("ca75ca75ca75.dir", "cats", 1.0, **CATS),  # a 1-class folder: nothing to get wrong
    on("d1g175.dir", "resnet", 0.97, **{"model.name": "resnet18"}),
    on("", "cats-failed", None, "failed", **CATS),  # no data of its own: with the ranked
    on(REFOLDED, "refolded", 0.99),  # the same params made other data
    on("ca75ca75ca75.dir", "cats-2", 0.5, **CATS),
]


def test_runs_on_other_data_are_listed_apart_and_never_ranked_with_the_workspaces():
    groups = by_data(to_frame(MIXED))
    assert names(groups.ranked) == ["workspace", "main", "resnet", "cats-failed"]
    assert [(label, names(rows)) for label, rows in groups.apart] == [
        ("data.image_size=32, data.source=/photos/cats", ["cats", "cats-2"]),
        ("data/prepared 0ddba11f", ["refolded"]),
    ]
    assert groups.note() == (
        "3 runs trained on other data are listed apart, not ranked: "
        "`data.image_size=32, data.source=/photos/cats` (2); `data/prepared 0ddba11f` (1)."
    )
    table = build_table(groups.ranked, top=20)
    assert table.best == "resnet"  # not cats: its 1.0 was on other data
    assert table.params == ["data.source", "data.image_size", "model.name"]
    cats, refolded = other_data_tables(groups, top=20, metric="val.acc")
    assert cats.splitlines()[:5] == [
        "## Trained on other data: `data.image_size=32, data.source=/photos/cats`",
        "",
        "| experiment | val acc | test acc | epochs | state |",
        "| --- | --- | --- | --- | --- |",
        "| cats | 1.0000 | 0.9900 | 3 | success |",  # sorted, but never best
    ]
    assert "★" not in cats + refolded
    one = by_data(to_frame(MIXED[:3]))
    assert one.note() == (
        "1 run trained on other data is listed apart, not ranked: "
        "`data.image_size=32, data.source=/photos/cats`."
    )
    assert by_data(to_frame(MIXED[:2])).note() is None


def test_runs_are_ranked_on_the_workspaces_data_else_the_baselines_else_the_most_runs():
    frame = to_frame(MIXED)
    assert reference_data(frame) == "d1g175.dir"
    cats_workspace = to_frame([replace(MIXED[2], kind="workspace"), *MIXED[1:]])
    assert reference_data(cats_workspace) == "ca75ca75ca75.dir"
    assert reference_data(frame.iloc[[2, 1, 5]]) == "d1g175.dir"  # the baseline's
    assert reference_data(frame.iloc[[5, 2, 6, 3]]) == "ca75ca75ca75.dir"  # most runs
    assert reference_data(frame.iloc[[5, 2]]) == REFOLDED  # the first listed on a tie
    assert reference_data(frame.iloc[[4]]) == ""  # no run with data of its own
    unrecorded = to_frame([replace(MIXED[0], prepared=""), *MIXED[1:]])  # no dvc.lock yet
    assert reference_data(unrecorded) == "d1g175.dir"  # the baseline's
    assert reference_data(unrecorded.iloc[[0, 2, 6, 3]]) == "ca75ca75ca75.dir"  # most runs


def test_outside_a_dvc_repository_the_report_fails_in_one_line(tmp_path):
    result = _report(tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path} is not a dvc repository (no .dvc folder)\n"


@pytest.mark.slow
def test_report_of_no_experiments_then_of_a_good_and_a_failed_one(baseline_clone):
    repo = baseline_clone

    _report(repo.path)
    text = (repo.path / "report.md").read_text()
    assert "No dvc experiments yet" in text
    assert [row[0] for row in _table(text)] == ["**workspace** ★ best", "main"]
    assert not (repo.path / "report_plots" / "tune_history.png").exists()

    repo.dvc("exp", "run", "evaluate", "-n", "a", "-S", "model.lr=0.02")
    # A failed `dvc exp run` in the workspace leaves no experiment; a queued one does.
    repo.dvc("exp", "run", "--queue", "evaluate", "-n", "bad", "-S", "model.blocks=4")
    repo.start_queue()
    repo.wait_for_queue(timeout=120)
    _make_study(repo.path)

    _report(repo.path)
    text = (repo.path / "report.md").read_text()
    print(text)
    rows = {row[0].removeprefix("**").split("**")[0]: row for row in _table(text)}
    shown = repo.experiments()
    assert set(rows) == {"workspace", "main", *shown} == {"workspace", "main", "a", "bad"}
    for name in ("main", "a"):
        val, test = (_exp_show_metrics(repo, name)[split]["acc"] for split in ("val", "test"))
        assert rows[name][-4:-2] == [f"{val:.4f}", f"{test:.4f}"]
    assert rows["main"][0] == "**main** ★ best"  # lr 0.01 beats lr 0.02 on val.acc
    assert rows["bad"][-4:] == ["", "", "", "failed"]
    assert "| experiment | model.lr | model.blocks | val acc |" in text
    plots = ("val_loss", "val_acc", "sweep_heatmap", "tune_history", "tune_parallel")
    for name in (*plots, "tune_importance"):
        assert f"](report_plots/{name}.png)" in text
        _check_png(repo.path / "report_plots" / f"{name}.png")
    # The workspace's model is a's, whose robustness no stage measured: no curves of another.
    assert "robustness.png" not in text

    # The same runs as a DataFrame, with a queued experiment and another branch's tip.
    repo.dvc("exp", "run", "--queue", "evaluate", "-n", "later", "-S", "model.lr=0.03")
    repo.git("checkout", "-q", "-b", "feature")
    repo.git("commit", "-q", "--allow-empty", "-m", "a feature branch")
    frame = experiments_frame(repo.path, all_branches=True).loc[:, ["run", "params", "metrics"]]
    repo.git("checkout", "-q", "main")
    kinds = frame.run.kind.to_dict()
    assert kinds == {
        **{"workspace": "workspace", "feature": "baseline", "main": "branch"},
        **{"a": "experiment", "bad": "experiment", "later": "experiment"},
    }
    assert frame.run.state.to_dict() == {
        **dict.fromkeys(kinds, "success"),
        "bad": "failed",
        "later": "queued",
    }
    assert frame.loc[["a", "bad", "later"], ("run", "base")].tolist() == ["main"] * 3
    assert frame.loc["a", ("params", "model.lr")] == 0.02
    assert frame.loc["later", ("params", "model.lr")] == 0.03
    for name in ("main", "a"):
        assert (
            frame.loc[name, ("metrics", "val.acc")] == _exp_show_metrics(repo, name)["val"]["acc"]
        )
    assert frame.loc[["bad", "later"], "metrics"].isna().all(axis=None)  # none of their own

    missing = _report(repo.path, "--study", "nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr == "error: no Optuna study 'nope' in sqlite:///.optuna/studies.db\n"


def test_curves_of_30_runs_highlight_the_best_and_keep_the_legend_off_the_axes(tmp_path):
    """30 runs: the best HIGHLIGHTED are named in a legend beside the plot area, the rest
    share one faded entry."""
    names = [f"trial-{i}" for i in range(30)]
    lines = {
        name: ([1, 2, 3], [0.5 + i / 100, 0.6 + i / 100, 0.7 + i / 100])
        for i, name in enumerate(names)
    }
    best = names[:HIGHLIGHTED]
    figure = line_figure(lines, best, "val/acc", "val.acc")
    figure.savefig(tmp_path / "val_acc.png")
    _check_png(tmp_path / "val_acc.png")

    axes = figure.axes[0]
    legend = axes.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [*best, "25 other runs"]
    figure.draw_without_rendering()  # lays the figure out: legend and axes in pixels
    assert legend.get_window_extent().x0 >= axes.get_window_extent().x1
    first, *_, last = axes.get_lines()  # drawn in rank order: trial-0 best, trial-29 faded
    assert first.get_linewidth() > last.get_linewidth() and last.get_alpha() < 1


def test_robustness_plot_has_a_line_per_corruption_over_severity(tmp_path):
    rows = [
        {"corruption": name, "severity": severity, "acc": 1 - severity * step}
        for name, step in (("blur", 0.1), ("rotation", 0.2))
        for severity in range(4)
    ]
    figure = robustness_figure(rows)
    figure.savefig(tmp_path / "robustness.png")
    _check_png(tmp_path / "robustness.png")
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["blur", "rotation"]
    assert list(lines[1].get_xdata()) == [0, 1, 2, 3]
    assert list(lines[1].get_ydata()) == pytest.approx([1, 0.8, 0.6, 0.4])


def test_a_study_of_30_trials_gets_history_parallel_coordinates_and_importances(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("metric", "val.acc")  # as the tuner names its study's metric
    for _ in range(30):
        trial = study.ask()
        lr = trial.suggest_float("model.lr", 1e-4, 0.1, log=True)
        width = trial.suggest_int("model.width", 8, 64)
        trial.suggest_categorical("model.batchnorm", [True, False])
        study.tell(trial, 1 - abs(lr - 0.01) + width / 1000)
    plots = tmp_path / "plots"
    plots.mkdir()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's experimental warnings are silenced
        figures = study_figures(tmp_path, plots, storage, "s")
    assert [(title, path.name) for title, path in figures] == [
        ("tuning history", "tune_history.png"),
        ("parallel coordinates", "tune_parallel.png"),
        ("param importances", "tune_importance.png"),
    ]
    for _, path in figures:
        _check_png(path)


def test_importances_that_optuna_cannot_compute_are_left_out_without_a_traceback(tmp_path):
    """One complete trial: no importances; a single distinct value, on which fANOVA fails
    (zero variance): no PNG, no exception."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_param_importances

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    for name, count in (("one", 1), ("flat", 3)):
        study = optuna.create_study(study_name=name, storage=storage)
        for _ in range(count):
            trial = study.ask()
            trial.suggest_float("model.lr", 0.01, 0.1)
            study.tell(trial, 0.5)

    figures = study_figures(tmp_path, tmp_path, storage, "one")
    assert [title for title, _ in figures] == ["tuning history", "parallel coordinates"]
    fanova = partial(plot_param_importances, evaluator=FanovaImportanceEvaluator(seed=0))
    assert optuna_plot(fanova, study, "val.acc", tmp_path / "flat.png") is None
    assert not (tmp_path / "flat.png").exists()


def _report(cwd: Path, *args: str, check: bool = True):
    return DvcRepo(cwd).run(
        sys.executable, "-m", "visiontune", "report", "--out", "report.md", *args, check=check
    )


def _table(markdown: str) -> list[list[str]]:
    """The body rows of the markdown table, as cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][2:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def _exp_show_metrics(repo: DvcRepo, name: str) -> dict:
    """Metrics of a row of ``dvc exp show --json`` (the baseline by its branch name)."""
    for baseline in json.loads(repo.read("exp", "show", "--json").stdout):
        for row in [baseline, *(r for g in baseline.get("experiments") or [] for r in g["revs"])]:
            if row.get("name") == name:
                merged = {}
                for source in row["data"]["metrics"].values():
                    merged.update(source.get("data", {}))
                return merged
    raise AssertionError(f"{name} not in dvc exp show")


def _make_study(repo: Path) -> None:
    """A real Optuna study in the default storage, named as params.yaml's tune.study."""
    import optuna

    (repo / ".optuna").mkdir()
    storage = f"sqlite:///{repo / '.optuna' / 'studies.db'}"
    study = optuna.create_study(study_name="visiontune", storage=storage, direction="maximize")
    for value in (0.5, 0.8, 0.7):
        trial = study.ask()
        trial.suggest_float("model.lr", 1e-3, 0.1, log=True)  # as tune.space asks
        study.tell(trial, value)


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (700, 450)


def test_files_at_reads_many_commits_files_in_one_git_call(tmp_path):
    """The report's series of every run shown come from one ``git cat-file --batch``:
    texts exact (bytes counted, CRLF and non-ASCII kept), a missing file or rev None."""
    from visiontune.experiments.dvc_git import files_at

    repo = DvcRepo(tmp_path)
    repo.git("init", "-q", "-b", "main")
    texts = ["step\tacc\n1\t0.5\n", "crlf\r\nline ü\r\n", ""]
    for number, text in enumerate(texts):
        (tmp_path / "series.tsv").write_bytes(text.encode())
        repo.git("add", "series.tsv")
        repo.git("commit", "-q", "--allow-empty", "-m", f"commit {number}")
    names = [f"HEAD~{2 - number}:series.tsv" for number in range(3)]
    assert files_at(tmp_path, [*names, "HEAD:missing.tsv", "nope:series.tsv"]) == [
        *texts,
        None,
        None,
    ]
    assert files_at(tmp_path, []) == []
