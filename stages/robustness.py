"""robustness stage: test accuracy of models/model.pt under corruptions at rising severity."""

from visiontune.config.params import Params
from visiontune.config.paths import MODEL, PREPARED, ROBUSTNESS_CURVES, ROBUSTNESS_METRICS
from visiontune.evaluation.robustness import robustness
from visiontune.stage import run_stage


def main(params: Params) -> None:
    summary = robustness(
        params,
        model_path=MODEL,
        prepared_dir=PREPARED,
        curves_path=ROBUSTNESS_CURVES,
        metrics_path=ROBUSTNESS_METRICS,
    )["robustness"]
    print(
        f"clean acc {summary['clean_acc']:.4f}  mean corrupted acc {summary['mean_acc']:.4f}  "
        f"worst {summary['worst_corruption']} {summary['worst_acc']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
