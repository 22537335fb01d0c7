"""``visiontune profile``: real torch.profiler runs over a few training steps."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from visiontune.errors import VisiontuneError
from visiontune.params import parse_params
from visiontune.profiling import WARMUP, format_profile, profile_training
from visiontune.training import PHASES

ROOT = Path(__file__).resolve().parents[1]


def test_profile_times_every_phase_ranks_operators_and_writes_a_chrome_trace(prepared, tmp_path):
    params = parse_params({"train": {"threads": 1, "crop": 1}})
    trace = tmp_path / "profile" / "trace.json"
    result = profile_training(params, prepared, steps=3, trace=trace, top=5)

    assert [phase.name for phase in result.phases] == list(PHASES)
    assert all(phase.cpu_us > 0 for phase in result.phases)
    assert sum(phase.cpu_us for phase in result.phases) <= result.step.cpu_us
    assert result.phases[0].calls == 2 * 3  # the batch's slice, then augment + normalise
    assert len(result.by_cpu) == 5 and result.by_device == []
    assert [op.cpu_us for op in result.by_cpu] == sorted(
        (op.cpu_us for op in result.by_cpu), reverse=True
    )
    assert not {op.name for op in result.by_cpu} & set(PHASES)
    assert any(op.name.startswith("aten::") for op in result.by_cpu)

    events = json.loads(trace.read_text())["traceEvents"]
    names = {event.get("name") for event in events}
    assert set(PHASES) <= names and "aten::convolution_backward" in names
    steps = {name for name in names if name and name.startswith("ProfilerStep#")}
    assert steps == {f"ProfilerStep#{i}" for i in range(WARMUP, WARMUP + 3)}

    text = format_profile(result, params)
    assert "3 training steps of cnn (batch 128, adamw) on cpu" in text
    assert "top 5 operators by self CPU time" in text and "CUDA" not in text
    for name in (*PHASES, "other", result.by_cpu[0].name):
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
