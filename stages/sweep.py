"""sweep stage: train a grid over two params; write plots/sweep/ and metrics/sweep.json."""

from pathlib import Path

from visiontune.params import Params
from visiontune.stage import run_stage
from visiontune.sweep import run_sweep


def main(params: Params) -> None:
    summary = run_sweep(
        params,
        prepared_dir=Path("data/prepared"),
        out_dir=Path("plots/sweep"),
        metrics_path=Path("metrics/sweep.json"),
    )["sweep"]
    print(f"plots/sweep: {summary['cells']} cells, {summary['failed']} failed")
    if summary["best"]:
        (x, vx), (y, vy), (metric, value) = summary["best"].items()
        print(f"best cell: {x}={vx} {y}={vy}: {metric} {value:.4f}")


if __name__ == "__main__":
    run_stage(main)
