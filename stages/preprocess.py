"""preprocess stage: decode, resize and split data/raw into uint8 tensors in data/prepared."""

from visiontune.config.params import Params
from visiontune.config.paths import DATA_METRICS, PREPARED, RAW, write_json
from visiontune.data.preprocess import prepare
from visiontune.stage import run_stage


def main(params: Params) -> None:
    summary = prepare(RAW, PREPARED, params.data)
    counts = {k: summary[k] for k in ("train", "val", "test", "skipped", "ignored")}
    write_json(DATA_METRICS, {"images": counts, "classes": summary["classes"]})
    print(f"{PREPARED}: {counts}, {summary['classes']} classes")


if __name__ == "__main__":
    run_stage(main)
