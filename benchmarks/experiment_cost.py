"""What an experiment costs beyond its training, as ratios measured in one run.

Each comparison times two commands against each other in clones of this repository (its
committed state, default params), the two interleaved in random order and repeated:

(a) fresh clone: `dvc exp run -S model.lr=X` over `dvc repro`, each in a new clone whose
    cache is empty (both run every stage, sweep included);
(b) prepared clone: the whole pipeline `dvc exp run -S model.lr=X` over
    `dvc exp run evaluate -S model.lr=X` (a new X every run: nothing restored from the
    run-cache; the sweep reuses its stored cells);
(c) repeated experiment: `dvc exp run --temp evaluate -S model.lr=X` run a second time with
    the same X, over its first run;
(d) a tuning trial that measures robustness too: `dvc exp run --temp robustness -S
    model.lr=X` over the trial as it runs, `dvc exp run --temp evaluate -S model.lr=X`.

Usage: python benchmarks/experiment_cost.py [--repeats 3] [--only a,b,c,d] [--rev REV]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DVC = (sys.executable, "-m", "dvc")
GIT = ("git", "-c", "user.name=bench", "-c", "user.email=bench@visiontune.invalid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="a,b,c,d", help="comparisons to run, e.g. a,c")
    parser.add_argument("--rev", default="HEAD", help="commit to measure (default HEAD)")
    args = parser.parse_args()
    lrs = (f"{0.011 + i / 1000:.3f}" for i in itertools.count())  # never the same twice
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        origin = work / "origin.git"
        _run(work, *GIT, "clone", "-q", "--bare", str(ROOT), str(origin))
        rev = _run(work, *GIT, "-C", str(ROOT), "rev-parse", args.rev).strip()
        clones = (work / f"clone-{i}" for i in itertools.count())

        def fresh() -> Path:
            path = next(clones)
            _run(work, *GIT, "clone", "-q", str(origin), str(path))
            _run(path, *GIT, "checkout", "-q", rev)
            return path

        prepared = fresh()
        _run(prepared, *DVC, "repro")
        _run(prepared, *GIT, "add", "-A")
        _run(prepared, *GIT, "commit", "-qm", "baseline", "--allow-empty")
        comparisons: dict[str, tuple[str, Callable[[], float], str, Callable[[], float]]] = {
            "a": (
                "fresh clone: dvc exp run",
                lambda: _timed(fresh(), *DVC, "exp", "run", "-S", f"model.lr={next(lrs)}"),
                "dvc repro",
                lambda: _timed(fresh(), *DVC, "repro"),
            ),
            "b": (
                "dvc exp run (whole pipeline)",
                lambda: _timed(prepared, *DVC, "exp", "run", "-S", f"model.lr={next(lrs)}"),
                "dvc exp run evaluate",
                lambda: _timed(
                    prepared, *DVC, "exp", "run", "evaluate", "-S", f"model.lr={next(lrs)}"
                ),
            ),
            "d": (
                "trial to robustness",
                lambda: _trial(prepared, "robustness", next(lrs)),
                "trial to evaluate",
                lambda: _trial(prepared, "evaluate", next(lrs)),
            ),
        }
        for key in args.only.split(","):
            if key == "c":
                _repeated(prepared, lrs, args.repeats)
                continue
            label, measure, reference_label, reference = comparisons[key]
            ratios = []
            for _ in range(args.repeats):
                pair = [("x", measure), ("ref", reference)]
                random.shuffle(pair)
                times = {name: run() for name, run in pair}
                ratios.append(times["x"] / times["ref"])
                print(f"  {label} {times['x']:.1f} s, {reference_label} {times['ref']:.1f} s")
            _report(f"({key}) {label} / {reference_label}", ratios)


def _repeated(repo: Path, lrs, repeats: int) -> None:
    """(c): the second identical temp experiment over the first; its order is its nature."""
    ratios = []
    for _ in range(repeats):
        command = (*DVC, "exp", "run", "--temp", "evaluate", "-S", f"model.lr={next(lrs)}")
        first, second = _timed(repo, *command), _timed(repo, *command)
        ratios.append(second / first)
        print(f"  first {first:.1f} s, repeated {second:.1f} s")
    _report("(c) repeated experiment / its first run", ratios)


def _trial(repo: Path, target: str, lr: str) -> float:
    """A tuner's trial: a temp experiment of the pipeline up to ``target``."""
    return _timed(repo, *DVC, "exp", "run", "--temp", target, "-S", f"model.lr={lr}")


def _report(label: str, ratios: list[float]) -> None:
    print(
        f"{label}: median {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} pairs)",
        flush=True,
    )


def _timed(repo: Path, *command: str) -> float:
    start = time.perf_counter()
    _run(repo, *command)
    return time.perf_counter() - start


def _run(cwd: Path, *command: str) -> str:
    """Run ``command`` in ``cwd``; a clone's stages import the clone's own source."""
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


if __name__ == "__main__":
    main()
