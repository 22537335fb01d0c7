"""The configurable CNN (``model.name: cnn``): a stem, ``model.blocks`` conv blocks that each
halve the resolution and double the width (batch norm, residual skips and squeeze-excite as
``model.*`` say), global average pooling, dropout and a linear head. Its modules are
module-level classes, so whole models pickle."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from visiontune.config.errors import VisiontuneError

if TYPE_CHECKING:
    from visiontune.config.params import ModelParams

MAX_WIDTH_FACTOR = 8  # cnn: width doubles per block up to this multiple of model.width


class SqueezeExcite(nn.Module):
    """Channel attention: scale each channel by a gate computed from its global mean."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ConvBlock(nn.Module):
    """conv3x3 [BN] ReLU conv3x3 [BN] [SE] [+ skip] ReLU, then a 2x2 max-pool."""

    def __init__(
        self, c_in: int, c_out: int, *, batchnorm: bool, residual: bool, squeeze_excite: bool
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, c_out, 3, batchnorm),
            nn.ReLU(inplace=True),
            *_conv_bn(c_out, c_out, 3, batchnorm),
            SqueezeExcite(c_out) if squeeze_excite else nn.Identity(),
        )
        self.skip: nn.Module | None = None
        if residual and c_in == c_out:
            self.skip = nn.Identity()
        elif residual:
            self.skip = nn.Sequential(*_conv_bn(c_in, c_out, 1, batchnorm))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.skip is not None:
            out = out + self.skip(x)
        return self.pool(torch.relu(out))


def _conv_bn(c_in: int, c_out: int, kernel: int, batchnorm: bool) -> list[nn.Module]:
    """A same-padding conv, followed by BatchNorm if asked (the conv then has no bias)."""
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=not batchnorm)
    return [conv, nn.BatchNorm2d(c_out)] if batchnorm else [conv]


def build_cnn(model: ModelParams, *, num_classes: int, channels: int, image_size: int) -> nn.Module:
    """stem, ``model.blocks`` halving blocks, global average pool, dropout, linear."""
    max_blocks = image_size.bit_length() - 1
    if model.blocks > max_blocks:
        raise VisiontuneError(
            f"model.blocks={model.blocks} halves data.image_size={image_size} below 1 pixel; "
            f"use model.blocks <= {max_blocks} or data.image_size >= {2**model.blocks}"
        )
    widths = [model.width * min(2**i, MAX_WIDTH_FACTOR) for i in range(model.blocks)]
    layers: list[nn.Module] = [
        *_conv_bn(channels, model.width, 3, model.batchnorm),
        nn.ReLU(inplace=True),
    ]
    for c_in, c_out in zip([model.width, *widths[:-1]], widths, strict=True):
        layers.append(
            ConvBlock(
                c_in,
                c_out,
                batchnorm=model.batchnorm,
                residual=model.residual,
                squeeze_excite=model.squeeze_excite,
            )
        )
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(model.dropout)]
    return nn.Sequential(*layers, *head, nn.Linear(widths[-1], num_classes))
