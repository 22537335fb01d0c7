"""The dvc and git command-line tools, run as subprocesses in one way (bounded in time,
output captured, a failure reported as one line)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from visiontune.config.errors import VisiontuneError

DEFAULT_TIMEOUT = 300.0  # seconds: a dvc or git call that takes longer has hung


def command(tool: str, *args: str) -> list[str]:
    """The argv of ``tool args``: dvc as this Python's module (the installed one), git as is."""
    if tool == "dvc":
        return [sys.executable, "-m", "dvc", *args]
    if tool == "git":
        return ["git", *args]
    raise ValueError(f"unknown tool {tool!r}")


def run_tool(
    tool: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tool args`` in ``cwd`` (in ``env``, else this process's environment); with
    ``check``, a non-zero exit is a VisiontuneError naming the command and its error line
    (:func:`error_line`). A call past ``timeout`` always is."""
    name = " ".join((tool, *args[:2]))
    try:
        result = subprocess.run(
            command(tool, *args),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise VisiontuneError(f"{name} did not answer in {timeout:g} s") from None
    except OSError as exc:
        raise VisiontuneError(f"cannot run {tool}: {exc}") from None
    if check and result.returncode != 0:
        raise VisiontuneError(failure(name, result))
    return result


def failure(name: str, result: subprocess.CompletedProcess[str]) -> str:
    """One line saying that the command ``name`` failed: its exit status and error line."""
    detail = error_line(result.stderr) or last_line(result.stdout)
    return f"{name} failed (exit status {result.returncode})" + (f": {detail}" if detail else "")


def files_at(repo: Path, objects: Sequence[str]) -> list[str | None]:
    """The texts of git objects named ``rev:path``, read by one ``git cat-file --batch``
    (one process however many there are); None for one that does not exist."""
    batch = "".join(f"{name}\n" for name in objects).encode()
    try:
        result = subprocess.run(
            command("git", "cat-file", "--batch"),
            cwd=repo,
            input=batch,
            capture_output=True,
            timeout=DEFAULT_TIMEOUT,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise VisiontuneError(f"git cat-file --batch failed: {exc}") from None
    data, at, texts = result.stdout, 0, []
    for _ in objects:  # "<sha> <type> <size>\n<content>\n", or "<name> missing\n"
        end = data.index(b"\n", at)
        header = data[at:end].split()
        at = end + 1
        if header[-1] == b"missing":
            texts.append(None)
            continue
        size = int(header[-1])
        texts.append(data[at : at + size].decode())
        at += size + 1
    return texts


def error_line(text: str) -> str:
    """The last ``ERROR:`` line of a tool's output (dvc follows an unexpected error with a
    "Having any troubles?" footer), else its last line; empty if there is none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or [""])[-1]


def last_line(text: str) -> str:
    """The last non-empty line of a tool's output, stripped; empty if there is none."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
