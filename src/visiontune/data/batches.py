"""The batch source: a split's model-ready batches.

A split stays on the device as uint8 tensors (N, C, H, W); a batch is an index gather from
it, augmented as one tensor when training (random horizontal flips, padded random crops,
drawn per image), then normalised to float. :class:`BatchSource` is the one place batches
are made: the trainer's epochs, the finders' and the profiler's steps, and scoring.
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


@dataclass(frozen=True)
class Batch:
    """Images as the model takes them (float, normalised, on the device), and their labels."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


class BatchSource:
    """One split on the device, served as model-ready batches.

    ``flip`` and ``crop`` (``train.flip``, ``train.crop``) augment the batches of a pass
    shuffled by a generator (training); a pass without one is in order and as stored.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        normalize: Normalizer,
        *,
        flip: bool = False,
        crop: int = 0,
    ) -> None:
        self.images, self.labels, self.normalize = images, labels, normalize
        self.flip, self.crop = flip, crop

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch_count(self, batch_size: int) -> int:
        """Batches in one pass (a dropped single-image batch included)."""
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One pass over the split. With ``generator`` (training): in a shuffled order,
        augmented, and without a last batch of a single image from a split of several
        (batch norm cannot train on one). Without: in order, as stored."""
        for idx in index_batches(len(self), batch_size, self.images.device, generator):
            if generator is not None and idx.numel() == 1 and len(self) > 1:
                continue
            yield self._batch(idx, generator)

    def full_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Shuffled, augmented batches of exactly ``batch_size`` (at most the split's size),
        epoch after epoch: the steps the finders and the profiler measure."""
        while True:
            for idx in index_batches(len(self), batch_size, self.images.device, generator):
                if idx.numel() == batch_size:
                    yield self._batch(idx, generator)

    def _batch(self, idx: torch.Tensor, generator: torch.Generator | None) -> Batch:
        images = self.images[idx]
        if generator is not None and (self.flip or self.crop):
            images = augment(images, flip=self.flip, crop=self.crop, generator=generator)
        return Batch(self.normalize(images), self.labels[idx])


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
