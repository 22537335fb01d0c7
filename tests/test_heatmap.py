"""Heatmaps: averaging repeated cells, the text table and HTML, and `visiontune heatmap`
over real queued dvc experiments (with the sweep stage and its DVC plot on the way)."""

from __future__ import annotations

import json
import math
import sys

import pytest

from visiontune.heatmap import Cell, aggregate, write_heatmap

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


@pytest.mark.slow
def test_heatmap_of_queued_experiments_and_of_the_sweep_stage(baseline_clone):
    repo = baseline_clone
    assert "Running stage 'sweep'" in repo.dvc("repro").stdout
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
    repo.commit("baseline")

    def heatmap(*args: str, check: bool = True):
        return repo.run(
            sys.executable, "-m", "visiontune", "heatmap", "--x", "model.lr", *args, check=check
        )

    nothing = heatmap("--y", "model.dropout", check=False)
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("error: no dvc experiments found; run some with")

    repo.dvc("exp", "run", "--queue", "-S", "model.lr=0.01,0.02", "-S", "model.dropout=0,0.25")
    repo.start_queue(jobs=2)
    repo.wait_for_queue(timeout=300)

    table = heatmap("--y", "model.dropout").stdout.splitlines()
    assert table[:2] == [
        "val.acc: mean (n=runs) per cell",
        "model.dropout \\ model.lr         0.01         0.02",
    ]
    assert [line.split()[0] for line in table[2:4]] == ["0", "0.25"]
    assert " ".join(table[2:4]).count("(n=1)") == 4
    html = (repo.path / "plots" / "heatmap.html").read_text()
    assert "plotly" in html and "model.dropout" in html

    wrong_metric = heatmap("--y", "model.dropout", "--metric", "val.accuracy", check=False)
    assert wrong_metric.returncode == 1
    assert wrong_metric.stderr.startswith("error: unknown metric 'val.accuracy'; the experim")
    assert "test.acc" in wrong_metric.stderr
    wrong_param = heatmap("--y", "model.dropot", check=False)
    assert wrong_param.returncode == 1
    assert wrong_param.stderr.strip() == (
        "error: --y model.dropot is not a param of any experiment; did you mean model.dropout?"
    )
