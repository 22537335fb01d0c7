"""The training loop, the checkpoint it saves and the evaluation of it, on a small digits set."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from visiontune.config.params import Params, parse_params
from visiontune.data.batches import read_split
from visiontune.evaluation.evaluate import evaluate, per_class_scores
from visiontune.models.scoring import load_trained
from visiontune.training.fit import TrainingDiverged
from visiontune.training.train_stage import train


def small(**train: object) -> Params:
    """The shipped params (the code's defaults) on a small model, with ``train`` (and
    ``lr``) overridden."""
    lr = train.pop("lr", 0.01)
    return parse_params(
        {
            "model": {"lr": lr, "width": 8, "blocks": 2},
            "train": {"epochs": 3, "threads": 1, "batch_size": 32, **train},
        }
    )


def run(params: Params, prepared: Path, out: Path) -> dict:
    return train(
        params,
        prepared_dir=prepared,
        model_path=out / "model.pt",
        live_dir=out / "live",
        summary_path=out / "train.json",
    )


def series(out: Path, name: str) -> list[float]:
    path = out / "live" / "plots" / "metrics" / f"{name}.tsv"
    with path.open() as f:
        return [float(row[name.split("/")[1]]) for row in csv.DictReader(f, delimiter="\t")]


def test_loss_falls_and_every_output_is_written(prepared, tmp_path, capsys):
    summary = run(small(epochs=4), prepared, tmp_path)
    losses = series(tmp_path, "train/loss")
    assert len(losses) == 4
    assert losses[-1] < losses[0] * 0.7
    assert series(tmp_path, "val/acc")[-1] == summary["val"]["acc"]
    assert summary["epochs"] == 4 and summary["best_epoch"] == 4
    assert json.loads((tmp_path / "train.json").read_text()) == summary
    assert not (tmp_path / "live" / "metrics.json").exists()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 4 and "val/acc" in lines[0]

    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["classes"] == [str(i) for i in range(10)]
    assert ckpt["params"]["model"]["lr"] == 0.01
    assert len(ckpt["mean"]) == ckpt["channels"] == 1


def test_checkpoint_reloads_to_the_same_val_accuracy(prepared, tmp_path):
    summary = run(small(), prepared, tmp_path)
    trained = load_trained(tmp_path / "model.pt")
    images, labels = read_split(prepared, "val")
    assert trained.evaluate(images, labels, 64).acc == summary["val"]["acc"]


def test_same_params_same_metrics(prepared, tmp_path):
    params = small(crop=1, flip=True)
    first = run(params, prepared, tmp_path / "a")
    second = run(params, prepared, tmp_path / "b")
    assert first == second
    assert (
        run(
            dataclasses.replace(params, train=dataclasses.replace(params.train, seed=1)),
            prepared,
            tmp_path / "c",
        )
        != first
    )


def test_early_stopping_keeps_the_best_epoch(prepared, tmp_path):
    summary = run(small(epochs=40, patience=2, schedule="none"), prepared, tmp_path)
    assert summary["epochs"] < 40
    assert summary["epochs"] - summary["best_epoch"] == 2
    accs = series(tmp_path, "val/acc")
    assert summary["val"]["acc"] == max(accs) == accs[summary["best_epoch"] - 1]


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "sgd", "schedule": "cosine"},
        {"optimizer": "adam", "schedule": "none", "label_smoothing": 0.1},
        {"optimizer": "adamw", "schedule": "onecycle", "batch_size": 7},
    ],
)
def test_optimizers_and_schedules(prepared, tmp_path, options):
    """Each optimizer and schedule learns: in 6 epochs on 280 digits the train loss falls
    and val/acc is well above chance (0.1 for 10 classes; seen here: 0.55 to 0.95)."""
    summary = run(small(epochs=6, **options), prepared, tmp_path)
    losses = series(tmp_path, "train/loss")
    assert losses[-1] < 0.8 * losses[0]
    assert summary["val"]["acc"] >= 0.3


def test_divergence_is_a_clear_error(prepared, tmp_path):
    """Non-finite losses stop training with a one-line error (here: NaN inputs)."""
    broken = tmp_path / "prepared"
    shutil.copytree(prepared, broken)
    meta = json.loads((broken / "meta.json").read_text())
    meta["mean"] = [float("nan")]
    (broken / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        TrainingDiverged, match=r"train/loss is nan at epoch 1; try a lower model.lr"
    ):
        run(small(), broken, tmp_path)
    assert not (tmp_path / "model.pt").exists()
    assert not (tmp_path / "live" / "metrics.json").exists()


def test_evaluate_writes_test_metrics_and_plots(prepared, tmp_path):
    params = small()
    run(params, prepared, tmp_path)
    metrics = evaluate(
        params, tmp_path / "model.pt", prepared, tmp_path / "eval.json", tmp_path / "plots"
    )
    assert json.loads((tmp_path / "eval.json").read_text()) == metrics
    assert set(metrics["test"]) == {"acc", "loss", "macro_f1"}
    _, labels = read_split(prepared, "test")
    confusion = json.loads((tmp_path / "plots" / "confusion.json").read_text())
    assert len(confusion) == len(labels)
    hits = sum(row["actual"] == row["predicted"] for row in confusion)
    assert hits / len(confusion) == metrics["test"]["acc"]
    classes = json.loads((tmp_path / "plots" / "classes.json").read_text())
    assert [row["class"] for row in classes] == [str(i) for i in range(10)]
    assert sum(row["support"] for row in classes) == len(labels)


def test_missing_model_is_a_clear_error(prepared, tmp_path):
    with pytest.raises(Exception, match="not found: run `dvc repro train` first"):
        evaluate(small(), tmp_path / "none.pt", prepared, tmp_path / "e.json", tmp_path)


def test_per_class_scores_match_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    generator = torch.Generator().manual_seed(0)
    actual = torch.randint(0, 4, (200,), generator=generator)
    predicted = torch.where(torch.rand(200, generator=generator) < 0.6, actual, 3)
    rows = per_class_scores(actual, predicted, 5)
    expected = precision_recall_fscore_support(actual, predicted, labels=range(5), zero_division=0)
    for i, row in enumerate(rows):
        assert row["precision"] == pytest.approx(expected[0][i], abs=1e-6)
        assert row["recall"] == pytest.approx(expected[1][i], abs=1e-6)
        assert row["f1"] == pytest.approx(expected[2][i], abs=1e-6)
        assert row["support"] == expected[3][i]


def test_a_queued_run_survives_dvclive_s_race_on_its_step_signal(prepared, tmp_path, monkeypatch):
    """Queue workers share DVCLive's DVCLIVE_STEP_COMPLETED file; two experiments ending at
    once both see it and both remove it. The one that loses still saves its model."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # as dvc sets it for queued experiments
    seen = os.path.exists

    def exists_then_removed_by_the_other_run(path) -> bool:
        found = seen(path)
        if found and os.path.basename(path) == "DVCLIVE_STEP_COMPLETED":
            os.remove(path)  # the other experiment's end, between this one's check and remove
        return found

    monkeypatch.setattr(os.path, "exists", exists_then_removed_by_the_other_run)
    summary = run(small(epochs=1), prepared, tmp_path)
    assert summary["epochs"] == 1 and (tmp_path / "model.pt").is_file()
