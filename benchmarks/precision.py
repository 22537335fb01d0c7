"""Mixed precision and compilation on this machine, as ratios to float32 measured in one run.

For each case, (a) the default CNN on the digits upscaled to 32 px (``--cases default``:
at the shipped 8 px) and (b) a timm model (default resnet18) at ``--timm-size`` px on a
generated folder of photo-like JPEGs (benchmarks/data_scale.py's generator), both prepared
by the project's preprocess:

- step time: the train stage's steps (``Trainer.step``: forward and loss under the
  autocast, backward, optimizer step) of each alternative -- ``train.precision`` 32 and
  bf16, and with ``--compile`` each of them under ``train.compile`` -- on the same batches,
  every alternative a freshly seeded model of its own; after a warm-up (compilation happens
  there), ``--repeats`` rounds run ``--steps`` steps of every alternative in a new random
  order each round. Each round's step time divided by float32's in that round: median and
  range over the rounds;
- val/acc and val/loss after the same epochs: the project's ``fit`` of each alternative
  from the same seed (validation under the alternative's own autocast).

Usage: python benchmarks/precision.py [--cases [default] cnn timm] [--compile] [--repeats 11]
           [--steps 5] [--threads 0] [--timm-model resnet18] [--timm-size 128] [--photos 600]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from visiontune.config.params import Params, parse_params
from visiontune.data.download import download
from visiontune.data.preprocess import prepare
from visiontune.training.fit import fit
from visiontune.training.parts import Splits, build_trainer

sys.path.insert(0, str(Path(__file__).parent))
from data_scale import make_photos  # a sibling script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", choices=("default", "cnn", "timm"), default=["cnn", "timm"]
    )
    parser.add_argument("--compile", action="store_true", help="add train.compile alternatives")
    parser.add_argument("--repeats", type=int, default=11, help="timed rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps of an alternative a round")
    parser.add_argument("--timm-model", default="resnet18")
    parser.add_argument("--timm-size", type=int, default=128)
    parser.add_argument("--photos", type=int, default=600, help="photos generated for timm")
    parser.add_argument("--threads", type=int, default=0, help="train.threads (0: torch's)")
    parser.add_argument("--cnn-epochs", type=int, default=12)
    parser.add_argument("--timm-epochs", type=int, default=4)
    args = parser.parse_args()
    alternatives = [("32", False), ("bf16", False)]
    if args.compile:
        alternatives += [("32", True), ("bf16", True)]
    print(
        f"{args.threads or torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            params, prepared = _case(case, Path(tmp, case), args)
            _measure(case, params, prepared, alternatives, args)


def _case(case: str, work: Path, args: argparse.Namespace) -> tuple[Params, Path]:
    """The case's params and its prepared folder."""
    if case in ("default", "cnn"):
        source = "digits"
        raw = {
            "data": {"image_size": 8 if case == "default" else 32},
            "train": {"epochs": args.cnn_epochs, "batch_size": 128},
        }
    else:
        source = str(work / "photos")
        make_photos(Path(source), args.photos)
        raw = {
            "data": {"source": source, "image_size": args.timm_size, "channels": 3},
            "model": {"name": args.timm_model, "lr": 0.002},
            "train": {"epochs": args.timm_epochs, "batch_size": 32},
        }
    raw["train"]["threads"] = args.threads
    params = parse_params(raw)
    download(source, work / "raw")
    prepare(work / "raw", work / "prepared", params.data)
    return params, work / "prepared"


def _with(params: Params, precision: str, compile_: bool, **train: object) -> Params:
    train = dataclasses.replace(params.train, precision=precision, compile=compile_, **train)
    return dataclasses.replace(params, train=train)


def _name(precision: str, compile_: bool) -> str:
    return ("fp32" if precision == "32" else precision) + ("+compile" if compile_ else "")


def _measure(case: str, params: Params, prepared: Path, alternatives: list, args) -> None:
    """Print the case's step-time ratios to float32 and each alternative's fit."""
    split = Splits.load(params, prepared)
    size = min(params.train.batch_size, len(split.train))
    made = split.train.full_batches(size, torch.Generator().manual_seed(0))
    batches = [next(made) for _ in range(args.steps)]
    trainers = {}
    for precision, compile_ in alternatives:
        # No lr schedule: it would end after the fit's steps, and the steps time the same.
        trainer = build_trainer(_with(params, precision, compile_, schedule="none"), split)
        start = time.perf_counter()
        for batch in batches[:3]:  # warm-up: compilation, allocator, optimizer state
            trainer.step(batch)
        warm = time.perf_counter() - start
        trainers[_name(precision, compile_)] = trainer
        print(f"  {case}: {_name(precision, compile_)} warm-up of 3 steps {warm:.1f} s")
    rounds: dict[str, list[float]] = {name: [] for name in trainers}
    order = random.Random(0)
    for _ in range(args.repeats):
        for name in order.sample(list(trainers), len(trainers)):
            trainer = trainers[name]
            start = time.perf_counter()
            for batch in batches:
                trainer.step(batch)
            rounds[name].append((time.perf_counter() - start) / len(batches))
    fits = {}
    for precision, compile_ in alternatives:
        start = time.perf_counter()
        fitted = fit(_with(params, precision, compile_), prepared)
        fits[_name(precision, compile_)] = (fitted.kept.val, time.perf_counter() - start)

    m, d, t = params.model, params.data, params.train
    print(
        f"\n{case}: {m.name} at {d.image_size} px x{d.channels}, batch {size}, "
        f"{len(split.train)} train images; {args.repeats} rounds of {args.steps} steps; "
        f"fits of {t.epochs} epochs"
    )
    print("| alternative | step ms (median) | step ÷ fp32 (range) | val/acc | val/loss | fit s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, times in rounds.items():
        ratios = [a / b for a, b in zip(times, rounds["fp32"], strict=True)]
        val, seconds = fits[name]
        print(
            f"| {name} | {1000 * statistics.median(times):.1f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            f"{val.acc:.3f} | {val.loss:.3f} | {seconds:.0f} |"
        )
    print()


if __name__ == "__main__":
    main()
