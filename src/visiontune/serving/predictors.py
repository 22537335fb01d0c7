"""Trained models behind one interface: uint8 images in, class probabilities out.

A predictor has ``meta`` (the model's :class:`ModelMeta`), ``format`` ("torch" or "onnx"),
``source_md5`` and ``probabilities(images)``; ``load_predictor`` picks the implementation
by file suffix: ``.pt`` (a train-stage checkpoint, run by torch) or ``.onnx`` (run by
onnxruntime).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.models.meta import ModelMeta
from visiontune.models.scoring import load_trained


class Predictor(Protocol):
    """What serving needs from a model."""

    meta: ModelMeta
    format: str
    source_md5: str | None  # of the checkpoint an export came from; None for a checkpoint

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 (N, K) of uint8 images (N, C, S, S)."""
        ...


class TorchPredictor:
    """A ``.pt`` checkpoint on the CPU, images going through its ``ModelInput``."""

    format = "torch"
    source_md5: str | None = None

    def __init__(self, path: Path, threads: int = 0) -> None:
        self._trained = load_trained(path, "cpu", threads)  # threads: process-wide
        self.meta = self._trained.meta

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self._trained.probabilities(torch.from_numpy(images)).numpy()


def load_predictor(path: Path, threads: int = 0) -> Predictor:
    """The predictor for a ``.pt`` or ``.onnx`` model file; VisiontuneError if unusable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise VisiontuneError(f"{path}: unsupported model file, expected a .pt or .onnx file")
    if suffix == ".pt":
        return TorchPredictor(path, threads)
    from visiontune.models.onnx_model import OnnxModel

    return OnnxModel(path, threads)
