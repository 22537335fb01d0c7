"""Data at scale: preprocess and training on a generated folder of photo-like JPEGs.

For each folder size N (default 3,000 and 30,000 JPEGs of 240-640 px in 10 learnable
classes, generated here: no download), in processes of their own:

- preprocess at ``--image-size`` px, RGB, on ``--workers`` processes: ``python
  stages/preprocess.py`` timed as a whole process, its peak RSS (the stage's process and,
  apart, its largest decoding process), its ms an image, and that time divided by the decode
  floor: a process that forks as many processes, which open the same files with Pillow,
  draft-decode and resize them and send nothing back (timed as a whole process too). The
  two, and ``--baseline``'s stage if given (another checkout's stages/preprocess.py on its
  own src/), run interleaved in random order, ``--repeats`` times: median and range of each
  ratio;
- bytes on disk: the prepared files per byte of the source folder;
- ``--steps`` training steps of the default CNN through the train split's batch source
  (resident or streamed, as ``train.resident_mb`` decides): peak RSS, and the median step
  time divided by the bare forward+backward+step on the same batches already in memory
  (1.0: loading hides behind compute); ``--steps 0`` leaves training out.

Usage: python benchmarks/data_scale.py [--sizes 3000 30000] [--image-size 224]
           [--workers 0] [--steps 30] [--repeats 3] [--cache DIR] [--baseline CHECKOUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=0, help="data.workers (0 = all cores)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=3, help="preprocess/floor pairs")
    parser.add_argument("--cache", type=Path, help="keep generated folders here")
    parser.add_argument("--baseline", type=Path, help="a checkout whose preprocess to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        rows = [measure(n, cache / f"photos-{n}", Path(tmp, f"work-{n}"), args) for n in args.sizes]
    print(f"\n{args.image_size} px RGB, data.workers={args.workers}, {args.steps} train steps")
    print(
        "| photos | folder MB | stage | preprocess peak RSS MB (decoder) | ms an image |"
        " ÷ decode floor (range) | disk ÷ folder | train peak RSS MB | streamed |"
        " step ÷ bare (range) |"
    )
    print("|---:|---:|:--|---:|---:|---:|---:|---:|:-:|---:|")
    for row in rows:
        for stage, prep in row["stages"].items():
            print(
                f"| {row['n']:,} | {row['folder_mb']:.0f} | {stage} | {prep['rss_mb']:.0f}"
                f" ({prep['worker_rss_mb']:.0f}) | {prep['ms_per_image']:.2f} |"
                f" {_spread(prep['ratios'])} | {row['disk_ratio']:.2f} | {row['train']} |"
            )


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def measure(n: int, folder: Path, work: Path, args: argparse.Namespace) -> dict:
    """Every figure of one folder size."""
    make_photos(folder, n)
    folder_bytes = sum(path.stat().st_size for path in folder.rglob("*.jpg"))
    work.mkdir(parents=True)
    _child("download", folder, work / "data" / "raw")
    data = f"data:\n  image_size: {args.image_size}\n  channels: 3\n  workers: {args.workers}\n"
    (work / "params.yaml").write_text(data)
    stages = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    runs: dict[str, list[dict]] = {kind: [] for kind in [*stages, "floor"]}
    for _ in range(args.repeats):
        for kind in random.sample(list(runs), len(runs)):
            if kind == "floor":
                runs[kind].append(_child("floor", work, args.image_size, args.workers))
            else:
                runs[kind].append(_child("preprocess", stages[kind], work))
    prepared_bytes = sum(path.stat().st_size for path in (work / "data" / "prepared").iterdir())
    floors = [run["seconds"] for run in runs["floor"]]
    return {
        "n": n,
        "folder_mb": folder_bytes / 1e6,
        "stages": {kind: _stage_figures(runs[kind], floors, n) for kind in stages},
        "disk_ratio": prepared_bytes / folder_bytes,
        "train": _train_figures(work / "data" / "prepared", args) if args.steps else "- | - | -",
    }


def _stage_figures(runs: list[dict], floors: list[float], n: int) -> dict:
    """A stage's peak RSS, its fastest ms an image, and each run's time ÷ the floor of the
    same repeat."""
    return {
        "rss_mb": max(run["rss_mb"] for run in runs),
        "worker_rss_mb": max(run["children_rss_mb"] for run in runs),
        "ms_per_image": 1000 * min(run["seconds"] for run in runs) / n,
        "ratios": [run["seconds"] / floor for run, floor in zip(runs, floors, strict=True)],
    }


def _train_figures(prepared: Path, args: argparse.Namespace) -> str:
    """The training columns: peak RSS, streamed or not, step ÷ bare."""
    train = _child("train", prepared, args.image_size, args.steps)
    streamed = "yes" if train["streamed"] else "no"
    return f"{train['rss_mb']:.0f} | {streamed} | {_spread(train['ratios'])}"


def make_photos(folder: Path, n: int) -> None:
    """``n`` JPEGs of 240-640 px in :data:`CLASSES` class folders (kept if already there):
    each class a colour and a stripe frequency under smooth noise, so the classes are
    learnable and the files decode like photos."""
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.jpg")) == n:
        return
    for label in range(CLASSES):
        (folder / f"class{label:02}").mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i) for i in range(n)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_photo, jobs, chunksize=64))


def _photo(job: tuple[Path, int]) -> None:
    folder, i = job
    rng = np.random.default_rng(i)
    label = i % CLASSES
    w, h = (int(v) for v in rng.integers(240, 641, 2))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * (0.02 + 0.01 * label))
    hue = np.array([label * 25 % 256, 255 - label * 20, 90 + label * 15], np.float32)
    coarse = rng.normal(0, 25, (h // 16 + 1, w // 16 + 1, 3)).repeat(16, 0).repeat(16, 1)
    pixels = hue * (0.6 + 0.4 * stripes[..., None]) + coarse[:h, :w] + rng.normal(0, 8, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image.save(folder / f"class{label:02}" / f"{i:06}.jpg", quality=88)


def _child(kind: str, *args: object) -> dict:
    """Run :func:`child` in a fresh Python process; its JSON result, with ``seconds`` the
    whole process's wall time (interpreter start-up included)."""
    import time

    command = [sys.executable, __file__, "--child", kind, *map(str, args)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{kind} failed:\n{done.stderr}")
    return {**json.loads(done.stdout.splitlines()[-1]), "seconds": seconds}


def child(kind: str, *args: str) -> dict:
    """One measurement in this process: ``download``, ``preprocess`` (a checkout's stage
    script in a work folder), ``floor`` or ``train``."""
    import resource

    result: dict = {}
    if kind == "download":
        from visiontune.data.download import download

        download(args[0], Path(args[1]))
    elif kind == "preprocess":
        _run_stage(Path(args[0]), Path(args[1]))
    elif kind == "floor":
        _decode_floor(Path(args[0]) / "data" / "raw", int(args[1]), int(args[2]))
    else:
        result = _train_steps(Path(args[0]), int(args[1]), int(args[2]))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"rss_mb": own, "children_rss_mb": children, **result}


def _run_stage(checkout: Path, work: Path) -> None:
    """``checkout``'s stages/preprocess.py as ``python stages/preprocess.py`` runs it in
    ``work``, importing ``checkout``'s src/ (its decoding processes too)."""
    import runpy

    sys.path.insert(0, str(checkout / "src"))
    os.chdir(work)
    runpy.run_path(str(checkout / "stages" / "preprocess.py"), run_name="__main__")
    imported = Path(sys.modules["visiontune"].__file__).resolve()
    if not imported.is_relative_to(checkout.resolve()):
        sys.exit(f"imported {imported}, not {checkout}'s visiontune")


def _decode_floor(raw: Path, size: int, workers: int) -> None:
    """The decode floor: ``workers`` forked processes (0 = every core) open every image
    with Pillow, draft-decode and resize it to ``size``, and keep and send back nothing."""
    from multiprocessing import get_context

    paths = sorted(str(path) for path in (raw / "images").rglob("*.jpg"))
    processes = workers or len(os.sched_getaffinity(0))
    forked = [
        get_context("fork").Process(target=_decode_only, args=(paths[i::processes], size))
        for i in range(processes)
    ]
    for process in forked:
        process.start()
    for process in forked:
        process.join()


def _decode_only(paths: list[str], size: int) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            rgb.resize((size, size), Image.Resampling.BILINEAR)


def _train_steps(prepared: Path, size: int, steps: int) -> dict:
    """``steps`` training steps through the train split's batch source, each followed by a
    bare step on the same batch, already in memory: the ratio of their times."""
    import time

    import torch

    from visiontune.config.params import parse_params
    from visiontune.training.parts import Splits, build_trainer

    params = parse_params(
        {"data": {"image_size": size, "channels": 3}, "train": {"batch_size": 64}}
    )
    split = Splits.load(params, prepared)
    trainer = build_trainer(params, split)
    batches = split.train.full_batches(64, torch.Generator().manual_seed(0))
    ratios = []
    for step in range(steps + 2):  # the first two warm up
        start = time.perf_counter()
        batch = next(batches)
        trainer.step(batch)
        middle = time.perf_counter()
        trainer.step(batch)
        if step >= 2:
            ratios.append((middle - start) / (time.perf_counter() - middle))
    return {"streamed": split.train.streamed, "ratios": ratios}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:])))
    else:
        main()
