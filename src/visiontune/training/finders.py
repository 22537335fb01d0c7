"""Finders that suggest params before a run: ``model.lr`` (LR range test) and batch size.

Both train a fresh model from params on the prepared train split, with the train stage's
optimizer, augmentation and normalisation, and print the ``dvc exp run -S`` that uses
their suggestion. plotly is imported only when the LR plot is written.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.pages import write_plotly_page
from visiontune.config.params import Params
from visiontune.training.parts import Splits, build_trainer
from visiontune.training.trainer import Trainer

SMOOTHING = 0.98  # EMA factor of the smoothed loss (fastai's and Lightning's default)
DIVERGED = 4.0  # the LR test stops once the smoothed loss exceeds this multiple of its best
SKIP_START = 10  # first points left out of the suggestion: the EMA is still noisy there
WITHIN = 0.05  # batch sizes this close to the fastest count as equally fast


@dataclass(frozen=True)
class LrFindResult:
    """The LR range test: the lr of each step, its raw and smoothed loss, the suggestion."""

    lrs: list[float]
    raw_losses: list[float]
    losses: list[float]
    suggestion: float
    stopped_early: bool


@dataclass(frozen=True)
class BatchSizeResult:
    """Training throughput at one batch size; ``skipped`` says why it was not measured."""

    batch_size: int
    images_per_s: float | None = None
    skipped: str = ""
    suggested: bool = False


def lr_find(
    params: Params,
    prepared_dir: Path,
    *,
    out: Path,
    min_lr: float,
    max_lr: float,
    steps: int = 100,
) -> LrFindResult:
    """Leslie Smith's LR range test, as fastai runs it; write the plot to ``out``.

    Trains a fresh model for ``steps`` mini-batches (shuffled train batches, cycled) while
    the lr grows exponentially from ``min_lr`` to ``max_lr``, recording the bias-corrected
    exponential moving average of the loss; stops early once that exceeds 4x its best.
    Suggests the lr of the steepest descent of the smoothed loss against log(lr), looked for
    from the 11th step to the loss minimum (fastai's ``steep``, Lightning's default rule).
    """
    if min_lr <= 0:
        raise VisiontuneError(f"--min-lr must be > 0, got {min_lr:g}")
    if max_lr <= min_lr:
        raise VisiontuneError(f"--max-lr must be > --min-lr, got {max_lr:g} <= {min_lr:g}")
    if steps < 2:
        raise VisiontuneError(f"steps must be >= 2, got {steps}")
    _check_batch_size(params.train.batch_size, "train.batch_size")
    data = Splits.load(params, prepared_dir)
    trainer = _trainer(params, data)
    schedule = np.geomspace(min_lr, max_lr, steps).tolist()
    lrs, raw, smoothed = _range_test(trainer, data, schedule)
    result = LrFindResult(lrs, raw, smoothed, _steepest(lrs, smoothed), len(lrs) < steps)
    _plot_lr(result, out)
    _print_lr(result, params, out)
    return result


def batch_size_find(
    params: Params, prepared_dir: Path, *, candidates: list[int], steps: int = 5
) -> list[BatchSizeResult]:
    """Images per second of training (forward, backward, step) at each candidate batch size.

    Each size trains a fresh model for one warm-up step, then ``steps`` timed steps. Sizes
    larger than the train split or that run out of memory are skipped. Suggests the
    smallest size within 5% of the fastest: it is as fast in practice, and smaller batches
    give more optimizer steps per epoch and tend to generalise better.
    """
    if not candidates:
        raise VisiontuneError("--candidates needs at least one batch size")
    for size in candidates:
        _check_batch_size(size, "--candidates")
    if steps < 1:
        raise VisiontuneError(f"steps must be >= 1, got {steps}")
    data = Splits.load(params, prepared_dir)
    n = len(data.train)
    results = []
    for size in sorted(set(candidates)):
        if size > n:
            results.append(BatchSizeResult(size, skipped=f"larger than the train split ({n})"))
            continue
        try:
            results.append(BatchSizeResult(size, _throughput(params, data, size, steps)))
        except RuntimeError as exc:  # CUDA's OutOfMemoryError is a RuntimeError too
            if not _out_of_memory(exc):
                raise
            results.append(BatchSizeResult(size, skipped="out of memory"))
        _release(data.device)
    results = _mark_suggestion(results)
    _print_batch_sizes(results, params, data.device)
    return results


def _check_batch_size(size: int, name: str) -> None:
    """Batches of one image cannot be batch-normalised in training mode."""
    if size < 2:
        raise VisiontuneError(f"{name} must be >= 2 to measure training, got {size}")


def _trainer(params: Params, data: Splits, batch_size: int | None = None) -> Trainer:
    """A freshly seeded model and the train stage's optimizer for it, with no schedule."""
    cfg = params.train
    cfg = dataclasses.replace(cfg, schedule="none", batch_size=batch_size or cfg.batch_size)
    return build_trainer(dataclasses.replace(params, train=cfg), data)


def _range_test(
    trainer: Trainer, data: Splits, schedule: list[float]
) -> tuple[list[float], list[float], list[float]]:
    """Train one batch per lr of ``schedule``; the lrs reached, raw and smoothed losses."""
    batch_size = min(trainer.cfg.batch_size, len(data.train))
    batches = data.train.full_batches(batch_size, trainer.generator)
    lrs, raw, smoothed = [], [], []
    average, best = 0.0, math.inf
    for step, lr in enumerate(schedule):
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        loss = trainer.step(next(batches))[1].item()
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smooth = average / (1 - SMOOTHING ** (step + 1))
        if not math.isfinite(smooth):
            break
        lrs.append(lr)
        raw.append(loss)
        smoothed.append(smooth)
        best = min(best, smooth)
        if smooth > DIVERGED * best:
            break
    if not lrs:
        raise VisiontuneError(f"the train loss is not finite even at lr {schedule[0]:g}")
    return lrs, raw, smoothed


def _steepest(lrs: list[float], losses: list[float]) -> float:
    """The lr where the loss falls fastest against log(lr), before the loss minimum.

    Falls back to the lr of the minimum when too few points lie before it.
    """
    end = int(np.argmin(losses)) + 1
    start = SKIP_START if end - SKIP_START >= 3 else 0
    if end - start < 2:
        return lrs[end - 1]
    slope = np.gradient(np.asarray(losses[start:end]), np.log(lrs[start:end]))
    return lrs[start + int(np.argmin(slope))]


def _throughput(params: Params, data: Splits, batch_size: int, steps: int) -> float:
    """Images per second over ``steps`` training steps, after one untimed warm-up step."""
    trainer = _trainer(params, data, batch_size)
    batches = data.train.full_batches(batch_size, trainer.generator)
    trainer.step(next(batches))
    _synchronize(data.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(next(batches))
    _synchronize(data.device)
    return batch_size * steps / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock time measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _out_of_memory(exc: RuntimeError) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA, MPS or CPU allocator)."""
    text = str(exc)
    return (
        isinstance(exc, torch.cuda.OutOfMemoryError)
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def _release(device: torch.device) -> None:
    """Return cached GPU memory freed by the last measurement, for the next size."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _mark_suggestion(results: list[BatchSizeResult]) -> list[BatchSizeResult]:
    """``results`` with the smallest batch size within 5% of the fastest marked."""
    measured = [r for r in results if r.images_per_s is not None]
    if not measured:
        return results
    fastest = max(r.images_per_s for r in measured)
    pick = min(r.batch_size for r in measured if r.images_per_s >= (1 - WITHIN) * fastest)
    return [dataclasses.replace(r, suggested=r.batch_size == pick) for r in results]


def _plain(value: float) -> str:
    """``value`` to 2 significant digits without an exponent (``0.00031``), for ``-S``."""
    return np.format_float_positional(float(f"{value:.2g}"), trim="-")


def _plot_lr(result: LrFindResult, out: Path) -> None:
    """Write the smoothed (and raw) loss against log lr, suggestion marked, as HTML."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(x=result.lrs, y=result.raw_losses, name="loss", opacity=0.3)
    fig.add_scatter(x=result.lrs, y=result.losses, name="smoothed loss")
    suggested = result.lrs.index(result.suggestion)
    fig.add_scatter(
        x=[result.suggestion],
        y=[result.losses[suggested]],
        mode="markers+text",
        marker={"size": 12, "symbol": "x"},
        text=[f"suggested {_plain(result.suggestion)}"],
        textposition="top right",
        name="suggested model.lr",
    )
    fig.update_layout(
        title="LR range test", xaxis={"type": "log", "title": "lr"}, yaxis_title="train loss"
    )
    write_plotly_page(fig, out)


def _print_lr(result: LrFindResult, params: Params, out: Path) -> None:
    lr = _plain(result.suggestion)
    print(
        f"lr range test: {len(result.lrs)} steps of {params.train.optimizer}, "
        f"lr {_plain(result.lrs[0])} to {_plain(result.lrs[-1])}"
        + (" (stopped: smoothed loss above 4x its best)" if result.stopped_early else "")
    )
    print(f"plot: {out}")
    print(f"suggested model.lr: {lr} (steepest descent of the smoothed loss)")
    print(f"use it: dvc exp run -S model.lr={lr}")


def _print_batch_sizes(
    results: list[BatchSizeResult], params: Params, device: torch.device
) -> None:
    print(f"training throughput on {device} ({params.model.name}, {params.train.optimizer})")
    print(f"{'batch size':>10}  {'images/s':>10}  {'relative':>8}")
    fastest = max((r.images_per_s or 0.0 for r in results), default=0.0)
    for r in results:
        print(f"{r.batch_size:>10}  {_cells(r, fastest)}")
    pick = next((r.batch_size for r in results if r.suggested), None)
    if pick is None:
        raise VisiontuneError("no candidate batch size could be measured; try smaller ones")
    print(f"suggested train.batch_size: {pick} (the smallest within 5% of the fastest)")
    print(f"use it: dvc exp run -S train.batch_size={pick}")
    print(
        "a different batch size usually wants a different lr: "
        f"visiontune lr-find --set train.batch_size={pick}"
    )


def _cells(result: BatchSizeResult, fastest: float) -> str:
    """The images/s and relative columns of one table row, or why it was skipped."""
    if result.images_per_s is None:
        return f"skipped: {result.skipped}"
    mark = "  <- suggested" if result.suggested else ""
    return f"{result.images_per_s:>10.0f}  {result.images_per_s / fastest:>8.2f}{mark}"
