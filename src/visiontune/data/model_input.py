"""The model's view of its stored images: the centre crop resized to the network's input
side, standardised per channel (:class:`ModelInput`), the one place every consumer of a
model (training, evaluation, serving, drift, ONNX export) turns uint8 images into inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelInput:
    """Stored uint8 images (N, C, S, S) -> the network's float input, deterministically: the
    centre square of ``crop`` pixels resized to ``size`` (the evaluation view; the identity
    when both are S), then standardised per channel with ``mean``/``std`` (0..1 scale).

    Evaluation, robustness, drift, serving and the ONNX export all see images through it;
    training draws its own crops (:class:`~visiontune.data.augmentation.Augmentation`) and
    standardises them the same way.
    """

    scale: torch.Tensor
    shift: torch.Tensor
    crop: int
    size: int

    @classmethod
    def from_stats(
        cls,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        *,
        stored: int,
        crop_pct: float = 1.0,
        size: int = 0,
    ) -> ModelInput:
        """The input of a model taking ``size`` pixels (0 = ``stored``) that evaluates the
        centre ``crop_pct`` of each side of images stored at ``stored`` pixels."""
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1).clamp_min(1e-6)
        crop = max(1, round(stored * crop_pct))
        return cls(
            scale=1.0 / (255.0 * std_t), shift=-mean_t / std_t, crop=crop, size=size or stored
        )

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """The centre ``crop`` square of each image, resized to ``size`` (bilinear,
        antialiased; float 0..255), or the images as they are when no view is needed."""
        stored = images.shape[-1]
        if self.crop != stored:
            top = (stored - self.crop) // 2
            images = images[..., top : top + self.crop, top : top + self.crop]
        if self.crop != self.size:
            images = F.interpolate(
                images.float(), size=(self.size, self.size), mode="bilinear", antialias=True
            )
        return images

    def standardise(self, images: torch.Tensor) -> torch.Tensor:
        """Images (any dtype, 0..255) as float, standardised per channel."""
        return torch.addcmul(self.shift, images.float(), self.scale)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.view(images))
