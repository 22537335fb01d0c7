"""``visiontune export``: the trained model as ONNX (optionally int8), checked against torch.

The float export must agree with torch on the test split (same labels, probabilities within
``FLOAT_TOLERANCE``) or the command fails and writes nothing. Size, test accuracy, label
agreement with torch and latency (median of repeated runs in this process, same thread
count for torch and onnxruntime) of every variant are returned, printed as a table and
written to a metrics JSON file.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.paths import write_json
from visiontune.data.batches import read_split
from visiontune.models.meta import ModelMeta
from visiontune.models.onnx_model import OnnxModel, export_onnx, quantize_onnx, with_normalisation
from visiontune.models.scoring import load_trained

FLOAT_TOLERANCE = 1e-4  # max |p_onnx - p_torch| accepted for the float export
CALIBRATION_IMAGES = 300  # train images that calibrate the int8 activation ranges
BATCH = 256  # images per inference call; and in the batch-latency measurement
LATENCY_BUDGET_S = 0.5  # time spent timing one variant at one batch size (at least 5 runs)
LATENCY_MAX_RUNS = 200


def export_model(
    model_path: Path,
    out_path: Path,
    prepared_dir: Path,
    metrics_path: Path,
    *,
    quantize: bool,
    threads: int = 0,
) -> dict[str, Any]:
    """Export ``model_path`` to ``out_path`` (int8 if ``quantize``), compare, write metrics.

    ``threads`` > 0 sets torch's and onnxruntime's threads (0: torch's default for both).
    Returns the metrics written to ``metrics_path``: per variant (torch, onnx, int8)
    size_bytes, acc, latency_1_ms, latency_batch_ms; for the ONNX ones also agreement
    (fraction of test labels equal to torch's) and max_prob_diff.
    """
    if out_path.suffix != ".onnx":
        raise VisiontuneError(f"the ONNX file's name must end in .onnx, got {out_path}")
    trained = load_trained(model_path, "cpu", threads)
    threads, meta = torch.get_num_threads(), trained.meta
    images, labels = _split_for(prepared_dir, "test", meta)
    reference = with_normalisation(trained)

    @torch.inference_mode()
    def run_torch(x: np.ndarray) -> np.ndarray:
        return reference(torch.from_numpy(x)).softmax(1).numpy()

    test, batch, labels_np = images.numpy(), images[:BATCH].numpy(), labels.numpy()
    torch_probs = _batched(run_torch, test)
    results = {"torch": _scores(model_path, torch_probs, labels_np, run_torch, test, batch)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".export-") as tmp:
        float_path = Path(tmp) / "model.onnx"
        export_onnx(model_path, float_path)
        results["onnx"] = _onnx_scores(float_path, threads, torch_probs, labels_np, test, batch)
        _check_float(results["onnx"], len(labels_np))
        final = float_path
        if quantize:
            final = Path(tmp) / "model.int8.onnx"
            train, _ = _split_for(prepared_dir, "train", meta)
            quantize_onnx(float_path, final, _calibration(train, meta.params.train.seed))
            results["int8"] = _onnx_scores(final, threads, torch_probs, labels_np, test, batch)
        os.replace(final, out_path)
    metrics = {"test_images": len(labels_np), "batch": len(batch), "threads": threads, **results}
    write_json(metrics_path, metrics)
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics as a table, one column per variant; changes relative to torch."""
    base, count = metrics["torch"], metrics["test_images"]
    columns = [
        _column(name, metrics[name], base, count)
        for name in ("torch", "onnx", "int8")
        if name in metrics
    ]
    labels = [
        "",
        "size",
        "test acc",
        "labels as torch",
        "max prob diff",
        "latency 1 image",
        f"latency {metrics['batch']} images",
    ]
    widths = [max(map(len, column)) + 3 for column in columns]
    lines = [
        f"test split: {count} images; latency: median of repeated runs, "
        f"{metrics['threads']} thread(s); (x) and (+/-): change from torch",
        "",
    ]
    for row, label in enumerate(labels):
        cells = "".join(
            f"{column[row]:<{width}}" for column, width in zip(columns, widths, strict=True)
        )
        lines.append(f"{label:<20}{cells}".rstrip())
    return "\n".join(lines)


def _column(name: str, scores: dict[str, Any], base: dict[str, Any], count: int) -> list[str]:
    """One variant's cells, top to bottom, with changes from ``base`` unless it is base."""
    is_base = scores is base

    def times(key: str, text: str, scale: float = 1.0) -> str:
        cell = text.format(scores[key] * scale)
        return cell if is_base else f"{cell} ({scores[key] / base[key]:.2f}x)"

    acc = f"{scores['acc']:.4f}"
    if is_base:
        agreement, diff = "-", "-"
    else:
        acc += f" ({scores['acc'] - base['acc']:+.4f})"
        agreement = f"{round(scores['agreement'] * count)}/{count}"
        diff = f"{scores['max_prob_diff']:.1e}"
    return [
        name,
        times("size_bytes", "{:.1f} KB", 1 / 1024),
        acc,
        agreement,
        diff,
        times("latency_1_ms", "{:.3f} ms"),
        times("latency_batch_ms", "{:.3f} ms"),
    ]


def _split_for(
    prepared_dir: Path, split: str, meta: ModelMeta
) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared split, checked to have the image shape the model was trained on."""
    images, labels = read_split(prepared_dir, split)
    if not len(images):
        raise VisiontuneError(f"the {split} split in {prepared_dir} is empty")
    expected = (meta.channels, meta.image_size, meta.image_size)
    if tuple(images.shape[1:]) != expected:
        raise VisiontuneError(
            f"{prepared_dir} holds images of shape {tuple(images.shape[1:])} but the model "
            f"takes {expected}: run `dvc repro preprocess` with the model's data params"
        )
    return images, labels


def _calibration(train: torch.Tensor, seed: int) -> np.ndarray:
    """Up to CALIBRATION_IMAGES train images, a seeded random choice."""
    rng = np.random.default_rng(seed)
    count = min(CALIBRATION_IMAGES, len(train))
    return train.numpy()[np.sort(rng.choice(len(train), count, replace=False))]


def _onnx_scores(
    path: Path,
    threads: int,
    torch_probs: np.ndarray,
    labels: np.ndarray,
    test: np.ndarray,
    batch: np.ndarray,
) -> dict[str, Any]:
    model = OnnxModel(path, threads=threads)
    probs = _batched(model.probabilities, test)
    scores = _scores(path, probs, labels, model.probabilities, test, batch)
    return scores | {
        "agreement": float((probs.argmax(1) == torch_probs.argmax(1)).mean()),
        "max_prob_diff": float(np.abs(probs - torch_probs).max()),
    }


def _scores(
    path: Path,
    probs: np.ndarray,
    labels: np.ndarray,
    run: Callable[[np.ndarray], object],
    test: np.ndarray,
    batch: np.ndarray,
) -> dict[str, Any]:
    return {
        "size_bytes": path.stat().st_size,
        "acc": float((probs.argmax(1) == labels).mean()),
        "latency_1_ms": _median_ms(lambda: run(test[:1])),
        "latency_batch_ms": _median_ms(lambda: run(batch)),
    }


def _batched(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """``run`` on ``images`` BATCH at a time, the outputs concatenated."""
    return np.concatenate([run(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def _check_float(scores: dict[str, Any], count: int) -> None:
    if scores["agreement"] < 1 or scores["max_prob_diff"] > FLOAT_TOLERANCE:
        differ = round((1 - scores["agreement"]) * count)
        raise VisiontuneError(
            f"the ONNX export disagrees with torch on the test split: {differ} of {count} "
            f"labels differ, max probability difference {scores['max_prob_diff']:.2e} "
            f"(tolerance {FLOAT_TOLERANCE:g}); nothing written"
        )


def _median_ms(call: Callable[[], object]) -> float:
    """Median wall time of ``call`` in ms: one warm-up, then at least 5 runs within budget."""
    call()
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_BUDGET_S
    while len(times) < LATENCY_MAX_RUNS and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
