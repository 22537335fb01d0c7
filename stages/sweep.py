"""sweep stage: train a grid over two params (cells stored beside DVC's cache are reused);
write plots/sweep/grid.json, which `dvc plots show` draws as a heatmap."""

from pathlib import Path

from visiontune.config.params import Params
from visiontune.config.paths import PREPARED, SWEEP_PLOTS
from visiontune.experiments.sweep import run_sweep
from visiontune.experiments.sweep_cache import CellStore
from visiontune.stage import run_stage


def main(params: Params) -> None:
    store = CellStore.for_repo(Path.cwd(), PREPARED)
    summary = run_sweep(params, PREPARED, SWEEP_PLOTS, store)
    print(
        f"{SWEEP_PLOTS}: {summary['cells']} cells, {summary['failed']} failed, "
        f"{summary['reused']} reused from {store.folder}"
    )
    if summary["best"]:
        (x, vx), (y, vy), (metric, value) = summary["best"].items()
        print(f"best cell: {x}={vx} {y}={vy}: {metric} {value:.4f}")


if __name__ == "__main__":
    run_stage(main)
