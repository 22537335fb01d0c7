"""Pruning against none: wall time and best val accuracy of the same study budget.

For each sampler seed, runs the same number of trials of the default tune space with
``tune.pruner: none`` and with each pruner asked for, in a random order, in-process on the
prepared data of a temporary copy of a dataset (``mnist_subset`` at 16 px unless --set says
otherwise; a key given with --set is fixed for every trial and leaves the space). Trials
run in-process (``visiontune tune --in-process``) so that the times are training, which
pruning saves, not dvc's fixed cost per trial. Prints, per pruner, the
median and range over the seeds of its wall (and CPU) time as a ratio of the unpruned
study's, of the difference in best val.acc (the best complete trial), and the trials it
pruned. A first one-trial study, untimed, pays the imports.

Usage: python benchmarks/tune_pruning.py [--trials 20] [--seeds 3] [--pruner median ...]
                                         [--set data.image_size=28 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from visiontune.config.params import load_params, parse_override, with_overrides
from visiontune.config.tune_settings import PRUNERS, load_settings
from visiontune.data.download import download
from visiontune.data.preprocess import prepare
from visiontune.tuning.options import TuneOptions
from visiontune.tuning.tuner import tune

ROOT = Path(__file__).resolve().parents[1]

DATA = {"data.source": "mnist_subset", "data.image_size": 16}


class Seconds(NamedTuple):
    """A study's wall time, and the CPU time of this process (less sensitive to other
    processes on a shared machine)."""

    wall: float
    cpu: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pruner", action="append", choices=PRUNERS[1:], metavar="NAME")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    pruners = args.pruner or ["median"]
    overrides = {**DATA, **dict(parse_override(text) for text in args.set)}
    data = {k: v for k, v in overrides.items() if k.startswith("data.")}
    params = with_overrides(load_params(), data)
    fixed = {k: v for k, v in overrides.items() if not k.startswith("data.")}
    settings = load_settings(ROOT)
    space = tuple(param for param in settings.space if param.key not in fixed)
    settings = dataclasses.replace(settings, space=space)
    ratios: dict[str, list[float]] = {name: [] for name in pruners}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in pruners}
    gains: dict[str, list[float]] = {name: [] for name in pruners}
    order = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        download(params.data.source, repo / "data" / "raw")
        prepare(repo / "data" / "raw", repo / "data" / "prepared", params.data)
        _study(params, settings, "none", -1, 1, {**fixed, "train.epochs": 1}, repo)  # untimed
        for seed in range(args.seeds):
            modes = ["none", *pruners]
            order.shuffle(modes)
            results = {
                mode: _study(params, settings, mode, seed, args.trials, fixed, repo)
                for mode in modes
            }
            base_seconds, base_best, _ = results["none"]
            for name in pruners:
                seconds, best, _ = results[name]
                ratios[name].append(seconds.wall / base_seconds.wall)
                cpu_ratios[name].append(seconds.cpu / base_seconds.cpu)
                gains[name].append(best - base_best)
            line = "  ".join(
                f"{m} {s.wall:.0f} s best {b:.4f} ({p} pruned)" for m, (s, b, p) in results.items()
            )
            print(f"seed {seed}: {line}")
    print(f"\n{args.trials} trials a study, {args.seeds} seeds, {_describe(overrides)}")
    for name in pruners:
        print(f"{name}: wall time / none's {_spread(ratios[name], '.2f')}")
        print(f"{' ' * len(name)}  CPU time / none's  {_spread(cpu_ratios[name], '.2f')}")
        print(f"{' ' * len(name)}  best val.acc - none's {_spread(gains[name], '+.4f')}")


def _study(params, settings, pruner: str, seed: int, trials: int, fixed: dict, repo: Path):
    """Wall seconds, best complete val.acc and pruned trials of one in-process study."""
    options = TuneOptions(
        trials=trials,
        storage=f"sqlite:///{repo}/{pruner}-{seed}.db",
        study=f"{pruner}-{seed}",
        fixed=fixed,
        in_process=True,
        settings=dataclasses.replace(settings, seed=max(seed, 0), pruner=pruner),
    )
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        study = tune(params, options, repo)
    seconds = Seconds(time.perf_counter() - start, time.process_time() - cpu)
    pruned = sum(trial.state.name == "PRUNED" for trial in study.trials)
    return seconds, study.best_value, pruned


def _describe(overrides: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in overrides.items())


def _spread(values: list[float], spec: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"median {mid:{spec}}  (range {low:{spec}} to {high:{spec}})"


if __name__ == "__main__":
    main()
