"""Batch norm over the global batch of every process (``train.sync_bn``).

On CUDA this is torch's ``nn.SyncBatchNorm``. torch has none for the CPU (its
``SyncBatchNorm`` refuses CPU tensors), so on the CPU each batch norm layer becomes a
:class:`CpuSyncBatchNorm`: the global batch's count, sums and sums of squares (in float64,
where the one pass loses nothing that matters), summed over the processes by one
all-reduce whose backward all-reduces the gradients (as ``SyncBatchNorm``'s does).
Both keep batch norm's parameters and buffers under the same names, so the checkpoint
loads into the plain network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visiontune.config.errors import VisiontuneError


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of every process's batch."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(inputs)
        dims, x = (0, 2, 3), inputs.double()  # float64: one pass loses nothing that matters
        count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=torch.float64)
        sums, squares, count = _summed(torch.cat([x.sum(dims), x.square().sum(dims), count])).split(
            [x.shape[1], x.shape[1], 1]
        )
        mean = sums / count
        var = (squares / count - mean.square()).clamp_min(0)
        centred = x - mean.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum, tracked = self.momentum, self.num_batches_tracked.item()
                factor = 1.0 / tracked if momentum is None else momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.double()
        out = centred * scale.view(1, -1, 1, 1)
        if self.affine:
            out = out + self.bias.double().view(1, -1, 1, 1)
        return out.to(inputs.dtype)


def _summed(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over every process, differentiably."""
    return _SumOverProcesses.apply(values)


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) forward; all-reduce of the gradients backward."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = values.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = grad.clone()
        dist.all_reduce(total)
        return total


def synchronised(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with its batch norm layers synchronised across processes: on CUDA by timm's
    converter (torch's ``SyncBatchNorm``, keeping timm's norm-and-activation layers whole),
    on the CPU plain 2-d layers as :class:`CpuSyncBatchNorm`. VisiontuneError naming
    train.sync_bn when a layer cannot be (another kind of batch norm on the CPU)."""
    if device.type != "cpu":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    model = _cpu_synchronised(model)
    left = {
        type(m).__name__
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, CpuSyncBatchNorm)
    }
    if left:
        raise VisiontuneError(
            f"train.sync_bn=true, but this network's {', '.join(sorted(left))} layers cannot be "
            "synchronised on the CPU: set train.sync_bn=false (or train on CUDA)"
        )
    return model


def _cpu_synchronised(model: nn.Module) -> nn.Module:
    """``model`` with every plain ``BatchNorm2d`` replaced by a :class:`CpuSyncBatchNorm`."""
    if type(model) is nn.BatchNorm2d:
        sync = CpuSyncBatchNorm(
            model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats
        )
        sync.load_state_dict(model.state_dict())
        return sync.to(next(model.buffers(), torch.empty(0)).device)
    for name, child in model.named_children():
        setattr(model, name, _cpu_synchronised(child))
    return model
