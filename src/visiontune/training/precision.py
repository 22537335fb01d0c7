"""How training computes: ``train.precision`` (:class:`Precision`) and ``train.compile``
(:func:`compiled`).

Both apply to training only: the steps of the train stage, the finders and the profiler
(all through ``Trainer.step``) and the validation pass after each epoch (``fit``), which
runs under the same autocast through the same compiled network. The evaluate and
robustness stages, the ONNX export and the server score the saved float32 weights in
float32, uncompiled: they measure the model as it is served.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from visiontune.config.errors import VisiontuneError, reason

# train.precision -> the autocast dtype ("32": no autocast, today's float32 path).
DTYPES = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


class Precision:
    """``train.precision`` on a device: the autocast around forward and loss, the backward
    pass and the optimizer step (through a ``GradScaler`` for float16).

    ``"32"`` is plain float32 (no autocast, no scaler: the code path, and the results,
    of before mixed precision); ``"bf16"`` autocasts to bfloat16 (CPU and CUDA: same
    exponent range as float32, no scaling needed); ``"16"`` autocasts to float16 and scales
    the loss so that small gradients do not underflow (CUDA only).
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "16" else None

    @classmethod
    def of(cls, name: str, device: torch.device) -> Precision:
        """``train.precision`` ``name`` on the device training runs on (``train.device``
        resolved); VisiontuneError for float16 anywhere but CUDA."""
        if name == "16" and device.type != "cuda":
            raise VisiontuneError(
                f"train.precision=16 needs CUDA; the device is {device.type}: use bf16 or 32"
            )
        return cls(name, device)

    def autocast(self) -> AbstractContextManager:
        """The context for forward passes and the loss: autocast to the dtype, or none."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, of the scaled loss with a scaler."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with a scaler, unscaled and skipped when a gradient is not
        finite, and the scale updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()


def compiled(model: nn.Module) -> nn.Module:
    """``model`` through ``torch.compile`` (``train.compile``), for forward passes only:
    ``model`` itself stays what is saved (a compiled module's state_dict keys carry
    ``_orig_mod.``). torch compiles on the first call; a failure then (no C compiler for
    the CPU, say) is one VisiontuneError line naming train.compile."""
    return _Compiled(model)


class _Compiled(nn.Module):
    """A compiled module; its compile failures are VisiontuneErrors. ``train()`` and
    ``eval()`` reach the module inside."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(model)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        try:
            return self.compiled(inputs)
        except RuntimeError as exc:
            from torch._dynamo.exc import BackendCompilerFailed

            if not isinstance(exc, BackendCompilerFailed):
                raise
            raise VisiontuneError(
                f"train.compile=true but torch.compile failed ({reason(exc, innermost=True)}); "
                "set train.compile=false"
            ) from None
