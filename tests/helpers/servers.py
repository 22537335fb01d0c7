"""What the tests that start servers and background processes share: a free port on
loopback, coverage of the server, a clean stop, waiting for a condition."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0  # seconds for `visiontune serve` to answer /health


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


@contextlib.contextmanager
def api_server(
    args: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
) -> Iterator[httpx.Client]:
    """``visiontune serve args`` on a free loopback port until the block ends, measured by
    coverage; a client for it once /health answers (the test fails with the server's log
    if it exits or does not answer in :data:`STARTUP_TIMEOUT` seconds)."""
    port = free_port()
    command = [sys.executable, "-m", "visiontune", "serve", *args, "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=measured_env(env), cwd=cwd
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy(client):
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after {STARTUP_TIMEOUT:.0f} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        stop(process)


def _healthy(client: httpx.Client) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return client.get("/health").status_code == 200
    return False
