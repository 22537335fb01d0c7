"""The robustness stage: test accuracy under common corruptions at rising severity.

In the spirit of ImageNet-C (Hendrycks & Dietterich, 2019): each corruption has five
severities of fixed strength, applied as one tensor op on a whole batch of the uint8 test
images; the result is rounded back to uint8, as a corrupted image file would be. Spatial
strengths are fractions of the image side, so a severity means the same at any size.
Random draws (noise, rotation directions, occlusion positions, the subset) come from one
generator per corruption and severity, seeded from ``robustness.seed``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from visiontune.config.params import Params
from visiontune.config.paths import write_json
from visiontune.data.batches import index_batches
from visiontune.data.prepared import StoredSplit, open_split
from visiontune.models.scoring import load_trained

EVAL_BATCH_SIZE = 512  # images corrupted and scored at a time

Corruption = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _gaussian_noise(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    """Additive noise of ``sigma`` (a fraction of the 0..255 range)."""
    return x + torch.randn(x.shape, generator=g).to(x.device) * (sigma * 255)


def _blur(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur of standard deviation ``fraction`` of the image side (separable)."""
    sigma = fraction * x.shape[-1]
    radius = max(1, math.ceil(3 * sigma))
    steps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(steps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1, 1, 1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(x.shape[1], 1, 1, -1), groups=x.shape[1])
    return F.conv2d(rows, kernel.view(x.shape[1], 1, -1, 1), groups=x.shape[1])


def _brightness(x: torch.Tensor, shift: float, g: torch.Generator) -> torch.Tensor:
    """Every pixel lighter by ``shift`` of the range (clipped at white)."""
    return x + shift * 255


def _contrast(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    """Deviations from each image's mean scaled by ``factor``."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor + mean


def _rotation(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    """Rotation by ``degrees``, clockwise or not per image (bilinear, black corners)."""
    sign = torch.randint(0, 2, (x.shape[0],), generator=g).to(x.device) * 2 - 1
    angle = sign * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _pixelate(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    """Box-resized to ``fraction`` of the side and back (as PIL's BOX filter does it)."""
    h, w = x.shape[-2:]
    rows, cols = _box_projection(h, fraction, x), _box_projection(w, fraction, x)
    return torch.einsum("ih,nchw,jw->ncij", rows, x, cols)


def _box_projection(size: int, fraction: float, like: torch.Tensor) -> torch.Tensor:
    """(size, size) matrix: average over ``round(size * fraction)`` equal cells, each pixel
    weighted by its overlap with a cell, then every pixel set to its cell's value."""
    cells = max(1, round(size * fraction))
    edges = torch.linspace(0, size, cells + 1, dtype=like.dtype, device=like.device)
    pixels = torch.arange(size + 1, dtype=like.dtype, device=like.device)
    low = torch.maximum(edges[:-1, None], pixels[None, :-1])
    high = torch.minimum(edges[1:, None], pixels[None, 1:])
    down = (high - low).clamp_min(0) * (cells / size)  # (cells, size), rows sum to 1
    centres = ((torch.arange(size, device=like.device) + 0.5) * cells / size).long()
    return down[centres]


def _occlusion(x: torch.Tensor, fraction: float, g: torch.Generator) -> torch.Tensor:
    """A black square of side ``fraction`` of the image at a random place in each image."""
    n, _, h, w = x.shape
    side_y, side_x = max(1, round(h * fraction)), max(1, round(w * fraction))
    top = torch.randint(0, h - side_y + 1, (n, 1), generator=g).to(x.device)
    left = torch.randint(0, w - side_x + 1, (n, 1), generator=g).to(x.device)
    rows = torch.arange(h, device=x.device) - top
    cols = torch.arange(w, device=x.device) - left
    inside = ((rows >= 0) & (rows < side_y)).view(n, 1, h, 1)
    inside = inside & ((cols >= 0) & (cols < side_x)).view(n, 1, 1, w)
    return x.masked_fill(inside, 0.0)


# Each corruption's function and its strength at severities 1 to 5. Noise, brightness and
# contrast take ImageNet-C's values; the spatial ones step by an eighth of the side or so,
# so that each severity differs from the last even on 8x8 images.
SEVERITIES: dict[str, tuple[Corruption, tuple[float, ...]]] = {
    "gaussian_noise": (_gaussian_noise, (0.08, 0.12, 0.18, 0.26, 0.38)),  # sigma / 255
    "blur": (_blur, (0.04, 0.06, 0.08, 0.11, 0.14)),  # sigma / image side
    "brightness": (_brightness, (0.1, 0.2, 0.3, 0.4, 0.5)),  # shift / 255
    "contrast": (_contrast, (0.4, 0.3, 0.2, 0.1, 0.05)),  # factor
    "rotation": (_rotation, (9.0, 18.0, 27.0, 36.0, 45.0)),  # degrees
    "pixelate": (_pixelate, (0.75, 0.625, 0.5, 0.375, 0.25)),  # side kept
    "occlusion": (_occlusion, (0.125, 0.25, 0.375, 0.5, 0.625)),  # square / image side
}


def corrupt(
    images: torch.Tensor, name: str, severity: int, generator: torch.Generator
) -> torch.Tensor:
    """uint8 images (N, C, H, W) with corruption ``name`` at ``severity`` (1 to 5)."""
    function, strengths = SEVERITIES[name]
    out = function(images.float(), strengths[severity - 1], generator)
    return out.round().clamp(0, 255).to(torch.uint8)


def robustness(
    params: Params, model_path: Path, prepared_dir: Path, curves_path: Path, metrics_path: Path
) -> dict[str, Any]:
    """Score the trained model on corrupted test images; write curves and metrics.

    ``curves_path`` gets one row per corruption and severity, ``{corruption, severity,
    acc}``, severity 0 being the clean images; ``metrics_path`` gets ``{"robustness":
    {clean_acc, mean_acc, worst_corruption, worst_acc}}``: the mean over every corruption
    and severity, and the corruption with the lowest accuracy at the top severity.
    """
    cfg = params.robustness
    trained = load_trained(
        model_path, params.train.device, params.train.threads, params.train.cpu_kernels
    )
    images, labels = _subset(open_split(prepared_dir, "test"), cfg.max_images, cfg.seed)
    images, labels = images.to(trained.device), labels.to(trained.device)

    def accuracy(transform: Callable[[torch.Tensor], torch.Tensor]) -> float:
        correct = 0
        for idx in index_batches(labels.shape[0], EVAL_BATCH_SIZE, trained.device):
            result = trained.evaluate(transform(images[idx]), labels[idx], EVAL_BATCH_SIZE)
            correct += int((result.predictions == labels[idx].cpu()).sum())
        return correct / max(labels.shape[0], 1)

    clean = accuracy(lambda batch: batch)
    rows = []
    for name in cfg.corruptions:
        rows.append({"corruption": name, "severity": 0, "acc": clean})
        for severity in range(1, cfg.severities + 1):
            generator = _generator(cfg.seed, name, severity)
            acc = accuracy(lambda batch, n=name, s=severity, g=generator: corrupt(batch, n, s, g))
            rows.append({"corruption": name, "severity": severity, "acc": acc})
    metrics = {"robustness": summarize(rows, cfg.severities, clean)}
    write_json(curves_path, rows)
    write_json(metrics_path, metrics)
    return metrics


def summarize(rows: list[dict[str, Any]], top: int, clean: float) -> dict[str, Any]:
    """Clean and mean corrupted accuracy, and the worst corruption at severity ``top``."""
    corrupted = [row for row in rows if row["severity"] > 0]
    worst = min((row for row in corrupted if row["severity"] == top), key=lambda r: r["acc"])
    return {
        "clean_acc": clean,
        "mean_acc": sum(row["acc"] for row in corrupted) / len(corrupted),
        "worst_corruption": worst["corruption"],
        "worst_acc": worst["acc"],
    }


def _subset(split: StoredSplit, limit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``limit`` images (0 = all) of the split, a seeded random subset kept in split
    order, read from its file (only those)."""
    if not limit or limit >= len(split):
        return torch.from_numpy(split.read()), torch.from_numpy(split.labels)
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(split), generator=generator)[:limit].sort().values.numpy()
    return torch.from_numpy(split.gather(keep)), torch.from_numpy(split.labels[keep])


def _generator(seed: int, name: str, severity: int) -> torch.Generator:
    """The random source of one corruption at one severity: independent of which others
    run, so dropping a corruption from the list leaves the rest unchanged."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}/{severity}".encode()))
