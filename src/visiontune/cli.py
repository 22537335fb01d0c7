"""The ``visiontune`` command. Each handler imports its (heavy) module only when it runs."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from visiontune.config.errors import DRIFT_EXIT, VisiontuneError, one_line_errors
from visiontune.config.params import load_params, parse_override, with_overrides
from visiontune.config.paths import DEFAULT_STORAGE, MODEL, PREPARED, PROFILE_TRACE
from visiontune.registry.references import ARTIFACT


def _params(args: argparse.Namespace) -> None:
    """Validate params.yaml (and the tuner's settings beside it) and print every key of
    params.yaml with its effective value; with ``--tune``, the tuner's settings instead."""
    from visiontune.config import tune_settings
    from visiontune.config.params import to_raw

    params = load_params(args.file)
    settings = tune_settings.load_settings(args.file.parent)
    shown = tune_settings.to_raw(settings) if args.tune else to_raw(params)
    print(yaml.safe_dump(shown, sort_keys=False), end="")


def _tune(args: argparse.Namespace) -> None:
    from visiontune.config.tune_settings import load_settings
    from visiontune.tuning.options import TuneOptions
    from visiontune.tuning.tuner import tune

    params = load_params()
    overrides = dict(parse_override(text) for text in args.set)
    settings = load_settings(Path.cwd(), {k: v for k, v in overrides.items() if _is_tune(k)})
    fixed = {key: value for key, value in overrides.items() if not _is_tune(key)}
    with_overrides(params, fixed)  # fail now, not in every trial
    options = TuneOptions(
        trials=settings.trials if args.trials is None else args.trials,
        jobs=args.jobs,
        storage=args.storage,
        study=args.study or settings.study,
        fixed=fixed,
        in_process=args.in_process,
        sampler=args.sampler,
        gpus_per_trial=args.gpus_per_trial,
        settings=settings,
    )
    tune(params, options, repo=Path.cwd())


def _is_tune(key: str) -> bool:
    """Whether a ``--set`` key is one of the tuner's settings (``tune.pruner``)."""
    return key.partition(".")[0] == "tune"


def _fetch_weights(args: argparse.Namespace) -> None:
    from visiontune.config.paths import WEIGHTS
    from visiontune.models.pretrained import fetch_weights

    out = args.out or WEIGHTS / f"{args.name}.safetensors"
    count = fetch_weights(args.name, out)
    print(f"wrote {out} ({count / 1e6:.1f} M parameters); version it as data with:")
    print(f"  dvc add {out} && git add {out}.dvc {out.parent / '.gitignore'}")
    print(f"then train from it: dvc exp run -S model.weights={out.name} -S model.name=...")


def _heatmap(args: argparse.Namespace) -> None:
    from visiontune.experiments.heatmap import heatmap_from_experiments

    heatmap_from_experiments(
        Path.cwd(),
        x=args.x,
        y=args.y,
        metric=args.metric,
        out=args.out,
        epochs=args.epochs,
        marginal=args.marginal,
    )


def _report(args: argparse.Namespace) -> None:
    from visiontune.experiments.report import write_report

    out = write_report(Path.cwd(), args.out, top=args.top, storage=args.storage, study=args.study)
    print(f"wrote {out} and {out.parent / (out.stem + '_plots')}/")


def _export(args: argparse.Namespace) -> None:
    from visiontune.models.export import export_model, format_table

    out = args.out or Path("models/model.int8.onnx" if args.quantize else "models/model.onnx")
    metrics = export_model(
        args.model, out, args.prepared, args.metrics, quantize=args.quantize, threads=args.threads
    )
    print(format_table(metrics))
    print(f"wrote {out} and {args.metrics}")


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="export the model to ONNX (optionally int8), checked against torch"
    )
    export.add_argument("--format", choices=("onnx",), required=True, help="file format")
    export.add_argument(
        "--quantize", action="store_true", help="int8 (static, calibrated on train images)"
    )
    export.add_argument("--model", type=Path, default=MODEL, help=".pt file")
    export.add_argument(
        "--out",
        type=Path,
        help="ONNX file (default models/model.onnx, with --quantize models/model.int8.onnx)",
    )
    export.add_argument(
        "--prepared",
        type=Path,
        default=PREPARED,
        help="prepared data: test split to compare on, train split to calibrate",
    )
    export.add_argument(
        "--metrics", type=Path, default=Path("metrics/export.json"), help="JSON file written"
    )
    export.add_argument(
        "--threads", type=int, default=0, help="torch and onnxruntime threads (0 = torch's)"
    )
    export.set_defaults(func=_export)


def _lr_find(args: argparse.Namespace) -> None:
    from visiontune.training.finders import lr_find

    params = _with_sets(args)
    lr_find(params, PREPARED, out=args.out, min_lr=args.min_lr, max_lr=args.max_lr)


def _batch_size(args: argparse.Namespace) -> None:
    from visiontune.training.finders import batch_size_find

    batch_size_find(_with_sets(args), PREPARED, candidates=args.candidates)


def _profile(args: argparse.Namespace) -> None:
    params = _with_sets(args)  # bad params fail before torch is imported
    from visiontune.training.profiling import format_profile, profile_training

    result = profile_training(params, PREPARED, steps=args.steps, trace=args.trace, top=args.top)
    print(format_profile(result, params))


def _add_profile(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser(
        "profile", help="torch.profiler over training steps: phase shares, top operators, trace"
    )
    profile.add_argument(
        "--steps", type=_int_range(1), default=20, help="training steps profiled (default 20)"
    )
    profile.add_argument(
        "--top", type=_int_range(1), default=15, help="operators listed (default 15)"
    )
    profile.add_argument(
        "--trace", type=Path, default=PROFILE_TRACE, help=f"Chrome trace (default {PROFILE_TRACE})"
    )
    _add_set(profile, "the profiled steps")
    profile.set_defaults(func=_profile)


def _serve(args: argparse.Namespace) -> None:
    from visiontune.registry.fetch import resolve_model

    # A registered version is resolved (and a bad reference refused) before the server's
    # heavy imports; its model lives in a temporary folder while the server runs.
    with tempfile.TemporaryDirectory(prefix="visiontune-registered-") as fetched:
        model, registered = resolve_model(args.model, args.repo, Path(fetched))
        from visiontune.serving import app as serving

        serving.serve(
            model,
            registered=registered,
            host=args.host,
            port=args.port,
            threads=args.threads,
            max_bytes=args.max_bytes or serving.DEFAULT_MAX_BYTES,
            max_pixels=args.max_pixels or serving.DEFAULT_MAX_PIXELS,
            drift_window=args.drift_window or serving.DEFAULT_DRIFT_WINDOW,
        )


def _registry(args: argparse.Namespace) -> None:
    from visiontune.experiments.registered_versions import version_records, versions_table

    print(versions_table(version_records(Path.cwd(), args.name), args.name))


def _fetch_model(args: argparse.Namespace) -> None:
    from visiontune.registry.fetch import fetch
    from visiontune.registry.references import parse_reference

    reference = parse_reference(args.reference)
    if reference is None:
        raise VisiontuneError(
            f"{args.reference} is not a registered model: NAME@vX.Y.Z or NAME@STAGE"
        )
    path, registered = fetch(reference, args.repo, args.out)
    stages = f" ({', '.join(registered.stages)})" if registered.stages else ""
    print(
        f"wrote {path}: {registered.artifact} {registered.version}{stages} "
        f"from commit {registered.rev[:7]}"
    )


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="HTTP API classifying uploaded images with a .pt or .onnx model"
    )
    serve.add_argument(
        "--model",
        default=str(MODEL),
        help="a .pt or .onnx file, or a registered version: NAME@vX.Y.Z or NAME@STAGE",
    )
    serve.add_argument("--repo", default=".", help="git repository of a registered version")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_int_range(1, 65535), default=8000)
    serve.add_argument(
        "--max-bytes", type=_int_range(1), help="request body limit (default 10 MiB)"
    )
    serve.add_argument(
        "--max-pixels", type=_int_range(1), help="pixels an image may have (default 40M)"
    )
    serve.add_argument(
        "--drift-window",
        type=_int_range(1),
        help="last images the input-drift score of /metrics covers (default 1000)",
    )
    serve.add_argument(
        "--threads",
        type=_int_range(0),
        default=0,
        help="torch/onnxruntime threads (0 = their default; 1 is fastest for small models)",
    )
    serve.set_defaults(func=_serve)


def _add_registry(commands: argparse._SubParsersAction) -> None:
    registry = commands.add_parser(
        "registry", help="registered versions and stages, with test acc and differing params"
    )
    registry.add_argument("name", nargs="?", default=ARTIFACT, help=f"default {ARTIFACT}")
    registry.set_defaults(func=_registry)
    fetch = commands.add_parser(
        "fetch-model", help="fetch a registered version's model and its registry record"
    )
    fetch.add_argument("reference", help="NAME@vX.Y.Z or NAME@STAGE, e.g. classifier@prod")
    fetch.add_argument("--repo", default=".", help="git repository (path or URL)")
    fetch.add_argument("--out", type=Path, default=Path("registered"), help="folder")
    fetch.set_defaults(func=_fetch_model)


def _drift(args: argparse.Namespace) -> None:
    from visiontune.config.paths import write_json
    from visiontune.monitoring import drift

    report = drift.check_drift(
        args.images,
        args.reference,
        args.model,
        max_images=args.max_images or drift.MAX_IMAGES,
        permutations=args.permutations or drift.PERMUTATIONS,
        alpha=args.alpha or drift.ALPHA,
        seed=args.seed,
        skip_corrupt=args.skip_corrupt,
    )
    print(report.verdict())
    print(report.table())
    if args.out:
        write_json(args.out, report.to_dict())
        print(f"wrote {args.out}")
    if report.drift and args.fail_on_drift:
        sys.exit(DRIFT_EXIT)


def _add_drift(commands: argparse._SubParsersAction) -> None:
    drift = commands.add_parser(
        "drift",
        help="is a folder of images from the training distribution? (MMD test, input stats)",
    )
    drift.add_argument(
        "--images", type=Path, required=True, help="folder of images, searched recursively"
    )
    drift.add_argument(
        "--reference", type=Path, default=PREPARED, help="prepared data: its train split"
    )
    drift.add_argument("--model", type=Path, default=MODEL, help=".pt checkpoint")
    drift.add_argument("--out", type=Path, help="JSON file to write the result to")
    drift.add_argument(
        "--fail-on-drift",
        action="store_true",
        help=f"exit with status {DRIFT_EXIT} when drift is detected",
    )
    drift.add_argument(
        "--max-images",
        type=_int_range(1),
        help="images of each side compared, a seeded random choice (default 1000)",
    )
    drift.add_argument(
        "--permutations", type=_int_range(1), help="of the permutation test (default 1000)"
    )
    drift.add_argument("--alpha", type=_probability, help="significance level (default 0.05)")
    drift.add_argument("--seed", type=int, default=0, help="of the sub-samples and permutations")
    drift.add_argument(
        "--skip-corrupt", action="store_true", help="leave unreadable images out, counted"
    )
    drift.set_defaults(func=_drift)


def _probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _int_range(low: int, high: int | None = None):
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _with_sets(args: argparse.Namespace):
    return with_overrides(load_params(), dict(parse_override(text) for text in args.set))


def _add_set(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a param for {what}, like dvc's -S (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visiontune", description="Image-classification experiments driven by DVC."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "params", help="validate params.yaml and the tuner's settings; print the values used"
    )
    check.add_argument("--file", type=Path, default=Path("params.yaml"), help="params file")
    check.add_argument(
        "--tune", action="store_true", help="print the tuner's settings (pyproject.toml) instead"
    )
    check.set_defaults(func=_params)

    tune = commands.add_parser(
        "tune", help="Optuna TPE study whose trials are dvc experiments named <study>-<number>"
    )
    tune.add_argument(
        "--trials", type=int, help="trials the study should count (default: tune.trials)"
    )
    tune.add_argument("--jobs", type=int, default=1, help="trials run at once (dvc queue -j)")
    tune.add_argument(
        "--gpus-per-trial",
        type=_int_range(0),
        default=0,
        metavar="K",
        help="GPUs of each running trial, its own (CUDA_VISIBLE_DEVICES); default 0: all",
    )
    tune.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="Optuna storage URL (default: a git-ignored SQLite file)",
    )
    tune.add_argument("--study", help="study name (default: tune.study in pyproject.toml)")
    tune.add_argument(
        "--in-process",
        action="store_true",
        help="run trials in this process instead of as dvc experiments (for benchmarks)",
    )
    tune.add_argument(
        "--sampler",
        choices=("tpe", "random"),
        default="tpe",
        help="TPE (default), or random search as a baseline",
    )
    tune.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a param of every trial (train.epochs=3), or override a tuner setting of "
        "pyproject.toml (tune.pruner=none, tune.space.model.lr=...) (repeatable)",
    )
    tune.set_defaults(func=_tune)

    fetch = commands.add_parser(
        "fetch-weights",
        help="save a timm model's pretrained weights into weights/ (needs a network, once)",
    )
    fetch.add_argument("name", help="timm model and weights tag, e.g. resnet18.a1_in1k")
    fetch.add_argument("--out", type=Path, help="file (default: weights/<name>.safetensors)")
    fetch.set_defaults(func=_fetch_weights)

    heatmap = commands.add_parser(
        "heatmap", help="heatmap of a metric over two params across dvc experiments"
    )
    heatmap.add_argument("--x", required=True, help="param on the x axis, e.g. model.lr")
    heatmap.add_argument("--y", required=True, help="param on the y axis, e.g. model.dropout")
    heatmap.add_argument("--metric", default="val.acc", help="metric to show (default val.acc)")
    heatmap.add_argument("--out", type=Path, default=Path("plots/heatmap.html"))
    heatmap.add_argument(
        "--epochs",
        type=int,
        help="compare runs of this budget (train.epochs; default: the one most runs share)",
    )
    heatmap.add_argument(
        "--marginal",
        action="store_true",
        help="also average runs whose other params differ (labelled a marginal view)",
    )
    heatmap.set_defaults(func=_heatmap)

    report = commands.add_parser(
        "report", help="markdown table of all runs plus PNG plots (val curves, sweep, tuning)"
    )
    report.add_argument("--out", type=Path, default=Path("report.md"), help="markdown file")
    report.add_argument("--top", type=int, default=20, help="rows and curves shown (default 20)")
    report.add_argument(
        "--storage", help=f"Optuna storage URL (default {DEFAULT_STORAGE} if present)"
    )
    report.add_argument("--study", help="study to plot (default: tune.study in pyproject.toml)")
    report.set_defaults(func=_report)
    _add_export(commands)

    lr = commands.add_parser("lr-find", help="LR range test: loss against lr, suggested model.lr")
    lr.add_argument("--min-lr", type=float, default=1e-5)
    lr.add_argument("--max-lr", type=float, default=1.0)
    lr.add_argument("--out", type=Path, default=Path("plots/lr_find.html"))
    _add_set(lr, "the test")
    lr.set_defaults(func=_lr_find)

    batch = commands.add_parser(
        "batch-size", help="training throughput by batch size here, and the suggested one"
    )
    batch.add_argument(
        "--candidates",
        type=int,
        nargs="+",
        default=[16, 32, 64, 128, 256, 512, 1024],
        help="batch sizes to try",
    )
    _add_set(batch, "the measurement")
    batch.set_defaults(func=_batch_size)
    _add_profile(commands)
    _add_serve(commands)
    _add_registry(commands)
    _add_drift(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command; user errors print one line and exit 1."""
    args = build_parser().parse_args(argv)
    with one_line_errors():
        args.func(args)
