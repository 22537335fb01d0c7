"""Process-wide torch set-up from params: seed, CPU threads and kernels, device."""

from __future__ import annotations

import random
import sys

import numpy as np
import torch

from visiontune.config import cpu_kernels
from visiontune.config.errors import VisiontuneError

_warned: set[str] = set()  # the kernel warnings printed in this process


def configure(seed: int, threads: int, kernels: str = "native") -> None:
    """Seed every random source and set torch's CPU threads (0 keeps torch's default) and
    kernels (``train.cpu_kernels``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_cpu(threads, kernels)


def set_cpu(threads: int, kernels: str = "native") -> None:
    """torch's CPU threads for this process (0 keeps torch's default) and its kernels
    (:mod:`visiontune.config.cpu_kernels`); a CPU that cannot run the kernels asked for, or a
    process whose first computation already chose others, is told once on stderr."""
    if threads > 0:
        torch.set_num_threads(threads)
    if not cpu_kernels.pinned(kernels):
        return
    cpu_kernels.request(kernels)
    torch.backends.nnpack.set_flags(False)  # NNPACK picks its own AVX2 code
    if kernels == "baseline":
        torch.backends.mkldnn.enabled = False
    running = torch.backends.cpu.get_cpu_capability()
    if running != cpu_kernels.CAPABILITY[kernels] and kernels not in _warned:
        _warned.add(kernels)
        print(
            f"warning: train.cpu_kernels={kernels}, but torch runs its {running} kernels here "
            "(a CPU without them, or set before by this process): results may differ from "
            "other machines'",
            file=sys.stderr,
        )


def resolve_device(name: str) -> torch.device:
    """Turn ``train.device`` into a torch device; ``auto`` picks CUDA, then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise VisiontuneError(f"train.device={name} but no such CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise VisiontuneError("train.device=mps but MPS is not available")
    return torch.device(name)
