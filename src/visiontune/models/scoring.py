"""Scoring a network: a split's loss, accuracy and predictions (:func:`evaluate_split`), and
a trained model loaded ready to score (:func:`load_trained`), the one way the evaluate and
robustness stages, drift checks, the server's predictor and the ONNX export get theirs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from visiontune.data.batches import Batch, BatchSource
from visiontune.data.model_input import ModelInput
from visiontune.models.checkpoint import load_checkpoint
from visiontune.models.meta import ModelMeta
from visiontune.models.runtime import resolve_device, set_cpu


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy, accuracy and per-image predictions of one pass over a split."""

    loss: float
    acc: float
    predictions: torch.Tensor


def evaluate_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    model_input: ModelInput,
    batch_size: int,
) -> EvalResult:
    """Plain (unsmoothed) cross-entropy and accuracy of ``model`` on a whole split."""
    return evaluate_batches(model, BatchSource(images, labels, model_input).batches(batch_size))


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Iterable[Batch],
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalResult:
    """Plain (unsmoothed) cross-entropy and accuracy of ``model`` on one pass of batches
    (in the split's order: the predictions are in that order).

    ``gather`` joins a tensor of every process that scored a share of the split, in the
    split's order: the result is then the whole split's, nothing counted twice.
    """
    was_training = model.training
    model.eval()
    sums, predictions, labels = [], [], []
    for batch in batches:
        logits = model(batch.inputs)
        sums.append(F.cross_entropy(logits.float(), batch.labels, reduction="sum"))
        predictions.append(logits.argmax(1))
        labels.append(batch.labels)
    model.train(was_training)
    preds, truth = _joined(predictions, torch.long), _joined(labels, torch.long)
    if gather is not None:
        sums = list(gather(_joined(sums, torch.float32)))
        preds, truth = gather(preds), gather(truth)
    loss_sum = torch.zeros((), device=preds.device)
    for value in sums:
        loss_sum += value
    n = max(preds.shape[0], 1)
    return EvalResult(
        loss=loss_sum.item() / n,
        acc=(preds == truth).sum().item() / n,
        predictions=preds.cpu(),
    )


def _joined(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``tensors`` (0-d or 1-d) end to end; empty (on the CPU) when there are none."""
    if not tensors:
        return torch.empty(0, dtype=dtype)
    return torch.cat([tensor.view(-1) for tensor in tensors])


@dataclass(frozen=True)
class TrainedModel:
    """A trained model ready to score: its network (eval mode) on ``device``, its meta, and
    its input (:meth:`ModelMeta.model_input`). Images in are uint8 (N, C, S, S) as stored."""

    network: nn.Module
    meta: ModelMeta
    input: ModelInput
    device: torch.device

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> EvalResult:
        """:func:`evaluate_split` of the images and labels, moved to the model's device."""
        images, labels = images.to(self.device), labels.to(self.device)
        return evaluate_split(self.network, images, labels, self.input, batch_size)

    def score_split(
        self, prepared_dir: Path, split: str, batch_size: int, resident_mb: int = 0
    ) -> tuple[EvalResult, torch.Tensor]:
        """:func:`evaluate_batches` of a prepared split (through its batch source), and the
        split's labels (on the CPU)."""
        source = BatchSource.of_split(prepared_dir, split, self.input, self.device, resident_mb)
        return evaluate_batches(self.network, source.batches(batch_size)), source.labels.cpu()

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities, float32 (N, K), on the model's device."""
        logits = self.network(self.input(images.to(self.device)))
        return torch.softmax(logits.float(), dim=1)


def load_trained(
    path: Path, device: str = "cpu", threads: int = 0, kernels: str = "native"
) -> TrainedModel:
    """The checkpoint at ``path`` ready to score on ``device`` (a ``train.device`` value:
    ``auto`` picks CUDA, then MPS, then the CPU), with torch's CPU threads set to
    ``threads`` (0 keeps torch's default) and its kernels to ``kernels``
    (``train.cpu_kernels``). VisiontuneError if the file is missing or not a visiontune
    model, or the device is not there."""
    set_cpu(threads, kernels)
    where = resolve_device(device)
    network, meta = load_checkpoint(Path(path), where)
    return TrainedModel(network, meta, meta.model_input(where), where)
