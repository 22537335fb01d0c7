"""Data at scale: preprocess and training on a generated folder of photo-like JPEGs.

For each folder size N (default 3,000 and 30,000 JPEGs of 240-640 px in 10 learnable
classes, generated here: no download), in processes of their own:

- preprocess at ``--image-size`` px, RGB, on ``--workers`` processes: its peak RSS (the
  stage's process and, apart, its largest decoding process), its ms an image, and that time
  divided by the decode floor of the same run: the same files decoded and resized in the
  same chunks on the same number of processes, results thrown away (the two interleaved in
  random order, ``--repeats`` times: median and range of the ratio);
- bytes on disk: the prepared files per byte of the source folder;
- ``--steps`` training steps of the default CNN through the train split's batch source
  (resident or streamed, as ``train.resident_mb`` decides): peak RSS, and the median step
  time divided by the bare forward+backward+step on the same batches already in memory
  (1.0: loading hides behind compute).

Usage: python benchmarks/data_scale.py [--sizes 3000 30000] [--image-size 224]
           [--workers 0] [--steps 30] [--repeats 3] [--cache DIR]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=0, help="data.workers (0 = all cores)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=3, help="preprocess/floor pairs")
    parser.add_argument("--cache", type=Path, help="keep generated folders here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        rows = [measure(n, cache / f"photos-{n}", Path(tmp, f"work-{n}"), args) for n in args.sizes]
    print(f"\n{args.image_size} px RGB, data.workers={args.workers}, {args.steps} train steps")
    print(
        "| photos | folder MB | preprocess peak RSS MB (decoder) | ms an image | ÷ decode floor"
        " (range) | disk ÷ folder | train peak RSS MB | streamed | step ÷ bare (range) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|:-:|---:|")
    for row in rows:
        print(
            f"| {row['n']:,} | {row['folder_mb']:.0f} | {row['prep_rss_mb']:.0f}"
            f" ({row['worker_rss_mb']:.0f}) | {row['ms_per_image']:.2f} |"
            f" {row['floor_ratio']:.2f} ({row['floor_min']:.2f}-{row['floor_max']:.2f}) |"
            f" {row['disk_ratio']:.2f} | {row['train_rss_mb']:.0f} | {row['streamed']} |"
            f" {row['step_ratio']:.2f} ({row['step_min']:.2f}-{row['step_max']:.2f}) |"
        )


def measure(n: int, folder: Path, work: Path, args: argparse.Namespace) -> dict:
    """Every figure of one folder size."""
    make_photos(folder, n)
    folder_bytes = sum(path.stat().st_size for path in folder.rglob("*.jpg"))
    work.mkdir(parents=True)
    _child("download", folder, work / "raw")
    ratios, prep_runs = [], []
    for _ in range(args.repeats):
        timed = {}
        for kind in random.sample(["preprocess", "floor"], 2):
            timed[kind] = _child(
                kind, work / "raw", work / "prepared", args.image_size, args.workers
            )
        ratios.append(timed["preprocess"]["seconds"] / timed["floor"]["seconds"])
        prep_runs.append(timed["preprocess"])
    prepared_bytes = sum(path.stat().st_size for path in (work / "prepared").iterdir())
    train = _child("train", work / "prepared", args.image_size, args.steps)
    prep = min(prep_runs, key=lambda run: run["seconds"])
    return {
        "n": n,
        "folder_mb": folder_bytes / 1e6,
        "prep_rss_mb": max(run["rss_mb"] for run in prep_runs),
        "worker_rss_mb": max(run["children_rss_mb"] for run in prep_runs),
        "ms_per_image": 1000 * prep["seconds"] / n,
        "floor_ratio": statistics.median(ratios),
        "floor_min": min(ratios),
        "floor_max": max(ratios),
        "disk_ratio": prepared_bytes / folder_bytes,
        "train_rss_mb": train["rss_mb"],
        "streamed": "yes" if train["streamed"] else "no",
        "step_ratio": statistics.median(train["ratios"]),
        "step_min": min(train["ratios"]),
        "step_max": max(train["ratios"]),
    }


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
    """Run :func:`child` in a fresh Python process; its JSON result."""
    command = [sys.executable, __file__, "--child", kind, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def child(kind: str, *args: str) -> dict:
    """One measurement in this process: ``download``, ``preprocess``, ``floor`` or ``train``."""
    import resource
    import time

    started = time.perf_counter()
    result: dict = {}
    if kind == "download":
        from visiontune.data.download import download

        download(args[0], Path(args[1]))
    elif kind == "preprocess":
        from visiontune.config.params import DataParams
        from visiontune.data.preprocess import prepare

        data = DataParams(image_size=int(args[2]), channels=3, workers=int(args[3]))
        prepare(Path(args[0]), Path(args[1]), data)
    elif kind == "floor":
        _decode_floor(Path(args[0]), int(args[2]), int(args[3]))
    else:
        result = _train_steps(Path(args[0]), int(args[1]), int(args[2]))
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "rss_mb": own, "children_rss_mb": children, **result}


def _decode_floor(raw: Path, size: int, workers: int) -> None:
    """Decode and resize every image in preprocess's chunks on as many processes; keep
    nothing."""
    from multiprocessing import get_context

    from visiontune.data import preprocess
    from visiontune.data.decoding import decode_chunk

    paths = sorted(str(path) for path in (raw / "images").rglob("*.jpg"))
    chunk = preprocess.chunk_size(3, size)
    processes = workers or len(os.sched_getaffinity(0))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(decode_chunk, c, 3, size, Image.MAX_IMAGE_PIXELS) for c in chunks]
        for future in futures:
            future.result()


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
