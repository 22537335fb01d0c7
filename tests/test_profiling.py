"""``visiontune profile``: real torch.profiler runs over a few training steps."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import parse_params
from visiontune.training.profiling import WARMUP, Profile, Timing, format_profile, profile_training
from visiontune.training.trainer import PHASES

ROOT = Path(__file__).resolve().parents[1]


def test_profile_times_every_phase_ranks_operators_and_writes_a_chrome_trace(prepared, tmp_path):
    params = parse_params({"train": {"threads": 1, "crop": 1}})
    trace = tmp_path / "profile" / "trace.json"
    result = profile_training(params, prepared, steps=3, trace=trace, top=5)

    assert [phase.name for phase in result.phases] == list(PHASES)
    assert all(phase.cpu_us > 0 for phase in result.phases)
    assert sum(phase.cpu_us for phase in result.phases) <= result.step.cpu_us
    assert result.phases[0].calls == 3  # one batch made a step: gathered, augmented, normalised
    assert len(result.operators) == 5 and result.kernels == []
    assert [op.cpu_us for op in result.operators] == sorted(
        (op.cpu_us for op in result.operators), reverse=True
    )
    assert not {op.name for op in result.operators} & set(PHASES)
    assert any(op.name.startswith("aten::") for op in result.operators)

    events = json.loads(trace.read_text())["traceEvents"]
    names = {event.get("name") for event in events}
    assert set(PHASES) <= names and "aten::convolution_backward" in names
    steps = {name for name in names if name and name.startswith("ProfilerStep#")}
    assert steps == {f"ProfilerStep#{i}" for i in range(WARMUP, WARMUP + 3)}

    text = format_profile(result, params)
    assert "3 training steps of cnn (batch 128, adamw) on cpu" in text
    assert "top 5 operators by self CPU time" in text and "CUDA" not in text
    for name in (*PHASES, "other", result.operators[0].name):
        assert any(line.startswith(name) for line in text.splitlines()), name
    assert f"trace: {trace}" in text


def test_more_steps_than_training_runs_fail_in_one_line(prepared, tmp_path):
    params = parse_params({"train": {"epochs": 1, "threads": 1}})  # 280 images: 3 batches
    with pytest.raises(VisiontuneError, match=r"^--steps must be from 1 to 1 \(these params"):
        profile_training(params, prepared, steps=2, trace=tmp_path / "t.json")


def test_the_command_profiles_the_prepared_data_or_says_to_run_dvc_repro(prepared, tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    command = [sys.executable, "-m", "visiontune", "profile", "--steps", "2", "--top", "3"]
    command += ["--set", "train.threads=1"]

    missing = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 1
    assert (
        missing.stderr == "error: data/prepared/meta.json not found; run `dvc repro preprocess`\n"
    )

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prepared").symlink_to(prepared)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "top 3 operators by self CPU time" in done.stdout
    assert done.stderr == ""
    assert json.loads((tmp_path / "plots" / "profile" / "trace.json").read_text())["traceEvents"]

    bad = subprocess.run([*command, "--set", "model.lr=-1"], cwd=tmp_path, capture_output=True)
    assert (bad.returncode, bad.stderr) == (1, b"error: model.lr must be > 0, got -1\n")


def test_on_a_gpu_phases_get_cuda_columns_and_kernels_a_table():
    timing = partial(Timing, calls=2)
    result = Profile(
        steps=2,
        device=torch.device("cuda"),
        step=timing(name="ProfilerStep*", cpu_us=4000.0, device_us=2000.0),
        phases=[timing(name=name, cpu_us=1000.0, device_us=500.0) for name in PHASES],
        operators=[timing(name="aten::addmm", cpu_us=800.0)],
        kernels=[timing(name="sm90_xmma_gemm", cpu_us=0.0, device_us=1500.0)],
        trace=Path("t.json"),
    )
    lines = format_profile(result, parse_params({})).splitlines()
    assert lines[0].endswith(
        "on cuda, after 2 warm-up steps: 2.000 ms CPU time a step, 1.000 ms of CUDA kernels"
    )
    assert lines[2].split() == ["phase", "calls", "CPU", "ms", "share", "CUDA", "ms", "share"]
    assert lines[4].split() == ["forward", "1", "0.500", "25.0%", "0.250", "25.0%"]
    assert lines[7].split() == ["other", "1", "0.000", "0.0%"]
    kernels = lines.index("top 1 CUDA kernels by time")
    assert lines[kernels + 2].split() == ["sm90_xmma_gemm", "1", "0.750", "75.0%"]
