"""What the tests that start servers and background processes share: a free port on
loopback, coverage of the server, a clean stop, waiting for a condition."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measured_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a subprocess that coverage should measure too, when this run measures
    coverage (coverage's start-up hook reads COVERAGE_PROCESS_START in every Python
    process, so this is for processes that start no dvc)."""
    import coverage

    if coverage.Coverage.current() is None:
        return env
    return {**env, "COVERAGE_PROCESS_START": str(ROOT / "pyproject.toml")}


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 120) -> None:
    """Poll ``condition`` every half second until it holds; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.5)
