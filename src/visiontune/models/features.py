"""The model's feature space: what its classifier head sees (the penultimate layer)."""

from __future__ import annotations

import torch
from torch import nn

from visiontune.models.scoring import TrainedModel


def classifier_head(model: nn.Module) -> nn.Module:
    """The layer that maps features to class logits: a timm model's ``get_classifier()``,
    else the last child module (the final Linear of the configurable CNN)."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        return get_classifier()
    return list(model.children())[-1]


@torch.inference_mode()
def features(trained: TrainedModel, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The inputs of the model's classifier head for uint8 ``images``: float32 (N, D)."""
    captured: list[torch.Tensor] = []

    def capture(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].flatten(1).float())

    model = trained.network
    handle = classifier_head(model).register_forward_pre_hook(capture)
    try:
        for start in range(0, len(images), batch_size):
            model(trained.input(images[start : start + batch_size].to(trained.device)))
    finally:
        handle.remove()
    return torch.cat(captured)
