"""Fitting a model, in this process or as one of several (``train.nproc``): epochs over the
train split, validation after each, early stopping, and a per-epoch callback that may stop
training (a tuner's pruner)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import Params
from visiontune.models.meta import ModelMeta
from visiontune.models.scoring import EvalResult
from visiontune.training.distributed import SINGLE, Group
from visiontune.training.parts import Splits, build_trainer


class TrainingDiverged(VisiontuneError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one epoch, named as DVCLive logs them."""

    epoch: int
    train_loss: float
    train_acc: float
    val: EvalResult

    def metrics(self) -> dict[str, float]:
        return {
            "train/loss": self.train_loss,
            "train/acc": self.train_acc,
            "val/loss": self.val.loss,
            "val/acc": self.val.acc,
        }


@dataclass(frozen=True)
class Pruned:
    """Training stopped by a tuner's pruner after ``epoch``, for ``reason``."""

    epoch: int
    reason: str


# Called after each epoch; a string it returns stops training there, as pruned for that reason.
EpochCallback = Callable[[EpochResult], str | None]


@dataclass
class FitResult:
    """A fitted model, its per-epoch history, the epoch whose weights it holds, and whether
    a pruner stopped it."""

    model: torch.nn.Module
    meta: ModelMeta
    history: list[EpochResult]
    kept: EpochResult
    pruned: Pruned | None = None

    def summary(self) -> dict[str, Any]:
        """Metrics of the kept epoch, nested as DVCLive nests them, plus epoch counts and,
        for a pruned run, ``pruned: {epoch, reason}``."""
        nested: dict[str, Any] = {}
        for name, value in self.kept.metrics().items():
            group, _, key = name.partition("/")
            nested.setdefault(group, {})[key] = value
        summary = {**nested, "epochs": len(self.history), "best_epoch": self.kept.epoch}
        if self.pruned is not None:
            summary["pruned"] = {"epoch": self.pruned.epoch, "reason": self.pruned.reason}
        return summary


@dataclass(frozen=True)
class Verdict:
    """What an epoch decides: whether its weights are the best so far (val/acc), and the
    reason a pruner stopped training after it (None: not pruned) or whether patience ran
    out."""

    best: bool
    pruned: str | None
    patience_out: bool


def fit(
    params: Params,
    prepared_dir: Path,
    on_epoch: EpochCallback | None = None,
    group: Group = SINGLE,
) -> FitResult:
    """Train ``params.model`` with ``params.train`` on ``prepared_dir``, as this process of
    ``group`` (alone by default).

    Calls ``on_epoch`` after each epoch; a reason it returns before the last epoch stops
    training there (pruned). With ``train.patience`` > 0 training also stops early, and the
    model keeps the best val/acc weights; otherwise it keeps the last epoch's. Raises
    TrainingDiverged when the loss is no longer finite. Validation computes as training
    does (``train.precision``, ``train.compile``); the model returned is the float32,
    uncompiled one. In a group, rank 0 decides divergence, pruning, patience and the best
    epoch and every process follows (:meth:`Group.decide`), so all stop at the same epoch;
    only the processes that write print progress.
    """
    cfg = params.train
    splits = Splits.load(params, prepared_dir, group)
    trainer = build_trainer(params, splits, group)
    model = trainer.model

    history: list[EpochResult] = []
    best: EpochResult | None = None
    best_state: dict[str, torch.Tensor] | None = None
    pruned: Pruned | None = None
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        desc = f"epoch {epoch}/{cfg.epochs}"
        loss, acc = trainer.epoch(splits.train, desc)
        if group.decide(not math.isfinite(loss)):
            raise TrainingDiverged(
                f"training diverged: train/loss is {loss} at epoch {epoch}; "
                f"try a lower model.lr (now {params.model.lr:g})"
            )
        val = trainer.evaluate(splits.val)
        result = EpochResult(epoch, loss, acc, val)
        history.append(result)
        stop = on_epoch(result) if on_epoch is not None else None
        if group.writes:
            _report(result, cfg.epochs, time.perf_counter() - start)
        new_best = best is None or val.acc > best.val.acc
        out = bool(cfg.patience) and epoch - (epoch if new_best else best.epoch) >= cfg.patience
        verdict = group.decide(Verdict(new_best, stop, out))
        if verdict.best:
            best = result
            if cfg.patience:
                best_state = copy.deepcopy(model.state_dict())
        if verdict.pruned is not None and epoch < cfg.epochs:  # the last epoch finished
            _say(group, f"pruned: {verdict.pruned}")
            pruned = Pruned(epoch, verdict.pruned)
            break
        if verdict.patience_out:
            _say(group, f"early stop: no val/acc gain for {cfg.patience} epochs")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    kept = best if cfg.patience and best is not None else history[-1]
    return FitResult(model=model, meta=splits.meta, history=history, kept=kept, pruned=pruned)


def _say(group: Group, line: str) -> None:
    if group.writes:
        tqdm.write(line)


def _report(result: EpochResult, epochs: int, seconds: float) -> None:
    values = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics().items())
    tqdm.write(f"epoch {result.epoch}/{epochs}  {values}  ({seconds:.1f} s)")
