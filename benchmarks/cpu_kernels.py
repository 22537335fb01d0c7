"""What pinned CPU kernels cost: training time of the shipped params under each
``train.cpu_kernels`` and thread count, as ratios to ``native`` on every core (the default
before kernels were pinned), measured in one run on this machine.

Each variant trains in a process of its own (the kernels are chosen at a process's first
computation), the variants in a new random order each repeat; a variant's ratio is to the
reference run of the same repeat. Also prints each variant's model digest: a pinned mode
gives one digest whatever the machine (tests/test_cpu_kernels.py checks it on emulated
machines).

Usage: python benchmarks/cpu_kernels.py [--repeats 5] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {  # name: (train.cpu_kernels, train.threads)
    "native, every core": ("native", 0),
    "native, 1 thread": ("native", 1),
    "avx2, 1 thread (shipped)": ("avx2", 1),
    "baseline, 1 thread": ("baseline", 1),
}
REFERENCE = "native, every core"

# One training in a fresh process: the kernels requested before torch's first computation,
# as a stage does; prints the fit's seconds and the model's digest.
CHILD = """
import hashlib, json, sys, time
from pathlib import Path
from visiontune.config import cpu_kernels
from visiontune.config.params import load_params, with_overrides
kernels, threads, epochs, prepared = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
params = with_overrides(load_params(), {
    "train.cpu_kernels": kernels, "train.threads": threads, "train.epochs": epochs})
cpu_kernels.request(kernels)
from visiontune.training.fit import fit
start = time.perf_counter()
fitted = fit(params, Path(prepared))
seconds = time.perf_counter() - start
state = b"".join(t.numpy().tobytes() for t in fitted.model.state_dict().values())
print(json.dumps({"seconds": seconds, "digest": hashlib.md5(state).hexdigest()[:12]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS}
    digests: dict[str, set[str]] = {name: set() for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _prepare(Path(tmp))
        order = random.Random(0)
        for repeat in range(1, args.repeats + 1):
            names = list(VARIANTS)
            order.shuffle(names)
            seconds = {}
            for name in names:
                result = _train(*VARIANTS[name], args.epochs, prepared)
                seconds[name] = result["seconds"]
                digests[name].add(result["digest"])
            for name in VARIANTS:
                ratios[name].append(seconds[name] / seconds[REFERENCE])
            print(f"repeat {repeat}: " + ", ".join(f"{n} {s:.2f} s" for n, s in seconds.items()))
    print(f"\ntraining time / {REFERENCE}'s, {args.repeats} repeats, median (range):")
    for name, values in ratios.items():
        spread = f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
        print(f"  {name:26s} {spread}   model {', '.join(sorted(digests[name]))}")


def _prepare(folder: Path) -> str:
    """The shipped params' prepared data, made once in ``folder``."""
    from visiontune.config.params import load_params
    from visiontune.data.download import download
    from visiontune.data.preprocess import prepare

    params = load_params()
    download(params.data.source, folder / "raw")
    prepare(folder / "raw", folder / "prepared", params.data)
    return str(folder / "prepared")


def _train(kernels: str, threads: int, epochs: int, prepared: str) -> dict[str, object]:
    command = [sys.executable, "-c", CHILD, kernels, str(threads), str(epochs), prepared]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
