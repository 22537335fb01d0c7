"""One model's optimisation: the optimizer, the lr schedule, the loss, one step on a batch and
one epoch over the train split's batch source.

``Trainer.phase(name)`` wraps each phase of a step (:data:`PHASES`): a no-op context unless
the profiler swaps in ``torch.profiler.record_function`` to label them. ``train.precision``
and ``train.compile`` act through the Trainer (:mod:`visiontune.training.precision`), so
every step and validation pass it runs follows them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from visiontune.config.params import Params, TrainParams
from visiontune.data.augmentation import Augmentation
from visiontune.data.batches import Batch, BatchSource
from visiontune.data.prepared import load_meta
from visiontune.models.features import classifier_head
from visiontune.models.meta import ModelMeta
from visiontune.models.runtime import configure, resolve_device
from visiontune.models.scoring import EvalResult, evaluate_batches
from visiontune.training.precision import Precision, compiled

# The phases of a training step, in order; Trainer.phase wraps each (the profiler labels them).
PHASES = ("data/augment", "forward", "backward", "optimizer step")


class Trainer:
    """Optimizer, schedule and loss for one model, and the generator that shuffles and
    augments its batches (seeded from ``train.seed``).

    The backbone (every parameter but the classifier head's) learns at ``model.lr`` times
    ``model.backbone_lr_ratio`` and is frozen for the first ``train.freeze_epochs`` epochs.
    ``model`` is what is saved; ``network`` runs the forward passes: ``model`` compiled
    with ``train.compile``, else ``model`` itself. ``precision`` (``train.precision``)
    wraps forward, loss, backward and optimizer step.
    """

    phase: Callable[[str], AbstractContextManager] = nullcontext

    def __init__(self, model: torch.nn.Module, params: Params, n_train: int, device: torch.device):
        self.model = model
        self.cfg = params.train
        self.device = device
        self.precision = Precision.of(self.cfg.precision, device)
        self.network = compiled(model) if self.cfg.compile else model
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        in_head = {id(p) for p in classifier_head(model).parameters()}
        self.backbone = [p for p in model.parameters() if id(p) not in in_head]
        head = [p for p in model.parameters() if id(p) in in_head]
        groups = _param_groups(
            model, self.backbone, head, params.model.lr, params.model.backbone_lr_ratio
        )
        self.optimizer = _optimizer(groups, params.model.lr, self.cfg)
        self.total_steps = math.ceil(n_train / self.cfg.batch_size) * self.cfg.epochs
        self.scheduler = _scheduler(self.optimizer, self.cfg.schedule, self.total_steps)
        self.epochs_done = 0

    def freeze_backbone(self, frozen: bool) -> None:
        """Fix the backbone's weights (only the head learns; batch norm statistics still
        follow the data) or let them learn again."""
        for param in self.backbone:
            param.requires_grad_(not frozen)

    def made(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """``batches``, each one made (gathered, augmented, normalised) in the data phase."""
        while True:
            with self.phase("data/augment"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    def step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer (and schedule) step on a batch; returns (logits, loss)."""
        phase = self.phase
        with phase("forward"), self.precision.autocast():
            logits = self.network(batch.inputs)
            loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.cfg.label_smoothing)
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.backward(loss)
        with phase("optimizer step"):
            self.precision.step(self.optimizer)
            if self.scheduler is not None:
                self.scheduler.step()
        return logits.detach(), loss.detach()

    def epoch(self, source: BatchSource, desc: str) -> tuple[float, float]:
        """One pass over ``source``'s shuffled, augmented batches; mean loss and accuracy."""
        self.model.train()
        if self.cfg.freeze_epochs:
            self.freeze_backbone(self.epochs_done < self.cfg.freeze_epochs)
        self.epochs_done += 1
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        batches = self.made(source.batches(self.cfg.batch_size, self.generator))
        total = source.batch_count(self.cfg.batch_size)
        for batch in tqdm(batches, total=total, desc=desc, leave=False, disable=None, unit="batch"):
            logits, loss = self.step(batch)
            loss_sum += loss * len(batch)
            correct += (logits.argmax(1) == batch.labels).sum()
            seen += len(batch)
        return loss_sum.item() / seen, correct.item() / seen

    def evaluate(self, source: BatchSource) -> EvalResult:
        """:func:`evaluate_batches` of ``source`` (in order, unaugmented) as training computes:
        the same network, under the same autocast."""
        with self.precision.autocast():
            return evaluate_batches(self.network, source.batches(2 * self.cfg.batch_size))


@dataclass(frozen=True)
class TrainSplit:
    """The train split on the device as a batch source (augmented as ``train.*`` says), and
    the meta of a model trained on it."""

    device: torch.device
    source: BatchSource
    meta: ModelMeta

    @classmethod
    def load(cls, params: Params, prepared_dir: Path) -> TrainSplit:
        """The train split on ``train.device``, for ``params``'s model."""
        device = resolve_device(params.train.device)
        meta = ModelMeta.trained_on(load_meta(prepared_dir), params)
        cfg = params.train
        source = BatchSource.of_split(
            prepared_dir,
            "train",
            meta.model_input(device),
            device,
            cfg.resident_mb,
            Augmentation.of(cfg),
        )
        return cls(device, source, meta)

    def new_trainer(self, params: Params) -> Trainer:
        """A model for this split, freshly seeded from ``train.seed``, and its Trainer."""
        configure(params.train.seed, params.train.threads, params.train.cpu_kernels)
        model = self.meta.build_model(load_pretrained=True).to(self.device)
        return Trainer(model, params, len(self.source), self.device)


def _param_groups(
    model: torch.nn.Module,
    backbone: list[torch.nn.Parameter],
    head: list[torch.nn.Parameter],
    lr: float,
    ratio: float,
) -> list[dict[str, Any]]:
    """One group of every parameter, or with a backbone ratio the backbone's at ``lr`` times
    ``ratio`` and the head's at ``lr``."""
    if ratio == 1:
        return [{"params": list(model.parameters())}]
    return [{"params": backbone, "lr": lr * ratio}, {"params": head, "lr": lr}]


def _optimizer(groups: list[dict[str, Any]], lr: float, cfg: TrainParams) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)


def _scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "onecycle":
        peaks = [group["lr"] for group in optimizer.param_groups]  # each group's own
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps)
    return None
