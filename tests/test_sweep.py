"""The sweep stage's library function on a small digits set: the grid, the best cell, failures,
and the store of cell results that lets a sweep skip cells it has trained before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import Params, parse_params, with_overrides
from visiontune.config.paths import dvc_cache_dir
from visiontune.experiments.sweep import run_sweep
from visiontune.experiments.sweep_cache import CellStore
from visiontune.training.fit import fit

COLUMNS = {"x", "y", "value", "val_acc", "val_loss", "train_acc", "train_loss", "best"}


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


def sweep(
    params: Params, prepared: Path, out: Path, store: CellStore | None = None
) -> tuple[dict, list[dict]]:
    summary = run_sweep(params, prepared, out / "sweep", store)
    rows = json.loads((out / "sweep" / "grid.json").read_text())
    marked = [(row["x"], row["y"], row["value"]) for row in rows if row["best"]]
    assert marked == ([] if summary["best"] is None else [tuple(summary["best"].values())])
    return summary, rows


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
        "best": {"model.lr": best["x"], "model.width": best["y"], metric: best["value"]},
        "cells": 4,
        "failed": 0,
        "reused": 0,
    }
    assert [row["best"] for row in rows] == [row is best for row in rows]
    # Each cell is a plain fit for sweep.epochs with the same seed and no early stopping.
    cell = with_overrides(
        params, {"model.lr": 0.03, "model.width": 4, "train.epochs": 1, "train.patience": 0}
    )
    assert fit(cell, prepared).summary()["val"]["acc"] == rows[2]["val_acc"]


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

    assert summary["cells"] == 4 and summary["failed"] == 1
    assert summary["best"]["model.lr"] == 0.05
    failed = [row for row in rows if row["value"] is None]
    expected = dict.fromkeys(COLUMNS - {"x", "y", "best"}) | {"x": 10, "y": False, "best": False}
    assert failed == [expected]
    out = capsys.readouterr().out
    assert "cell 4/4 model.lr=10 model.batchnorm=False: failed, training diverged" in out
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["grid.json"]


def test_the_same_params_give_the_same_files(prepared, tmp_path):
    params = sweep_params(x_values=[0.01], y_values=[4, 8])
    sweep(params, prepared, tmp_path / "a")
    sweep(params, prepared, tmp_path / "b")
    grid = "sweep/grid.json"
    assert (tmp_path / "a" / grid).read_bytes() == (tmp_path / "b" / grid).read_bytes()


def test_stored_cells_are_reused_only_where_nothing_they_depend_on_changed(
    prepared, tmp_path, capsys
):
    """The x axis is model.lr: changing model.lr re-trains no cell, model.dropout every cell."""
    store = CellStore(tmp_path / "store", prepared)
    params = sweep_params()
    first, rows = sweep(params, prepared, tmp_path / "first", store)
    assert first["reused"] == 0
    capsys.readouterr()

    again, rows_again = sweep(params, prepared, tmp_path / "again", store)
    assert again == {**first, "reused": 4} and rows_again == rows
    assert all(line.endswith("(stored)") for line in capsys.readouterr().out.splitlines())
    first_bytes = (tmp_path / "first" / "sweep" / "grid.json").read_bytes()
    assert (tmp_path / "again" / "sweep" / "grid.json").read_bytes() == first_bytes

    new_lr = with_overrides(params, {"model.lr": 0.5})
    assert sweep(new_lr, prepared, tmp_path / "lr", store)[0]["reused"] == 4

    new_dropout = with_overrides(params, {"model.dropout": 0.3})
    changed, changed_rows = sweep(new_dropout, prepared, tmp_path / "dropout", store)
    assert changed["reused"] == 0
    # What the store now holds for the new dropout is what training gives, cell by cell.
    cell = with_overrides(
        new_dropout, {"model.lr": 0.03, "model.width": 4, "train.epochs": 1, "train.patience": 0}
    )
    assert fit(cell, prepared).summary()["val"]["acc"] == changed_rows[2]["val_acc"]


def test_a_cell_key_covers_every_param_and_the_data(prepared, tmp_path, make_image_folder):
    from visiontune.data.download import download
    from visiontune.data.preprocess import prepare

    store = CellStore(tmp_path / "store", prepared)
    params = sweep_params()
    keys = {
        store.key(with_overrides(params, {key: value}))
        for key, value in [
            ("model.lr", 0.5),
            ("model.blocks", 1),
            ("train.seed", 1),
            ("train.threads", 2),
            ("train.device", "cpu"),
            ("train.epochs", 2),
        ]
    }
    assert len(keys | {store.key(params)}) == 7
    # A cell trains in one process, whatever the train stage's processes.
    processes = {"train.nproc": 2, "train.sync_bn": False}
    assert store.key(with_overrides(params, processes)) == store.key(params)
    assert store.key(params) == CellStore(tmp_path / "elsewhere", prepared).key(params)

    download(str(make_image_folder(tmp_path / "images", ["a", "b"], 10)), tmp_path / "raw")
    other = tmp_path / "prepared"
    prepare(tmp_path / "raw", other, params.data)
    assert CellStore(tmp_path / "store", other).key(params) != store.key(params)


def test_a_cell_key_covers_the_content_of_its_weights_file(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a repository root: weights/ is relative to it
    (tmp_path / "weights").mkdir()
    params = sweep_params(model={"name": "resnet18", "weights": "w.pt"})
    keys = [CellStore(tmp_path / "store", prepared).key(params)]
    for content in (b"first", b"second"):
        (tmp_path / "weights" / "w.pt").write_bytes(content)
        keys.append(CellStore(tmp_path / "store", prepared).key(params))
    assert len(set(keys)) == 3


def test_an_unreadable_stored_cell_is_trained_again(prepared, tmp_path):
    store = CellStore(tmp_path / "store", prepared)
    params = sweep_params(x_values=[0.01], y_values=[4])
    _, rows = sweep(params, prepared, tmp_path / "a", store)
    (entry,) = (tmp_path / "store").rglob("*.json")
    entry.write_text("{not json")
    summary, rows_again = sweep(params, prepared, tmp_path / "b", store)
    assert summary["reused"] == 0 and rows_again == rows
    assert json.loads(entry.read_text())["metrics"]["val.acc"] == rows[0]["val_acc"]


def test_the_store_lives_in_the_dvc_cache_the_config_names(tmp_path):
    root = tmp_path / "repo"
    (root / ".dvc").mkdir(parents=True)
    assert dvc_cache_dir(root) == root / ".dvc" / "cache"
    (root / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n['remote \"storage\"']\n    url = gs://b/p\n"
    )
    assert dvc_cache_dir(root) == root / ".dvc" / "cache"
    # DVC's temp and queued experiments point their copy at the original repository's cache.
    (root / ".dvc" / "config.local").write_text(f"[cache]\ndir = {tmp_path / 'main-cache'}\n")
    assert dvc_cache_dir(root) == tmp_path / "main-cache"
    (root / ".dvc" / "config.local").write_text("[cache]\ndir = ../../shared-cache\n")
    assert dvc_cache_dir(root) == tmp_path / "shared-cache"


def test_a_sweep_without_prepared_data_says_what_to_run(tmp_path):
    with pytest.raises(
        VisiontuneError, match=r"train-images\.npy not found; run `dvc repro preprocess`"
    ):
        CellStore(tmp_path / "store", tmp_path / "missing")


def test_a_cell_key_covers_the_code_that_trains_it_and_no_other(prepared):
    from visiontune.experiments.sweep_cache import _context

    code = set(_context(prepared)["code"])
    trains = {"experiments/sweep.py", "training/fit.py", "models/factory.py", "data/batches.py"}
    assert trains | {"data/prepared.py"} <= code  # and the reader of the prepared splits
    assert not code & {"serving/app.py", "experiments/report.py", "cli.py", "tuning/__init__.py"}
