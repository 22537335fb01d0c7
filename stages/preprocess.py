"""preprocess stage: decode, resize and split data/raw into uint8 tensors in data/prepared."""

import json
from pathlib import Path

from visiontune.params import Params
from visiontune.preprocess import prepare
from visiontune.stage import run_stage


def main(params: Params) -> None:
    summary = prepare(Path("data/raw"), Path("data/prepared"), params.data)
    counts = {k: summary[k] for k in ("train", "val", "test", "skipped", "ignored")}
    metrics = {"images": counts, "classes": summary["classes"]}
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/data.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"data/prepared: {counts}, {summary['classes']} classes")


if __name__ == "__main__":
    run_stage(main)
