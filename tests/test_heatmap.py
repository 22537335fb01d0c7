"""Heatmaps: averaging repeated cells, the text table and HTML, which experiments compare
as equals, and `visiontune heatmap` over real queued dvc experiments (with the sweep stage
and its DVC plot on the way)."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace

import pytest

from visiontune.config.errors import VisiontuneError
from visiontune.experiments.comparable_runs import select_comparable
from visiontune.experiments.heatmap import Cell, aggregate, heatmap_from_experiments, write_heatmap
from visiontune.experiments.listing import Experiment, parse_exp_show

ROWS = [
    {"lr": 0.1, "width": 8, "acc": 0.9},
    {"lr": 0.01, "width": 8, "acc": 0.8},
    {"lr": 0.1, "width": 8, "acc": 0.7},
    {"lr": 0.01, "width": 16, "acc": math.nan},  # a failed run: on the axes, no value
    {"lr": 0.1, "width": 32, "acc": None},
    {"lr": 0.1, "width": 16, "acc": 1},
]


def test_repeated_cells_are_averaged_and_counted():
    grid = aggregate(ROWS, x="lr", y="width", metric="acc")
    assert grid.xs == [0.1, 0.01] and grid.ys == [8, 16, 32]
    assert grid.cells == {
        (0.1, 8): Cell(pytest.approx(0.8), 2),
        (0.01, 8): Cell(0.8, 1),
        (0.1, 16): Cell(1.0, 1),
    }
    assert grid.cells[(0.1, 8)].label() == "0.800 (n=2)"
    assert grid.cells[(0.1, 16)].label() == "1.000"
    assert grid.table().splitlines() == [
        "acc: mean (n=runs) per cell",
        "width \\ lr          0.1         0.01",
        "8           0.800 (n=2)  0.800 (n=1)",
        "16          1.000 (n=1)            -",
        "32                    -            -",
    ]


def test_the_html_heatmap_is_annotated_in_grid_order(tmp_path):
    out = tmp_path / "plots" / "heatmap.html"
    write_heatmap(aggregate(ROWS, x="lr", y="width", metric="acc"), out, "acc by lr")
    html = out.read_text()
    assert "plotly" in html and '"acc by lr"' in html
    for text in ('"0.800 (n=2)"', '"x":["0.1","0.01"]', '"y":["8","16","32"]', '"type":"category"'):
        assert text in html


def experiment(
    lr: float, dropout: float, *, epochs: int = 2, ran: int | None = None, **other: object
) -> Experiment:
    """A finished run as ``list_experiments`` gives it; ``other`` sets params by dotted name
    with ``_`` for ``.`` (``model_width=32``), ``ran`` the epochs it ran (default all)."""
    params = {"model.lr": lr, "model.dropout": dropout, "model.width": 16, "train.epochs": epochs}
    params.update({"train.threads": 0, "train.device": "auto", "tune.seed": 0, "sweep.epochs": 4})
    params.update({name.replace("_", ".", 1): value for name, value in other.items()})
    metrics = {"val.acc": lr * 10 + dropout, "epochs": epochs if ran is None else ran}
    return Experiment(f"exp-{len(params)}", "0" * 40, "experiment", "success", params, metrics)


GRID = [experiment(lr, dropout) for lr in (0.01, 0.02) for dropout in (0, 0.25)]


def test_the_budget_most_runs_share_is_compared_and_the_others_are_counted():
    chosen = select_comparable(
        [*GRID, experiment(0.01, 0, epochs=12), experiment(0.02, 0, epochs=12)],
        x="model.lr",
        y="model.dropout",
    )
    assert chosen.runs == GRID and chosen.epochs == 2 and chosen.over == ()
    assert chosen.notes() == ["left out 2 runs: 2 trained 12 epochs (not 2)"]


def test_a_given_budget_is_compared_and_a_missing_one_is_an_error():
    runs = [*GRID, long := experiment(0.01, 0, epochs=12)]
    chosen = select_comparable(runs, x="model.lr", y="model.dropout", epochs=12)
    assert chosen.runs == [long]
    assert chosen.notes() == ["left out 4 runs: 4 trained 2 epochs (not 12)"]
    with pytest.raises(VisiontuneError, match=r"^no experiment trained 5 epochs to the end; "):
        select_comparable(runs, x="model.lr", y="model.dropout", epochs=5)


def test_on_a_tie_the_larger_budget_is_compared():
    runs = [GRID[0], long := experiment(0.01, 0, epochs=12)]
    assert select_comparable(runs, x="model.lr", y="model.dropout").runs == [long]


def test_early_stopped_and_pruned_runs_are_left_out():
    (pruned,) = parse_exp_show(
        [
            {
                "rev": "1" * 40,
                "data": {
                    "params": {"params.yaml": {"data": {"model": {"lr": 0.01}, "train": {}}}},
                    "metrics": {"metrics/train.json": {"data": {"epochs": 1, "pruned": True}}},
                },
            }
        ]
    )
    early = experiment(0.02, 0, epochs=12, ran=5)
    runs = [*GRID, experiment(0.01, 0, epochs=12), experiment(0.02, 0, epochs=12), early]
    chosen = select_comparable([*runs, pruned], x="model.lr", y="model.dropout")
    assert chosen.runs == GRID
    assert chosen.notes() == [
        "left out 4 runs: 2 trained 12 epochs (not 2), 1 stopped early, 1 pruned"
    ]
    with pytest.raises(VisiontuneError, match=r"^no experiment trained to the end to compare; "):
        select_comparable([early], x="model.lr", y="model.dropout")


def test_the_largest_group_sharing_other_params_is_kept_and_neutral_params_are_ignored():
    neutral = experiment(
        0.01,
        0.25,
        train_threads=4,
        train_device="cpu",
        train_resident_mb=64,
        data_workers=1,
        tune_seed=1,
    )
    wide = [experiment(0.01, 0, model_width=32), experiment(0.02, 0, model_width=32)]
    runs = [*GRID[:3], neutral, *wide, experiment(0.01, 0, train_optimizer="sgd")]
    chosen = select_comparable(runs, x="model.lr", y="model.dropout")
    assert chosen.runs == [*GRID[:3], neutral]
    assert chosen.notes() == [
        "left out 3 runs: 2 had other model.width, 1 had other train.optimizer",
        "other params differ among the 2-epoch runs: kept the largest group sharing them all "
        "(4 runs); --marginal averages over them",
    ]


def test_a_marginal_view_averages_over_other_params_and_says_so(tmp_path, monkeypatch, capsys):
    runs = [*GRID, experiment(0.01, 0, model_width=32), experiment(0.01, 0, epochs=12)]
    monkeypatch.setattr("visiontune.experiments.listing.list_experiments", lambda repo: runs)
    out = tmp_path / "heatmap.html"
    grid = heatmap_from_experiments(
        tmp_path, x="model.lr", y="model.dropout", metric="val.acc", out=out, marginal=True
    )
    assert grid.over == ("model.width",) and grid.cells[(0.01, 0)].count == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "val.acc: mean (n=runs) per cell, marginal over model.width"
    assert lines[4:] == ["left out 1 run: 1 trained 12 epochs (not 2)", f"wrote {out}"]
    html = out.read_text()
    title = "val.acc by model.lr and model.dropout, marginal over model.width"
    assert f'"{title} (5 experiments, 2 epochs each)"' in html
    assert '"subtitle":{"text":"left out 1 run: 1 trained 12 epochs (not 2)"}' in html


DIGITS = [replace(run, prepared="d1g175.dir") for run in GRID]


def cats(lr: float, dropout: float, **other: object) -> Experiment:
    """A run on a folder of cats (one class: val.acc 1.0 whatever it learnt)."""
    run = experiment(lr, dropout, data_source="/photos/cats", **other)
    return replace(run, prepared="ca75.dir", metrics={**run.metrics, "val.acc": 1.0})


def test_runs_on_other_data_are_never_averaged_not_even_in_a_marginal_view():
    resnet = replace(experiment(0.01, 0, model_name="resnet18"), prepared="d1g175.dir")
    runs = [cats(0.01, 0, model_name="resnet18"), *DIGITS, resnet]
    chosen = select_comparable(runs, x="model.lr", y="model.dropout", marginal=True)
    assert chosen.runs == [*DIGITS, resnet] and chosen.over == ("model.name",)
    assert chosen.notes() == ["left out 1 run: 1 trained on other data (data.source=/photos/cats)"]
    refolded = replace(GRID[0], prepared="0ddba11fa11ed0ddba11fa11ed0ddba1.dir")
    chosen = select_comparable([*DIGITS, refolded], x="model.lr", y="model.dropout")
    assert chosen.runs == DIGITS
    assert chosen.notes() == ["left out 1 run: 1 trained on other data (data/prepared 0ddba11f)"]


def test_the_data_most_runs_share_is_kept_on_a_tie_the_baselines():
    two = [cats(0.01, 0), cats(0.02, 0), *DIGITS[:2]]
    assert select_comparable(two, x="model.lr", y="model.dropout").runs == two[:2]  # first
    chosen = select_comparable(two, x="model.lr", y="model.dropout", reference="d1g175.dir")
    assert chosen.runs == DIGITS[:2]
    assert chosen.notes() == ["left out 2 runs: 2 trained on other data (data.source=/photos/cats)"]
    # Runs without a recorded data/prepared are told apart by their data.* params.
    old = [replace(run, prepared="") for run in [*two, DIGITS[2]]]
    assert select_comparable(old, x="model.lr", y="model.dropout").runs == old[2:]


def test_the_heatmap_command_breaks_a_tie_of_data_for_the_baselines(tmp_path, monkeypatch, capsys):
    main = replace(DIGITS[3], name="main", kind="baseline")  # listed, never drawn
    runs = [main, cats(0.01, 0), cats(0.02, 0), *DIGITS[:2]]
    monkeypatch.setattr("visiontune.experiments.listing.list_experiments", lambda repo: runs)
    out = tmp_path / "heatmap.html"
    grid = heatmap_from_experiments(
        tmp_path, x="model.lr", y="model.dropout", metric="val.acc", out=out
    )
    assert grid.cells == {(0.01, 0): Cell(0.1, 1), (0.01, 0.25): Cell(0.35, 1)}
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "left out 2 runs: 2 trained on other data (data.source=/photos/cats)",
        f"wrote {out}",
    ]


# DVCLive's per-epoch series, which dvc.yaml declares as the train stage's plots.
VAL_ACC = "plots/train/plots/metrics/val/acc.tsv"
VAL_LOSS = "plots/train/plots/metrics/val/loss.tsv"


@pytest.mark.slow
def test_queued_experiments_run_compare_and_make_heatmaps(baseline_clone):
    """The main loop's queue (two jobs), `dvc exp show` and `dvc plots diff` of its runs, and
    `visiontune heatmap` over them; and the sweep stage's own heatmap, a DVC plot."""
    repo = baseline_clone  # its sweep stage ran
    assert len(json.loads((repo.path / "plots" / "sweep" / "grid.json").read_text())) == 4
    plots = json.loads(repo.dvc("plots", "show", "--json").stdout)["data"]
    (plot,) = plots["plots/sweep/grid.json"]
    assert plot["type"] == "vega"
    assert plot["content"]["title"]["text"] == "sweep val.acc by model.lr and model.width"
    assert {(row["x"], row["y"]) for row in plot["content"]["data"]["values"]} == {
        (0.01, 8),
        (0.01, 16),
        (0.1, 8),
        (0.1, 16),
    }

    def heatmap(*args: str, check: bool = True):
        return repo.run(
            sys.executable, "-m", "visiontune", "heatmap", "--x", "model.lr", *args, check=check
        )

    nothing = heatmap("--y", "model.dropout", check=False)
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("error: no dvc experiments found; run some with")

    grid = ("-S", "model.lr=0.01,0.02", "-S", "model.dropout=0,0.25", "evaluate")
    repo.dvc("exp", "run", "--queue", *grid)  # up to evaluate: the heatmap reads val.acc
    # One cell of that 2-epoch grid again for 12 epochs: never averaged with it.
    long = ("-n", "long", "-S", "model.lr=0.01", "-S", "model.dropout=0", "-S", "train.epochs=12")
    repo.dvc("exp", "run", "--queue", *long, "evaluate")
    repo.start_queue(jobs=2)
    repo.wait_for_queue(timeout=300)

    rows = repo.experiments()
    assert len(rows) == 5 and "long" in rows, repo.read("queue", "status").stdout
    cells = {(r["params"]["model"]["lr"], r["params"]["model"]["dropout"]) for r in rows.values()}
    assert cells == {(0.01, 0), (0.01, 0.25), (0.02, 0), (0.02, 0.25)}
    for row in rows.values():
        assert row["metrics"]["metrics/evaluate.json"]["data"]["test"]["acc"] > 0.3
        assert row["metrics"]["metrics/train.json"]["data"]["val"]["acc"] > 0.3
    assert rows["long"]["params"]["train"]["epochs"] == 12
    assert rows["long"]["metrics"]["metrics/train.json"]["data"]["epochs"] == 12
    other = next(name for name in rows if name != "long")
    plots = json.loads(repo.dvc("plots", "diff", "long", other, "--json").stdout)["data"]
    for plot_id in (VAL_ACC, VAL_LOSS):
        (plot,) = [p for p in plots[plot_id] if p["type"] == "vega"]
        assert {row["rev"] for row in plot["content"]["data"]["values"]} == {"long", other}

    table = heatmap("--y", "model.dropout").stdout.splitlines()
    assert table[:2] == [
        "val.acc: mean (n=runs) per cell",
        "model.dropout \\ model.lr         0.01         0.02",
    ]
    assert [line.split()[0] for line in table[2:4]] == ["0", "0.25"]
    assert " ".join(table[2:4]).count("(n=1)") == 4
    assert table[4] == "left out 1 run: 1 trained 12 epochs (not 2)"
    html = (repo.path / "plots" / "heatmap.html").read_text()
    assert "plotly" in html and "model.dropout" in html
    assert "(4 experiments, 2 epochs each)" in html and "left out 1 run: 1 trained 12" in html

    long = heatmap("--y", "model.dropout", "--epochs", "12").stdout.splitlines()
    assert long[1].split() == ["model.dropout", "\\", "model.lr", "0.01"]
    assert long[2].split()[0] == "0" and long[2].endswith(" (n=1)")
    assert long[3:] == ["left out 4 runs: 4 trained 2 epochs (not 12)", "wrote plots/heatmap.html"]

    wrong_metric = heatmap("--y", "model.dropout", "--metric", "val.accuracy", check=False)
    assert wrong_metric.returncode == 1
    assert wrong_metric.stderr.startswith("error: unknown metric 'val.accuracy'; the experim")
    assert "test.acc" in wrong_metric.stderr
    wrong_param = heatmap("--y", "model.dropot", check=False)
    assert wrong_param.returncode == 1
    assert wrong_param.stderr.strip() == (
        "error: --y model.dropot is not a param of any experiment; did you mean model.dropout?"
    )
