"""The train stage: fit a model on the prepared split, log per-epoch metrics with DVCLive."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import Params, TrainParams
from visiontune.config.paths import write_json
from visiontune.data.batches import Normalizer, augment, index_batches
from visiontune.data.prepared import load_meta, load_split
from visiontune.models.checkpoint import save_checkpoint
from visiontune.models.meta import ModelMeta
from visiontune.models.runtime import configure, resolve_device
from visiontune.models.scoring import EvalResult, evaluate_split

# The phases of a training step, in order; Trainer.phase wraps each (the profiler labels them).
PHASES = ("data/augment", "forward", "backward", "optimizer step")


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


def fit(
    params: Params,
    prepared_dir: Path,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train ``params.model`` with ``params.train`` on ``prepared_dir``, in this process.

    Calls ``on_epoch`` after each epoch; a reason it returns before the last epoch stops
    training there (pruned). With ``train.patience`` > 0 training also stops early, and the
    model keeps the best val/acc weights; otherwise it keeps the last epoch's. Raises
    TrainingDiverged when the loss is no longer finite.
    """
    cfg = params.train
    train = TrainSplit.load(params, prepared_dir)
    trainer = train.new_trainer(params)
    model, meta, normalize = trainer.model, train.meta, train.normalize
    x_val, y_val = (t.to(train.device) for t in load_split(prepared_dir, "val"))

    history: list[EpochResult] = []
    best: EpochResult | None = None
    best_state: dict[str, torch.Tensor] | None = None
    pruned: Pruned | None = None
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        desc = f"epoch {epoch}/{cfg.epochs}"
        loss, acc = trainer.epoch(train.images, train.labels, normalize, desc)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged: train/loss is {loss} at epoch {epoch}; "
                f"try a lower model.lr (now {params.model.lr:g})"
            )
        val = evaluate_split(model, x_val, y_val, normalize, 2 * cfg.batch_size)
        result = EpochResult(epoch, loss, acc, val)
        history.append(result)
        stop = on_epoch(result) if on_epoch is not None else None
        _report(result, cfg.epochs, time.perf_counter() - start)
        if best is None or val.acc > best.val.acc:
            best = result
            if cfg.patience:
                best_state = copy.deepcopy(model.state_dict())
        if stop is not None and epoch < cfg.epochs:  # the last epoch finished its budget
            tqdm.write(f"pruned: {stop}")
            pruned = Pruned(epoch, stop)
            break
        if cfg.patience and epoch - best.epoch >= cfg.patience:
            tqdm.write(f"early stop: no val/acc gain for {cfg.patience} epochs")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    kept = best if cfg.patience and best is not None else history[-1]
    return FitResult(model=model, meta=meta, history=history, kept=kept, pruned=pruned)


def train(
    params: Params,
    prepared_dir: Path,
    model_path: Path,
    live_dir: Path,
    summary_path: Path,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """The train stage: :func:`fit`, then save the model, the series and the summary.

    Writes the checkpoint to ``model_path``, per-epoch series under ``live_dir`` (DVCLive)
    and the summary (of the saved model's epoch) to ``summary_path``, and returns it.
    ``on_epoch`` (a tuner's trial, say) is called after each epoch's metrics are logged, as
    :func:`fit` calls it.
    """
    from dvclive import Live

    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False)

    def log(result: EpochResult) -> str | None:
        live.step = result.epoch  # series count epochs from 1, as the log lines do
        for name, value in result.metrics().items():
            live.log_metric(name, value)
        live.next_step()
        return on_epoch(result) if on_epoch is not None else None

    try:
        fitted = fit(params, prepared_dir, on_epoch=log)
    finally:
        _end(live)
        # The summary below describes the saved model; DVCLive's last-epoch one would not.
        Path(live.metrics_file).unlink(missing_ok=True)
    save_checkpoint(model_path, fitted.model, fitted.meta)
    summary = fitted.summary()
    write_json(summary_path, summary)
    return summary


def _end(live: Any) -> None:
    """``live.end()``, safe from a race of DVCLive's: experiments that the queue runs at once
    share one ``.dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED`` (a VS Code signal), which each
    one's end checks for and then removes; the loser's FileNotFoundError, raised after
    everything is saved, must not fail its experiment."""
    try:
        live.end()
    except FileNotFoundError as exc:
        if Path(exc.filename or "").name != "DVCLIVE_STEP_COMPLETED":
            raise


class Trainer:
    """Optimizer, schedule and loss for one model; runs epochs over in-memory tensors.

    ``phase(name)`` wraps each phase of a step (``PHASES``): a no-op context unless the
    profiler swaps in ``torch.profiler.record_function`` to label them.
    """

    phase: Callable[[str], AbstractContextManager] = nullcontext

    def __init__(self, model: torch.nn.Module, params: Params, n_train: int, device: torch.device):
        self.model = model
        self.cfg = params.train
        self.device = device
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.optimizer = _optimizer(model, params.model.lr, self.cfg)
        self.total_steps = math.ceil(n_train / self.cfg.batch_size) * self.cfg.epochs
        self.scheduler = _scheduler(
            self.optimizer, params.model.lr, self.cfg.schedule, self.total_steps
        )

    def step(
        self, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer (and schedule) step on a uint8 batch, augmented as params say;
        returns (logits, loss)."""
        cfg, phase = self.cfg, self.phase
        with phase("data/augment"):
            if cfg.flip or cfg.crop:
                images = augment(images, flip=cfg.flip, crop=cfg.crop, generator=self.generator)
            inputs = normalize(images)
        with phase("forward"):
            logits = self.model(inputs)
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with phase("optimizer step"):
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        return logits.detach(), loss.detach()

    def epoch(
        self, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer, desc: str
    ) -> tuple[float, float]:
        """One pass over the shuffled train split; returns mean loss and accuracy."""
        cfg, model = self.cfg, self.model
        model.train()
        n = images.shape[0]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        batches = index_batches(n, cfg.batch_size, self.device, self.generator)
        for idx in tqdm(
            batches,
            total=math.ceil(n / cfg.batch_size),
            desc=desc,
            leave=False,
            disable=None,
            unit="batch",
        ):
            if idx.numel() == 1 and n > 1:
                continue  # a single image cannot be batch-normalised
            logits, loss = self.step(images[idx], labels[idx], normalize)
            loss_sum += loss * idx.numel()
            correct += (logits.argmax(1) == labels[idx]).sum()
            seen += idx.numel()
        return loss_sum.item() / seen, correct.item() / seen


@dataclass(frozen=True)
class TrainSplit:
    """The train split on the device, its normalisation and the meta of a model for it."""

    device: torch.device
    images: torch.Tensor
    labels: torch.Tensor
    normalize: Normalizer
    meta: ModelMeta

    @classmethod
    def load(cls, params: Params, prepared_dir: Path) -> TrainSplit:
        """The train split on ``train.device``, for ``params``'s model."""
        device = resolve_device(params.train.device)
        meta = ModelMeta.trained_on(load_meta(prepared_dir), params)
        images, labels = (t.to(device) for t in load_split(prepared_dir, "train"))
        return cls(device, images, labels, Normalizer.from_stats(meta.mean, meta.std, device), meta)

    def new_trainer(self, params: Params) -> Trainer:
        """A model for this split, freshly seeded from ``train.seed``, and its Trainer."""
        configure(params.train.seed, params.train.threads)
        model = self.meta.build_model(load_pretrained=True).to(self.device)
        return Trainer(model, params, self.images.shape[0], self.device)

    def full_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Shuffled index batches of exactly ``batch_size`` (<= the split), epoch after epoch."""
        while True:
            for idx in index_batches(self.images.shape[0], batch_size, self.device, generator):
                if idx.numel() == batch_size:
                    yield idx


def _optimizer(model: torch.nn.Module, lr: float, cfg: TrainParams) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def _scheduler(
    optimizer: torch.optim.Optimizer, lr: float, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    return None


def _report(result: EpochResult, epochs: int, seconds: float) -> None:
    values = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics().items())
    tqdm.write(f"epoch {result.epoch}/{epochs}  {values}  ({seconds:.1f} s)")
