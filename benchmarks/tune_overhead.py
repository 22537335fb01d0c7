"""Cost of running tuning trials as dvc experiments, as ratios measured in one run.

Runs the same N trials (same sampler seed, same params) of the default tune space in a
temporary copy of this repository, as dvc experiments (`visiontune tune`) and in-process
(`visiontune tune --in-process`). Each repeat runs both modes in a random order, each in
a fresh Optuna storage, and compares the dvc run with the in-process run of the same
repeat. Prints the median and range over the repeats of the wall-time ratio and of the
extra seconds per trial.

Usage: python benchmarks/tune_overhead.py [--trials 4] [--jobs 1] [--repeats 3]
                                          [--set train.epochs=2 ...] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"dvc experiments": [], "in-process": ["--in-process"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode")
    parser.add_argument("--seed", type=int, default=0, help="seeds the order of the modes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    order = random.Random(args.seed)
    sets = [arg for item in args.set for arg in ("--set", item)]
    common = ["--trials", str(args.trials), "--jobs", str(args.jobs), *sets]
    ratios, extra = [], []
    with tempfile.TemporaryDirectory() as tmp:
        repo = _baseline(Path(tmp) / "repo")
        for repeat in range(1, args.repeats + 1):
            # A new sampler seed each repeat: its trials are new, so DVC's run-cache (which
            # would restore a repeat's identical experiments in a second) cannot help.
            seeded = [*common, "--set", f"tune.seed={repeat}"]
            labels = list(MODES)
            order.shuffle(labels)
            seconds = {}
            for label in labels:
                run = f"{label.replace(' ', '_')}-{repeat}"
                seconds[label] = _time_tune(repo, f"sqlite:///{tmp}/{run}.db", run, seeded, label)
            ratios.append(seconds["dvc experiments"] / seconds["in-process"])
            extra.append((seconds["dvc experiments"] - seconds["in-process"]) / args.trials)
            print(f"repeat {repeat}: ratio {ratios[-1]:.2f}, {extra[-1]:.1f} s more a trial")
    print(f"{args.trials} trials, --jobs {args.jobs}, {' '.join(args.set) or 'default params'}")
    print(f"dvc experiments / in-process wall time: {_spread(ratios, '.2f')}")
    print(f"extra seconds a trial:                  {_spread(extra, '.1f')}")


def _baseline(repo: Path) -> Path:
    """A git copy of this project with the pipeline reproduced up to evaluate."""
    _copy_project(repo)
    _commit(repo, "copy of visiontune")
    _run(repo, "dvc", "repro", "evaluate")
    _commit(repo, "baseline")
    return repo


def _time_tune(repo: Path, storage: str, study: str, common: list[str], label: str) -> float:
    """Wall seconds of one ``visiontune tune`` of a new study in ``storage``."""
    command = ["visiontune", "tune", "--storage", storage, "--study", study, *common]
    start = time.perf_counter()
    out = _run(repo, *command, *MODES[label])
    seconds = time.perf_counter() - start
    print(f"  {label:16s} {seconds:7.1f} s   {out.strip().splitlines()[-2][:80]}")
    return seconds


def _spread(values: list[float], spec: str) -> str:
    """Median and range of ``values``, formatted with ``spec``."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"median {mid:{spec}}  (range {low:{spec}} - {high:{spec}}, {len(values)} repeats)"


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
