"""The LR range test and the batch-size finder: real training on a small digits set."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import Params, parse_params
from visiontune.training.finders import _out_of_memory, batch_size_find, lr_find

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 280  # 40 per class, 70% of them in the train split


def small(**train: object) -> Params:
    """Default params on a small model and one thread, overridden by ``train``."""
    return parse_params(
        {
            "model": {"width": 8, "blocks": 2},
            "train": {"threads": 1, "batch_size": 32, "device": "cpu", **train},
        }
    )


def printed_value(text: str, key: str) -> str:
    """The value in the printed ``dvc exp run -S <key>=<value>``."""
    match = re.search(rf"^use it: dvc exp run -S {re.escape(key)}=(\S+)$", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def test_lr_find_records_the_range_and_suggests_an_lr_in_it(prepared, tmp_path, capsys):
    out = tmp_path / "plots" / "lr_find.html"
    result = lr_find(small(), prepared, out=out, min_lr=1e-4, max_lr=1.0)
    lrs = result.lrs
    assert not result.stopped_early and len(lrs) == 100
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1.0)
    assert lrs == sorted(set(lrs))  # strictly increasing
    assert len(result.losses) == len(result.raw_losses) == len(lrs)
    assert all(math.isfinite(loss) for loss in result.losses + result.raw_losses)
    assert result.losses[0] == pytest.approx(result.raw_losses[0])  # bias-corrected EMA
    assert min(result.losses) < 0.8 * result.losses[0]
    assert result.suggestion in lrs
    assert "plotly" in out.read_text()
    printed = capsys.readouterr().out
    assert 1e-4 <= float(printed_value(printed, "model.lr")) <= 1.0
    assert f"plot: {out}" in printed


def test_lr_find_stops_early_when_the_loss_diverges(prepared, tmp_path, capsys):
    result = lr_find(
        small(optimizer="sgd"), prepared, out=tmp_path / "lr.html", min_lr=1e-2, max_lr=1000.0
    )
    assert result.stopped_early and len(result.lrs) < 100
    assert all(math.isfinite(loss) for loss in result.losses)
    assert result.losses[-1] > 4 * min(result.losses)
    assert result.lrs[0] <= result.suggestion < result.lrs[-1]
    assert "stopped: smoothed loss above 4x its best" in capsys.readouterr().out


def test_lr_find_is_reproducible(prepared, tmp_path):
    runs = [
        lr_find(
            small(crop=1), prepared, out=tmp_path / "lr.html", min_lr=1e-3, max_lr=0.1, steps=20
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("min_lr", "max_lr", "message"),
    [
        (0.0, 1.0, "--min-lr must be > 0, got 0"),
        (-1.0, 1.0, "--min-lr must be > 0, got -1"),
        (0.1, 0.01, "--max-lr must be > --min-lr, got 0.01 <= 0.1"),
        (0.1, 0.1, "--max-lr must be > --min-lr, got 0.1 <= 0.1"),
    ],
)
def test_lr_find_rejects_a_bad_range_before_loading_data(tmp_path, min_lr, max_lr, message):
    out = tmp_path / "lr.html"
    with pytest.raises(VisiontuneError) as info:
        lr_find(small(), tmp_path / "missing", out=out, min_lr=min_lr, max_lr=max_lr)
    assert str(info.value) == message
    assert not out.exists()


def test_batch_size_find_measures_each_size_that_fits(prepared, capsys):
    results = batch_size_find(small(), prepared, candidates=[64, 16, 1000, 16])
    assert [r.batch_size for r in results] == [16, 64, 1000]
    measured = [r for r in results if r.images_per_s is not None]
    assert [r.batch_size for r in measured] == [16, 64]
    assert all(r.images_per_s > 0 and not r.skipped for r in measured)
    assert results[2].skipped == f"larger than the train split ({TRAIN_IMAGES})"
    [suggested] = [r for r in results if r.suggested]
    assert suggested in measured
    fastest = max(r.images_per_s for r in measured)
    assert suggested.images_per_s >= 0.95 * fastest
    printed = capsys.readouterr().out
    assert printed_value(printed, "train.batch_size") == str(suggested.batch_size)
    assert "1000  skipped: larger than the train split" in printed
    assert "a different batch size usually wants a different lr" in printed


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([16, 1], r"^--candidates must be >= 2 to measure training, got 1$"),
        ([1000], r"^no candidate batch size could be measured; try smaller ones$"),
    ],
)
def test_batch_size_find_errors_are_one_line(prepared, candidates, message):
    with pytest.raises(VisiontuneError, match=message):
        batch_size_find(small(), prepared, candidates=candidates)


def test_allocation_failures_count_as_out_of_memory():
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 62, dtype=torch.uint8)  # more than any machine can allocate
    assert _out_of_memory(info.value)
    assert not _out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def visiontune(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "visiontune", *args, "--set", "train.threads=1"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path) -> Path:
    """A directory with the repository's params.yaml, as the CLI expects to run in."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_cli_lr_find_prints_the_suggestion_and_writes_the_plot(prepared, project):
    shutil.copytree(prepared, project / "data" / "prepared")
    result = visiontune(project, "lr-find")
    assert result.returncode == 0, result.stderr
    assert 1e-5 <= float(printed_value(result.stdout, "model.lr")) <= 1.0
    assert "plotly" in (project / "plots" / "lr_find.html").read_text()


@pytest.mark.parametrize("command", ["lr-find", "batch-size"])
def test_cli_without_prepared_data_is_a_one_line_error(project, command):
    result = visiontune(project, command)
    assert result.returncode == 1
    assert result.stderr == "error: data/prepared/meta.json not found; run `dvc repro preprocess`\n"
    assert not (project / "plots").exists()
