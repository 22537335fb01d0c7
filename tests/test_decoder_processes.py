"""The preprocess stage's decoding processes end with it, even when it is killed: real
processes, found through /proc, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from visiontune.data.download import download
from visiontune.data.preprocess import PARALLEL_FROM

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")


def _children(pid: int) -> list[int]:
    """The live children of ``pid`` (every thread's)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:  # the thread or the process ended meanwhile
            continue
    return found


def _descendants(pid: int) -> list[int]:
    children = _children(pid)
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _alive(pid: int) -> bool:
    """Running or asleep: not gone and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until_gone(pids: list[int], seconds: float) -> list[int]:
    """The ``pids`` still alive after at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


@pytest.fixture
def reaped() -> Iterator[list[int]]:
    """Pids the test records; any still alive at its end is killed (none outlives it)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _slow_folder(root: Path) -> Path:
    """Enough files for decoding on processes: 2 classes of copies of a 2,000-px PNG (tens
    of milliseconds each to decode, so the stage runs for a minute on 2 processes)."""
    image = Image.new("RGB", (2000, 2000), (200, 30, 90))
    image.save(root / "big.png")
    content = (root / "big.png").read_bytes()
    for name in ("a", "b"):
        (root / "source" / name).mkdir(parents=True)
        for i in range(PARALLEL_FROM // 2 + 10):
            (root / "source" / name / f"{i}.png").write_bytes(content)
    return root / "source"


def test_a_killed_preprocess_stage_leaves_no_process_behind(
    tmp_path: Path, reaped: list[int]
) -> None:
    """kill -9 of `python stages/preprocess.py` while its decoders write: they (and, where
    they are spawned, multiprocessing's resource tracker) end by themselves within seconds."""
    download(str(_slow_folder(tmp_path)), tmp_path / "data" / "raw")
    (tmp_path / "params.yaml").write_text("data:\n  image_size: 224\n  channels: 3\n  workers: 2\n")
    stage = subprocess.Popen([sys.executable, str(ROOT / "stages" / "preprocess.py")], cwd=tmp_path)
    reaped.append(stage.pid)
    train = tmp_path / "data" / ".prepared.partial" / "train-images.npy"
    deadline = time.monotonic() + 120
    while not (train.is_file() and train.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stage.poll() is None and train.stat().st_size, "no decoder wrote within 2 minutes"
    descendants = _descendants(stage.pid)
    reaped += descendants
    assert len(descendants) >= 2  # the decoders (and, where spawned, the resource tracker)
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    assert _wait_until_gone(descendants, seconds=10) == []
    assert not (tmp_path / "data" / "prepared").exists()  # nothing half-written in place


@pytest.mark.parametrize("death_signal", [True, False], ids=["parent-death signal", "pid watch"])
def test_a_worker_ends_with_its_parent(death_signal: bool, reaped: list[int]) -> None:
    """A process that called end_with_parent ends once its parent is killed, through
    either way."""
    if death_signal and not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    worker = (
        "import os, time\n"
        "from visiontune.config.processes import end_with_parent\n"
        f"end_with_parent(os.getppid(), {death_signal})\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {worker!r}], stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    middle = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    reaped.append(middle.pid)
    assert middle.stdout is not None
    child = int(middle.stdout.readline())
    reaped.append(child)
    assert _alive(child)
    middle.send_signal(signal.SIGKILL)
    middle.wait()
    assert _wait_until_gone([child], seconds=10) == []
