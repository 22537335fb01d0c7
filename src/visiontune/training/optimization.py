"""The optimizer and lr schedule of a model: ``train.optimizer``, ``train.schedule`` and the
backbone's share of ``model.lr`` (``model.backbone_lr_ratio``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from visiontune.config.params import ModelParams, TrainParams
from visiontune.models.features import classifier_head


@dataclass(frozen=True)
class Optimization:
    """A model's optimizer, its schedule (stepped per batch; None for ``none``), the
    backbone's parameters (every one but the classifier head's: what ``train.freeze_epochs``
    freezes) and the steps the schedule spans."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    backbone: list[torch.nn.Parameter]
    total_steps: int

    @classmethod
    def of(
        cls, model: torch.nn.Module, model_params: ModelParams, cfg: TrainParams, n_train: int
    ) -> Optimization:
        """The optimization of ``model`` over ``cfg.epochs`` epochs of ``n_train`` images in
        batches of ``cfg.batch_size``: the backbone at ``model.lr`` times
        ``model.backbone_lr_ratio``, the head at ``model.lr``."""
        in_head = {id(p) for p in classifier_head(model).parameters()}
        backbone = [p for p in model.parameters() if id(p) not in in_head]
        head = [p for p in model.parameters() if id(p) in in_head]
        lr = model_params.lr
        groups = _param_groups(model, backbone, head, lr, model_params.backbone_lr_ratio)
        optimizer = _optimizer(groups, lr, cfg)
        total_steps = math.ceil(n_train / cfg.batch_size) * cfg.epochs
        scheduler = _scheduler(optimizer, cfg.schedule, total_steps)
        return cls(optimizer, scheduler, backbone, total_steps)


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
