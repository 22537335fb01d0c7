"""Cost of running tuning trials as dvc experiments, as a ratio measured in one run.

Runs the same N trials (same sampler seed, same params) of the default tune space twice in
a temporary copy of this repository: as dvc experiments (`visiontune tune`) and in-process
(`visiontune tune --in-process`), and prints wall time of the first divided by the second.

Usage: python benchmarks/tune_overhead.py [--trials 4] [--jobs 1] [--set train.epochs=2 ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = _copy_project(Path(tmp) / "repo")
        _commit(repo, "copy of visiontune")
        _run(repo, "dvc", "repro", "evaluate")
        _commit(repo, "baseline")
        sets = [arg for item in args.set for arg in ("--set", item)]
        common = ["--trials", str(args.trials), "--jobs", str(args.jobs), *sets]
        timings = {}
        for label, extra in (("dvc experiments", []), ("in-process", ["--in-process"])):
            storage = f"sqlite:///{tmp}/{label.replace(' ', '_')}.db"
            start = time.perf_counter()
            out = _run(repo, "visiontune", "tune", "--storage", storage, *common, *extra)
            timings[label] = time.perf_counter() - start
            print(f"{label:16s} {timings[label]:7.1f} s   {out.strip().splitlines()[-2][:90]}")
    ratio = timings["dvc experiments"] / timings["in-process"]
    per_trial = (timings["dvc experiments"] - timings["in-process"]) / args.trials
    print(f"{args.trials} trials, --jobs {args.jobs}, {' '.join(args.set) or 'default params'}")
    print(f"dvc experiments / in-process wall time: {ratio:.2f}  ({per_trial:.1f} s more a trial)")


def _copy_project(target: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    _run(target, "git", "init", "-q", "-b", "main")
    return target


def _commit(repo: Path, message: str) -> None:
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "--allow-empty", "-qm", message)


def _run(repo: Path, *command: str) -> str:
    tools = {
        "dvc": [sys.executable, "-m", "dvc"],
        "visiontune": [sys.executable, "-m", "visiontune"],
    }
    full = [*tools.get(command[0], [command[0]]), *command[1:]]
    env_identity = ["-c", "user.name=bench", "-c", "user.email=bench@visiontune.invalid"]
    if command[0] == "git":
        full = ["git", *env_identity, *command[1:]]
    result = subprocess.run(full, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


if __name__ == "__main__":
    main()
