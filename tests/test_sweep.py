"""The sweep stage's library function on a small digits set: the grid, the best cell, failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from visiontune.params import Params, parse_params, with_overrides
from visiontune.sweep import run_sweep
from visiontune.training import fit

COLUMNS = {"x", "y", "value", "val_acc", "val_loss", "train_acc", "train_loss"}


def sweep_params(model: dict | None = None, train: dict | None = None, **sweep) -> Params:
    """Small-model params with a 2x2 grid of 1-epoch cells, overridden by the arguments."""
    grid = {"x": "model.lr", "x_values": [0.003, 0.03], "y": "model.width", "y_values": [4, 8]}
    return parse_params(
        {
            "model": {"width": 8, **(model or {})},
            "train": {"threads": 1, "batch_size": 32, "epochs": 5, "patience": 2, **(train or {})},
            "sweep": {**grid, "epochs": 1, **sweep},
        }
    )


def sweep(params: Params, prepared: Path, out: Path) -> tuple[dict, list[dict]]:
    summary = run_sweep(params, prepared, out / "sweep", out / "sweep.json")
    assert json.loads((out / "sweep.json").read_text()) == summary
    return summary, json.loads((out / "sweep" / "grid.json").read_text())


@pytest.mark.parametrize(("metric", "pick"), [("val.acc", max), ("val.loss", min)])
def test_every_cell_is_trained_alike_and_the_best_is_kept(prepared, tmp_path, capsys, metric, pick):
    params = sweep_params(metric=metric)
    summary, rows = sweep(params, prepared, tmp_path)
    lines = capsys.readouterr().out.splitlines()

    assert len(lines) == 4, lines  # one per cell, none per epoch
    assert re.fullmatch(rf"cell 3/4 model.lr=0.03 model.width=4: {metric} \d\.\d{{4}}", lines[2])
    assert [(row["x"], row["y"]) for row in rows] == [(0.003, 4), (0.003, 8), (0.03, 4), (0.03, 8)]
    assert all(set(row) == COLUMNS for row in rows)
    assert all(row["value"] == row[metric.replace(".", "_")] for row in rows)
    best = pick(rows, key=lambda row: row["value"])
    assert summary == {
        "sweep": {
            "best": {"model.lr": best["x"], "model.width": best["y"], metric: best["value"]},
            "cells": 4,
            "failed": 0,
        }
    }
    # Each cell is a plain fit for sweep.epochs with the same seed and no early stopping.
    cell = with_overrides(
        params, {"model.lr": 0.03, "model.width": 4, "train.epochs": 1, "train.patience": 0}
    )
    assert fit(cell, prepared).summary()["val"]["acc"] == rows[2]["val_acc"]

    html = (tmp_path / "sweep" / "heatmap.html").read_text()
    assert "plotly" in html and "model.lr" in html and "model.width" in html


def test_a_diverging_cell_is_recorded_as_failed(prepared, tmp_path, capsys):
    """SGD at lr 10 without batchnorm blows up to NaN; the other cells still train."""
    params = sweep_params(
        model={"residual": True},
        train={"optimizer": "sgd", "schedule": "none", "batch_size": 8},
        x_values=[0.05, 10],
        y="model.batchnorm",
        y_values=[True, False],
    )
    summary, rows = sweep(params, prepared, tmp_path)

    assert summary["sweep"]["cells"] == 4 and summary["sweep"]["failed"] == 1
    assert summary["sweep"]["best"]["model.lr"] == 0.05
    failed = [row for row in rows if row["value"] is None]
    assert failed == [dict.fromkeys(COLUMNS - {"x", "y"}) | {"x": 10, "y": False}]
    out = capsys.readouterr().out
    assert "cell 4/4 model.lr=10 model.batchnorm=False: failed, training diverged" in out
    assert (tmp_path / "sweep" / "heatmap.html").exists()


def test_the_same_params_give_the_same_files(prepared, tmp_path):
    params = sweep_params(x_values=[0.01], y_values=[4, 8])
    sweep(params, prepared, tmp_path / "a")
    sweep(params, prepared, tmp_path / "b")
    for name in ("sweep.json", "sweep/grid.json", "sweep/heatmap.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
