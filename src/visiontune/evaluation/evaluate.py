"""The evaluate stage: test metrics, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visiontune.config.params import Params
from visiontune.config.paths import write_json
from visiontune.models.scoring import load_trained

EVAL_BATCH_SIZE = 512


def evaluate(
    params: Params, model_path: Path, prepared_dir: Path, metrics_path: Path, plots_dir: Path
) -> dict[str, Any]:
    """Score the trained model on the test split; write metrics and plot data; return metrics.

    ``metrics_path`` gets ``{"test": {"acc", "loss", "macro_f1"}}``; ``plots_dir`` gets
    ``confusion.json`` (one row per test image, for DVC's ``confusion`` template) and
    ``classes.json`` (precision, recall, F1 and support per class).
    """
    trained = load_trained(
        model_path, params.train.device, params.train.threads, params.train.cpu_kernels
    )
    result, labels = trained.score_split(
        prepared_dir, "test", EVAL_BATCH_SIZE, params.train.resident_mb
    )

    classes = trained.meta.classes
    actual = labels
    rows = per_class_scores(actual, result.predictions, len(classes))
    for row, name in zip(rows, classes, strict=True):
        row["class"] = name
    macro_f1 = sum(row["f1"] for row in rows) / len(rows)
    metrics = {"test": {"acc": result.acc, "loss": result.loss, "macro_f1": macro_f1}}

    plots_dir.mkdir(parents=True, exist_ok=True)
    confusion = [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(actual.tolist(), result.predictions.tolist(), strict=True)
    ]
    write_json(plots_dir / "confusion.json", confusion)
    write_json(plots_dir / "classes.json", rows)
    write_json(metrics_path, metrics)
    return metrics


def per_class_scores(
    actual: torch.Tensor, predicted: torch.Tensor, num_classes: int
) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support for each class index (0 where undefined)."""
    matrix = torch.bincount(actual * num_classes + predicted, minlength=num_classes**2)
    matrix = matrix.view(num_classes, num_classes).double()
    hits = matrix.diag()
    support = matrix.sum(1)
    predicted_count = matrix.sum(0)
    precision = torch.where(predicted_count > 0, hits / predicted_count.clamp_min(1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp_min(1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), 0.0)
    return [
        {
            "precision": round(precision[i].item(), 6),
            "recall": round(recall[i].item(), 6),
            "f1": round(f1[i].item(), 6),
            "support": int(support[i].item()),
        }
        for i in range(num_classes)
    ]
