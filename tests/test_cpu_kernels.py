"""train.cpu_kernels: the shipped default trains the same model whatever kernels the machine
would pick; ``native`` does not. Other CPU kinds are emulated by capping each library's
instruction set through its own environment variable (ATen, oneDNN, glibc's libm)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.dvc_repo import ROOT

from visiontune.config import cpu_kernels

# What an older or another machine's libraries would pick here: AVX-512 (this machine's
# best, if it has it), and the x86-64 baseline with SSE4.1 convolutions and no FMA in libm.
MACHINES = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "baseline": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F,-AVX512DQ,-AVX512BW,-AVX512VL",
    },
}

pytestmark = pytest.mark.skipif(
    not cpu_kernels.pinned("avx2") or torch.backends.cpu.get_cpu_capability() == "DEFAULT",
    reason="needs an x86-64 CPU with AVX2",
)


def trained_weights(folder: Path, prepared: Path, kernels: str, machine: str) -> subprocess.Popen:
    """The real train stage, started in ``folder`` with the shipped params (one epoch) and
    ``train.cpu_kernels: kernels``, on an emulated ``machine``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=1, cpu_kernels=kernels)
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "data").mkdir()
    (folder / "data" / "prepared").symlink_to(prepared)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(tuple(MACHINES["baseline"]))}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py")],
        cwd=folder,
        env={**clean, **MACHINES[machine]},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def digest(folder: Path) -> str:
    state = torch.load(folder / "models" / "model.pt", weights_only=True)["state_dict"]
    return hashlib.md5(b"".join(t.numpy().tobytes() for t in state.values())).hexdigest()


def test_the_shipped_kernels_train_the_same_model_on_every_emulated_machine(prepared, tmp_path):
    runs = {
        (kernels, machine): tmp_path / f"{kernels}-{machine}"
        for kernels in ("avx2", "native")
        for machine in MACHINES
    }
    started = {key: trained_weights(folder, prepared, *key) for key, folder in runs.items()}
    for key, process in started.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, (key, stderr)
        assert "warning: train.cpu_kernels" not in stderr, stderr
    models = {key: digest(folder) for key, folder in runs.items()}
    assert models["avx2", "avx512"] == models["avx2", "baseline"]
    assert models["native", "avx512"] != models["native", "baseline"]  # the emulation bites


def test_compiled_kernels_of_pinned_code_paths_are_cached_apart(monkeypatch, tmp_path):
    """torch.compile's cache does not key kernels by ATen capability: a native run that
    loaded an avx2 run's kernels crashed (double free or corruption)."""
    monkeypatch.setenv(cpu_kernels.INDUCTOR_CACHE, str(tmp_path / "cache"))
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"):
        monkeypatch.delenv(name, raising=False)
    cpu_kernels.request("native")
    assert os.environ[cpu_kernels.INDUCTOR_CACHE] == str(tmp_path / "cache")
    cpu_kernels.request("avx2")
    avx2 = os.environ[cpu_kernels.INDUCTOR_CACHE]
    assert avx2 == str(tmp_path / "cache" / "cpu_kernels_avx2")
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"
    cpu_kernels.request("avx2")  # again, as every stage and fit of a process does
    assert os.environ[cpu_kernels.INDUCTOR_CACHE] == avx2
