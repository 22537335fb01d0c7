"""Training augmentation of whole batches on their device, drawn per image from the trainer's
seeded generator (on the CPU, so a run augments alike on every device).

``train.*`` chooses: horizontal flips, padded random crops (small images such as digits), or
random-resized crops to the network's input side (photos, as torchvision's
``RandomResizedCrop``: an area share and a width/height ratio drawn per image, bilinear),
then colour jitter (brightness, contrast and saturation, as torchvision's ``ColorJitter``
without hue). Images stay uint8 unless a resized crop or jitter makes them float (0..255).

A process that holds a share of a global batch (``train.nproc`` > 1) draws the random
values of the whole batch and keeps its :class:`Rows`: an image is augmented alike
whichever process reads it, and as a single process would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from visiontune.config.params import TrainParams

# Luma weights of R, G, B (ITU-R 601, as torchvision's rgb_to_grayscale).
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Rows:
    """Rows ``start:stop`` of a batch of ``total`` images: the images at hand."""

    start: int
    stop: int
    total: int

    @classmethod
    def of(cls, images: torch.Tensor, rows: Rows | None) -> Rows:
        """``rows``, or all of ``images``."""
        return rows or cls(0, images.shape[0], images.shape[0])

    def kept(self, drawn: torch.Tensor) -> torch.Tensor:
        """The values drawn for the whole batch that belong to these rows."""
        return drawn[self.start : self.stop]


@dataclass(frozen=True)
class Augmentation:
    """The random transforms of a training batch (``train.flip``, ``crop``, ``resized_crop``,
    ``crop_scale``, ``crop_ratio``, ``color_jitter``)."""

    flip: bool = False
    crop: int = 0
    resized_crop: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)
    jitter: float = 0.0

    @classmethod
    def of(cls, train: TrainParams) -> Augmentation:
        return cls(
            flip=train.flip,
            crop=train.crop,
            resized_crop=train.resized_crop,
            scale=train.crop_scale,
            ratio=train.crop_ratio,
            jitter=train.color_jitter,
        )

    def __call__(
        self,
        images: torch.Tensor,
        view: Callable[[torch.Tensor], torch.Tensor],
        size: int,
        generator: torch.Generator,
        rows: Rows | None = None,
    ) -> torch.Tensor:
        """A batch of stored images (N, C, S, S) as training sees it, ``size`` pixels square:
        a random-resized crop of each, or ``view`` (the evaluation view) then padded crops;
        flips and jitter as configured. ``rows``: which rows of a larger batch they are."""
        if self.resized_crop:
            images = resized_crops(images, size, self.scale, self.ratio, self.flip, generator, rows)
        else:
            images = view(images)
            if self.flip:
                images = flips(images, generator, rows)
            if self.crop:
                images = padded_crops(images, self.crop, generator, rows)
        if self.jitter:
            images = color_jitter(images, self.jitter, generator, rows)
        return images


def flips(
    images: torch.Tensor, generator: torch.Generator, rows: Rows | None = None
) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    rows = Rows.of(images, rows)
    mask = rows.kept(torch.rand(rows.total, generator=generator)) < 0.5
    return torch.where(mask.to(images.device).view(-1, 1, 1, 1), images.flip(3), images)


def padded_crops(
    images: torch.Tensor, pad: int, generator: torch.Generator, rows: Rows | None = None
) -> torch.Tensor:
    """Each image zero-padded by ``pad`` pixels and cropped back at a random offset."""
    n, _, h, w = images.shape
    rows = Rows.of(images, rows)
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = rows.kept(torch.randint(0, 2 * pad + 1, (rows.total, 1), generator=generator))
    dx = rows.kept(torch.randint(0, 2 * pad + 1, (rows.total, 1), generator=generator))
    dy, dx = dy.to(images.device), dx.to(images.device)
    rows = (dy + torch.arange(h, device=images.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=images.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def resized_crops(
    images: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: bool,
    generator: torch.Generator,
    rows: Rows | None = None,
) -> torch.Tensor:
    """A random crop of each image, resized to ``size`` square (float, 0..255): its area a
    share in ``scale`` of the image's, its width/height in ``ratio`` (log-uniform), at a
    uniform place, mirrored with probability 1/2 when ``flip``. A crop drawn wider or taller
    than the image is clipped to it (torchvision redraws up to 10 times, then falls back to
    the centre). One affine sampling grid for the whole batch."""
    rows = Rows.of(images, rows)
    n = rows.total
    area = torch.empty(n).uniform_(*scale, generator=generator)
    aspect = torch.empty(n).uniform_(*map(math.log, ratio), generator=generator).exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # shares of the image side
    height = (area / aspect).sqrt().clamp(max=1.0)
    left = torch.rand(n, generator=generator) * (1 - width)
    top = torch.rand(n, generator=generator) * (1 - height)
    mirror = torch.ones(n)
    if flip:
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)  # output [-1, 1] -> input [-1, 1], x then y
    theta[:, 0, 0] = width * mirror
    theta[:, 0, 2] = 2 * left + width - 1
    theta[:, 1, 1] = height
    theta[:, 1, 2] = 2 * top + height - 1
    theta = rows.kept(theta)
    grid = F.affine_grid(
        theta.to(images.device), [theta.shape[0], images.shape[1], size, size], align_corners=False
    )
    return F.grid_sample(images.float(), grid, mode="bilinear", align_corners=False)


def color_jitter(
    images: torch.Tensor, strength: float, generator: torch.Generator, rows: Rows | None = None
) -> torch.Tensor:
    """Brightness, contrast and saturation (RGB only) of each image scaled by factors drawn
    in [1 - strength, 1 + strength], in that order, clipped to 0..255 after each (float)."""
    n, channels = images.shape[:2]
    rows = Rows.of(images, rows)
    drawn = rows.kept(torch.rand(rows.total, 3, generator=generator))
    factors = 1 + (2 * drawn - 1) * strength
    brightness, contrast, saturation = factors.to(images.device).view(n, 3, 1, 1, 1).unbind(1)
    images = (images.float() * brightness).clamp(0, 255)
    mean = _gray(images).mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean).clamp(0, 255)
    if channels == 3:
        gray = _gray(images)
        images = ((images - gray) * saturation + gray).clamp(0, 255)
    return images


def _gray(images: torch.Tensor) -> torch.Tensor:
    """Luma (N, 1, H, W) of float RGB images, or the images themselves if grayscale."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
