"""Trained models behind one interface: uint8 images in, class probabilities out.

A predictor has ``meta`` (classes, channels, image_size, mean, std, params, format) and
``probabilities(images)``; ``load_predictor`` picks the implementation by file suffix:
``.pt`` (a train-stage checkpoint, run by torch) or ``.onnx`` (run by onnxruntime).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from visiontune.batches import Normalizer
from visiontune.checkpoint import load_checkpoint
from visiontune.errors import VisiontuneError

CPU = torch.device("cpu")
META_KEYS = ("classes", "channels", "image_size", "mean", "std", "params")


class Predictor(Protocol):
    """What serving needs from a model."""

    meta: dict[str, Any]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities float32 (N, K) of uint8 images (N, C, S, S)."""
        ...


class TorchPredictor:
    """A ``.pt`` checkpoint on the CPU, normalised with its train split's mean/std."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        if threads > 0:
            torch.set_num_threads(threads)  # process-wide, as for the train stage
        self._model, ckpt = load_checkpoint(path, CPU)
        self._normalize = Normalizer.from_stats(ckpt["mean"], ckpt["std"], CPU)
        self.meta: dict[str, Any] = {key: ckpt[key] for key in META_KEYS} | {"format": "torch"}

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        logits = self._model(self._normalize(torch.from_numpy(images)))
        return torch.softmax(logits.float(), dim=1).numpy()


def load_predictor(path: Path, threads: int = 0) -> Predictor:
    """The predictor for a ``.pt`` or ``.onnx`` model file; VisiontuneError if unusable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise VisiontuneError(f"{path}: unsupported model file, expected a .pt or .onnx file")
    if suffix == ".pt":
        return TorchPredictor(path, threads)
    from visiontune.onnx_model import OnnxModel

    return OnnxModel(path, threads)
