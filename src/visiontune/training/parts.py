"""The parts of a training run, built in one place from params: the train and val batch
sources on the device (the prepared meta read once), and a freshly seeded network with its
optimization and precision, handed to a :class:`~visiontune.training.trainer.Trainer`.

Among several processes (a :class:`~visiontune.training.distributed.Group` of more than
one) the sources read this process's shard, batch norm is synchronised
(``train.sync_bn``) and the network is wrapped in torch's DistributedDataParallel, which
averages the gradients. The train stage (``fit``), the finders and the profiler all build
their parts here; the finders and the profiler in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from visiontune.config import cpu_kernels
from visiontune.config.params import Params
from visiontune.data.augmentation import Augmentation
from visiontune.data.batches import BatchSource
from visiontune.data.prepared import load_meta
from visiontune.models.meta import ModelMeta
from visiontune.models.runtime import configure, resolve_device
from visiontune.training.distributed import SINGLE, Group, process_device
from visiontune.training.optimization import Optimization
from visiontune.training.precision import Precision, compiled
from visiontune.training.sync_batchnorm import synchronised
from visiontune.training.trainer import Trainer


@dataclass(frozen=True)
class Splits:
    """The train split (augmented as ``train.*`` says) and the val split as batch sources on
    the device, and the meta of a model trained on them."""

    device: torch.device
    meta: ModelMeta
    train: BatchSource
    val: BatchSource

    @classmethod
    def load(cls, params: Params, prepared_dir: Path, group: Group = SINGLE) -> Splits:
        """The prepared splits on ``train.device`` (this process's GPU in a CUDA group),
        ``group``'s shard of them, for ``params``'s model."""
        cfg = params.train
        # Before loading computes: a command (profile, finders) or an in-process trial has no
        # stage that asked for its kernels first.
        cpu_kernels.request(cfg.cpu_kernels)
        device = process_device(resolve_device(cfg.device), group)
        prepared = load_meta(prepared_dir)
        meta = ModelMeta.trained_on(prepared, params)
        model_input = meta.model_input(device)
        train = BatchSource.of_split(
            prepared_dir,
            "train",
            model_input,
            device,
            cfg.resident_mb,
            Augmentation.of(cfg),
            meta=prepared,
            shard=group.shard,
        )
        val = BatchSource.of_split(
            prepared_dir,
            "val",
            model_input,
            device,
            cfg.resident_mb,
            meta=prepared,
            shard=group.shard,
        )
        return cls(device, meta, train, val)


def build_trainer(params: Params, splits: Splits, group: Group = SINGLE) -> Trainer:
    """A network for ``splits``, freshly seeded from ``train.seed`` (threads and kernels set
    as ``train.*`` says), with its optimization and precision, in a Trainer; in a group of
    several processes, synchronised and wrapped for data parallelism."""
    cfg = params.train
    configure(cfg.seed, group.threads(cfg.threads), cfg.cpu_kernels)
    model = splits.meta.build_model(load_pretrained=True).to(splits.device)
    precision = Precision.of(cfg.precision, splits.device)
    if group.world > 1 and cfg.sync_bn:
        model = synchronised(model, splits.device)
    scorer = compiled(model) if cfg.compile else model
    network = scorer
    if group.world > 1:
        network = _data_parallel(model, splits.device, cfg.compile)
    optimization = Optimization.of(model, params.model, cfg, len(splits.train))
    return Trainer(model, network, optimization, precision, cfg, scorer=scorer, group=group)


def _data_parallel(model: torch.nn.Module, device: torch.device, compile_: bool) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (on this process's GPU on CUDA), compiled with
    ``train.compile``."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(model, device_ids=ids)
    return compiled(wrapped) if compile_ else wrapped
