"""``train.cpu_kernels``: which of torch's CPU code paths a run may take, and so on which
machines its results are the same bit for bit.

torch picks its kernels by the CPU's instruction set: ATen's vectorised ops, oneDNN's
convolutions and MKL's matrix products each take AVX-512, AVX2 or older code, and every
path rounds differently, so one model trained on two kinds of CPU differs in its last bits
(and after a few epochs, in its accuracy). Pinning the paths makes the same params give the
same model everywhere the path exists, with a fixed thread count (``train.threads``):

- ``avx2``: ATen and oneDNN take their AVX2 code, MKL its reproducible mode
  (``MKL_CBWR=COMPATIBLE``): every CPU with AVX2 (Intel since 2013, every AMD Zen);
- ``baseline``: ATen's x86-64 baseline code, no oneDNN or NNPACK, MKL reproducible: every
  x86-64 CPU, at about 3x the training time of ``native``;
- ``native``: the fastest the CPU has (AVX-512, AMX): results differ between CPU kinds.

Set through the environment, which each library reads at its first computation: a stage
requests its kernels when it starts, before anything runs (:func:`request`). Only on
x86-64; elsewhere there is nothing to pin. Light: imports no torch.

torch.compile's on-disk cache does not tell kernels built for one ATen capability from
another's: a process that loads a kernel another built for other code paths can crash
(``double free or corruption``). A pinned kind keeps its compiled kernels apart, in a
folder of its own under the cache (``TORCHINDUCTOR_CACHE_DIR``).
"""

from __future__ import annotations

import getpass
import os
import platform
import tempfile
from pathlib import Path

CPU_KERNELS = ("avx2", "baseline", "native")
INDUCTOR_CACHE = "TORCHINDUCTOR_CACHE_DIR"  # where torch.compile keeps its kernels
# ATen's capability each kind runs (torch.backends.cpu.get_cpu_capability()).
CAPABILITY = {"avx2": "AVX2", "baseline": "DEFAULT"}
_ENVIRONMENT = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"},
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
    "native": {},
}


def pinned(kind: str) -> bool:
    """Whether ``kind`` pins kernels here: not ``native``, and an x86-64 machine."""
    return kind != "native" and platform.machine().lower() in ("x86_64", "amd64")


def request(kind: str) -> None:
    """Ask torch's libraries for the kernels of ``kind``, before their first computation
    in this process (a later request changes nothing that already ran), and give
    torch.compile a cache of its own for them."""
    if pinned(kind):
        os.environ.update(_ENVIRONMENT[kind])
        os.environ[INDUCTOR_CACHE] = str(compile_cache(kind))


def compile_cache(kind: str) -> Path:
    """torch.compile's cache for the kernels of ``kind``: a folder of its own under the one
    torch would use (``$TORCHINDUCTOR_CACHE_DIR``, else torch's default)."""
    folder = f"cpu_kernels_{kind}"
    given = os.environ.get(INDUCTOR_CACHE)
    if given and Path(given).name == folder:  # asked for before in this process
        return Path(given)
    user = "".join(c if c.isalnum() or c in "-_." else "_" for c in getpass.getuser())
    return Path(given or Path(tempfile.gettempdir()) / f"torchinductor_{user}") / folder
