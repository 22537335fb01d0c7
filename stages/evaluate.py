"""evaluate stage: test metrics, per-class scores and the confusion matrix of models/model.pt."""

from visiontune.config.params import Params
from visiontune.config.paths import EVALUATE_METRICS, EVALUATE_PLOTS, MODEL, PREPARED
from visiontune.evaluation.evaluate import evaluate
from visiontune.stage import run_stage


def main(params: Params) -> None:
    metrics = evaluate(
        params,
        model_path=MODEL,
        prepared_dir=PREPARED,
        metrics_path=EVALUATE_METRICS,
        plots_dir=EVALUATE_PLOTS,
    )
    print(f"test/acc {metrics['test']['acc']:.4f}  test/loss {metrics['test']['loss']:.4f}")


if __name__ == "__main__":
    run_stage(main)
