"""Process-wide torch set-up from params: seed, CPU threads, device."""

from __future__ import annotations

import random

import numpy as np
import torch

from visiontune.config.errors import VisiontuneError


def configure(seed: int, threads: int) -> None:
    """Seed every random source and set torch's CPU threads (0 keeps torch's default)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_threads(threads)


def set_threads(threads: int) -> None:
    """torch's CPU threads for this process (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


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
