"""How the comparison tools scale with the number of experiments, as ratios to 20.

Builds, in a temporary git copy of this project, repositories with 20, 100 and 300 dvc
experiments of the baseline commit, then times `visiontune report` (default `--top 20`),
`visiontune heatmap --x model.lr --y model.dropout` and `dvc exp show --json` in each.
The experiments are made with `git fast-import` exactly where `dvc exp run` puts them
(`refs/exps/<baseline>/<name>`, a commit on the baseline), each with its own params.yaml,
metrics files and per-epoch DVCLive series, so they cost seconds instead of hours of
training; `dvc exp show` lists them all. Each repeat times every (command, size) pair in a
random order; printed: the median and range over the repeats of each command's time at
100 and 300 experiments divided by its time at 20 in the same repeat.

Usage: python benchmarks/many_experiments.py [--sizes 20 100 300] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LRS = (0.003, 0.005, 0.01, 0.02, 0.05)
DROPOUTS = (0.0, 0.1, 0.2, 0.3)
EPOCHS = 12
COMMANDS = {
    "visiontune report": ["visiontune", "report", "--out", "report.md"],
    "visiontune heatmap": ["visiontune", "heatmap", "--x", "model.lr", "--y", "model.dropout"],
    "dvc exp show --json": ["dvc", "exp", "show", "--json"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 300])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seeds the order and the metrics")
    args = parser.parse_args()
    order = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = _copy_project(Path(tmp) / "base")
        repos = {n: _with_experiments(base, Path(tmp) / f"n{n}", n, args.seed) for n in args.sizes}
        pairs = [(label, n) for label in COMMANDS for n in args.sizes]
        seconds: dict[tuple[str, int], list[float]] = {pair: [] for pair in pairs}
        for repeat in range(1, args.repeats + 1):
            order.shuffle(pairs)
            for label, n in pairs:
                seconds[label, n].append(_timed(repos[n], COMMANDS[label]))
            print(f"repeat {repeat} done")
    reference = min(args.sizes)
    print(f"time at N experiments / time at {reference}, {args.repeats} repeats:")
    for label in COMMANDS:
        for n in args.sizes:
            if n != reference:
                ratios = [
                    a / b for a, b in zip(seconds[label, n], seconds[label, reference], strict=True)
                ]
                print(f"  {label:20s} N={n:<4d} {_spread(ratios)}")


def _with_experiments(base: Path, repo: Path, count: int, seed: int) -> Path:
    """A copy of ``base`` whose baseline commit has ``count`` experiments."""
    shutil.copytree(base, repo, symlinks=True)
    baseline = _run(repo, "git", "rev-parse", "HEAD").strip()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    rng = random.Random(seed)
    stream = []
    for i in range(count):
        lr, dropout = LRS[i % len(LRS)], DROPOUTS[i // len(LRS) % len(DROPOUTS)]
        params["model"].update(lr=lr, dropout=dropout)
        params["train"]["seed"] = i // (len(LRS) * len(DROPOUTS))
        val = 0.9 + 0.09 * rng.random()
        files = {
            "params.yaml": yaml.safe_dump(params, sort_keys=False),
            "metrics/train.json": _json(
                train={"loss": 0.05, "acc": val}, val={"loss": 1 - val, "acc": val}, epochs=EPOCHS
            ),
            "metrics/evaluate.json": _json(test={"acc": val - 0.01, "loss": 1.01 - val}),
            "plots/train/plots/metrics/val/acc.tsv": _series("acc", val),
            "plots/train/plots/metrics/val/loss.tsv": _series("loss", 1 - val),
        }
        ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/exp-{i:04d}"
        stream.append(f"commit {ref}\ncommitter bench <b@e> {1_700_000_000 + i} +0000\n")
        stream.append(_data(f"dvc: commit experiment {i}") + f"from {baseline}\n")
        stream += [f"M 100644 inline {path}\n{_data(text)}" for path, text in files.items()]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input="".join(stream), text=True)
    listed = json.loads(_run(repo, "dvc", "exp", "show", "--json"))
    found = sum(len(group["revs"]) for row in listed for group in row.get("experiments") or [])
    assert found == count, f"dvc exp show lists {found} experiments, made {count}"
    return repo


def _json(**tree: object) -> str:
    return json.dumps(tree, indent=2) + "\n"


def _series(column: str, last: float) -> str:
    rows = [f"{step}\t{last * step / EPOCHS}" for step in range(1, EPOCHS + 1)]
    return "\n".join([f"step\t{column}", *rows]) + "\n"


def _data(text: str) -> str:
    return f"data {len(text.encode())}\n{text}\n"


def _timed(repo: Path, command: list[str]) -> float:
    start = time.perf_counter()
    _run(repo, *command)
    return time.perf_counter() - start


def _spread(values: list[float]) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"median {mid:.2f}  (range {low:.2f} - {high:.2f})"


def _copy_project(target: Path) -> Path:
    """A git repository with this project's tracked files, committed (the baseline)."""
    listed = _run(ROOT, "git", "ls-files", "-z")
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    _run(target, "git", "init", "-q", "-b", "main")
    _run(target, "git", "add", "-A")
    _run(target, "git", "commit", "-qm", "baseline")
    return target


def _run(repo: Path, *command: str) -> str:
    tools = {
        "dvc": [sys.executable, "-m", "dvc"],
        "visiontune": [sys.executable, "-m", "visiontune"],
    }
    full = [*tools.get(command[0], [command[0]]), *command[1:]]
    return subprocess.run(full, cwd=repo, capture_output=True, text=True, check=True).stdout


if __name__ == "__main__":
    main()
