"""evaluate stage: test metrics, per-class scores and the confusion matrix of models/model.pt."""

from pathlib import Path

from visiontune.evaluation import evaluate
from visiontune.params import Params
from visiontune.stage import run_stage


def main(params: Params) -> None:
    metrics = evaluate(
        params,
        model_path=Path("models/model.pt"),
        prepared_dir=Path("data/prepared"),
        metrics_path=Path("metrics/evaluate.json"),
        plots_dir=Path("plots/evaluate"),
    )
    print(f"test/acc {metrics['test']['acc']:.4f}  test/loss {metrics['test']['loss']:.4f}")


if __name__ == "__main__":
    run_stage(main)
