"""Training throughput of the train stage as 1 and as N processes (``train.nproc``), as
ratios to one process, measured in one run on this machine.

Each run is the real stage (``python stages/train.py``) in a workspace of its own, after
one preparation of the data; its images per second are the train split times the epochs
after the first (warm-up), over those epochs' seconds as rank 0 prints them. The variants
run in a new random order each repeat, and a variant's ratio is to the one-process run of
the same repeat; the median and range over the repeats are printed. On a GPU box pass
``--device cuda --nproc 1 2 4 8`` (one GPU a process) and a larger ``--source``.

Usage: python benchmarks/distributed.py [--nproc 1 2] [--repeats 5] [--epochs 4]
       [--source mnist_subset] [--image-size 28] [--batch-size 128] [--device auto]
       [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from visiontune.config.params import parse_params
from visiontune.data.download import download
from visiontune.data.prepared import load_meta
from visiontune.data.preprocess import prepare

STAGE = Path(__file__).resolve().parents[1] / "stages" / "train.py"
EPOCH_LINE = re.compile(r"^epoch (\d+)/\d+ .*\(([\d.]+) s\)$")


def images_per_second(folder: Path, params: dict, nproc: int, train_images: int) -> float:
    """One run of the stage with ``train.nproc`` processes: images/s after the first epoch."""
    params = {**params, "train": {**params["train"], "nproc": nproc}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(STAGE)], cwd=folder, capture_output=True, text=True, check=False
    )
    if result.returncode:
        sys.exit(f"train.nproc={nproc} failed:\n{result.stderr}")
    seconds = [float(m.group(2)) for m in map(EPOCH_LINE.match, result.stdout.splitlines()) if m][
        1:
    ]
    return train_images * len(seconds) / sum(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--source", default="mnist_subset")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="train.threads per process")
    args = parser.parse_args()
    counts = sorted(set(args.nproc) | {1})
    train = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "device": args.device,
        "threads": args.threads,
    }
    params = {"data": {"source": args.source, "image_size": args.image_size}, "train": train}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        download(args.source, folder / "raw")
        prepared = folder / "data" / "prepared"
        prepare(folder / "raw", prepared, parse_params(params).data)
        n = load_meta(prepared).counts["train"]
        ratios: dict[int, list[float]] = {count: [] for count in counts}
        for repeat in range(args.repeats):
            order = random.sample(counts, len(counts))
            speed = {count: images_per_second(folder, params, count, n) for count in order}
            for count in counts:
                ratios[count].append(speed[count] / speed[1])
            print(f"repeat {repeat + 1}: " + ", ".join(f"{c}: {speed[c]:.0f} img/s" for c in order))
    print(
        f"\n{args.source}, {n} train images, batch {args.batch_size}, {args.epochs} epochs "
        f"(first one not timed), train.threads {args.threads} per process, {args.repeats} "
        "repeats; images/s over 1 process, median (range):"
    )
    for count in counts:
        values = ratios[count]
        print(
            f"  train.nproc {count}: {statistics.median(values):.2f}x "
            f"({min(values):.2f}-{max(values):.2f})"
        )


if __name__ == "__main__":
    main()
