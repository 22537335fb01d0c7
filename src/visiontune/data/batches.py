"""Whole-batch tensor work: index batches, augmentation, normalisation.

Datasets stay in memory as uint8 tensors (N, C, H, W); a batch is an index slice,
augmented as one tensor, then normalised to float.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Normalizer:
    """uint8 images -> float, standardised per channel with the train split's mean/std."""

    scale: torch.Tensor
    shift: torch.Tensor

    @classmethod
    def from_stats(
        cls, mean: Sequence[float], std: Sequence[float], device: torch.device
    ) -> Normalizer:
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1).clamp_min(1e-6)
        return cls(scale=1.0 / (255.0 * std_t), shift=-mean_t / std_t)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)


def index_batches(
    n: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Index slices covering 0..n-1 on ``device``, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.to(device).split(batch_size)


def augment(
    images: torch.Tensor, *, flip: bool, crop: int, generator: torch.Generator
) -> torch.Tensor:
    """Random horizontal flips and padded random crops, drawn per image, on a whole batch."""
    if flip:
        mask = torch.rand(images.shape[0], generator=generator) < 0.5
        images = torch.where(mask.to(images.device).view(-1, 1, 1, 1), images.flip(3), images)
    if crop:
        images = _random_crop(images, crop, generator)
    return images


def _random_crop(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator).to(images.device)
    rows = (dy + torch.arange(h, device=images.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=images.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]
