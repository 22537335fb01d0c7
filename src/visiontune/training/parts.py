"""The parts of a training run, built in one place from params: the train and val batch
sources on the device (the prepared meta read once), and a freshly seeded network with its
optimization and precision, handed to a :class:`~visiontune.training.trainer.Trainer`.

The train stage (``fit``), the finders and the profiler all build their parts here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from visiontune.config.params import Params
from visiontune.data.augmentation import Augmentation
from visiontune.data.batches import BatchSource
from visiontune.data.prepared import load_meta
from visiontune.models.meta import ModelMeta
from visiontune.models.runtime import configure, resolve_device
from visiontune.training.optimization import Optimization
from visiontune.training.precision import Precision, compiled
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
    def load(cls, params: Params, prepared_dir: Path) -> Splits:
        """The prepared splits on ``train.device``, for ``params``'s model."""
        cfg = params.train
        device = resolve_device(cfg.device)
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
        )
        val = BatchSource.of_split(
            prepared_dir, "val", model_input, device, cfg.resident_mb, meta=prepared
        )
        return cls(device, meta, train, val)


def build_trainer(params: Params, splits: Splits) -> Trainer:
    """A network for ``splits``, freshly seeded from ``train.seed`` (threads and kernels set
    as ``train.*`` says), with its optimization and precision, in a Trainer."""
    cfg = params.train
    configure(cfg.seed, cfg.threads, cfg.cpu_kernels)
    model = splits.meta.build_model(load_pretrained=True).to(splits.device)
    precision = Precision.of(cfg.precision, splits.device)
    network = compiled(model) if cfg.compile else model
    optimization = Optimization.of(model, params.model, cfg, len(splits.train))
    return Trainer(model, network, optimization, precision, cfg)
