"""The params.yaml schema: typed sections, validated when a stage starts.

Every error names the key as users type it with ``dvc exp run -S`` (for example
``model.lr must be > 0, got -1``) and is raised as :class:`ParamsError`. The defaults are
the values params.yaml ships (tests/test_params.py keeps the two equal), so a key missing
from params.yaml, a ``Params()`` built in code and a checkpoint from before a key existed
all mean the shipped configuration.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visiontune.config.cpu_kernels import CPU_KERNELS
from visiontune.config.errors import VisiontuneError
from visiontune.config.sources import SOURCE_NAMES, is_location


class ParamsError(VisiontuneError):
    """params.yaml (or a ``-S`` override) holds an unknown key or a bad value."""


def spec(
    default: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[Any], Any] | None = None,
    doc: str = "",
) -> Any:
    """A dataclass field with its bounds and allowed values kept as metadata; ``parse``
    validates and converts a value of its own shape (a search space, say)."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "parse": parse, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataParams:
    """Which images, at what size, split how (download + preprocess stages)."""

    source: str = spec("digits", doc="built-in dataset name, folder, archive or URL")
    image_size: int = spec(8, ge=4, le=1024, doc="images are resized to this square")
    channels: int = spec(1, choices=(1, 3), doc="1 = grayscale, 3 = RGB")
    val_fraction: float = spec(0.15, gt=0, lt=1)
    test_fraction: float = spec(0.15, gt=0, lt=1)
    max_per_class: int = spec(0, ge=0, doc="keep at most this many images per class; 0 = all")
    skip_corrupt: bool = spec(False, doc="skip unreadable images instead of failing")
    seed: int = spec(0, ge=0, doc="drives the subset and the split")
    workers: int = spec(0, ge=0, doc="processes decoding images; 0 = every core")


# model.weights of a model that starts from no weights file. dvc.yaml's dependency
# weights/${model.weights} then names weights/none, a marker file that never changes, so
# that a plain run depends on no file of weights/ it does not use.
NO_WEIGHTS = "none"


@dataclass(frozen=True)
class ModelParams:
    """The network and its learning rate (train stage)."""

    name: str = spec("cnn", doc="'cnn' or any timm model name")
    lr: float = spec(0.01, gt=0, le=10)
    dropout: float = spec(0.1, ge=0, lt=1)
    blocks: int = spec(2, ge=1, le=8, doc="cnn: conv blocks, each halves the resolution")
    width: int = spec(16, ge=1, le=1024, doc="cnn: channels of the first block")
    batchnorm: bool = spec(True)
    residual: bool = spec(True, doc="cnn: residual skip in each block")
    squeeze_excite: bool = spec(False, doc="cnn: squeeze-and-excitation in each block")
    pretrained: bool = spec(False, doc="timm: load the hub's pretrained weights (needs a network)")
    weights: str = spec(
        "none", doc="timm: a weights file in weights/ to start from (a dependency of train)"
    )
    mean_std: str = spec(
        "data",
        choices=("data", "pretrained"),
        doc="inputs standardised with the train split's mean/std or the pretrained weights'",
    )
    backbone_lr_ratio: float = spec(
        1.0, gt=0, le=100, doc="the backbone learns at model.lr times this; the head at model.lr"
    )
    input_size: int = spec(0, ge=0, le=1024, doc="the network's input side; 0 = data.image_size")
    crop_pct: float = spec(
        1.0, gt=0, le=1, doc="evaluation sees the centre square of this share of the image side"
    )

    @property
    def weights_file(self) -> str | None:
        """The file in weights/ the model starts from, or None."""
        return None if self.weights == NO_WEIGHTS else self.weights


PRECISIONS = ("32", "bf16", "16")


@dataclass(frozen=True)
class TrainParams:
    """How the network is optimised (train stage)."""

    epochs: int = spec(12, ge=1, le=10_000)
    batch_size: int = spec(128, ge=2, le=65_536, doc="at least 2: batchnorm needs two images")
    optimizer: str = spec("adamw", choices=("sgd", "adam", "adamw"))
    weight_decay: float = spec(0.0005, ge=0, lt=1)
    momentum: float = spec(0.9, ge=0, lt=1, doc="sgd momentum")
    schedule: str = spec("onecycle", choices=("none", "cosine", "onecycle"))
    label_smoothing: float = spec(0.0, ge=0, lt=1)
    patience: int = spec(0, ge=0, doc="stop after this many epochs without val/acc gain; 0 = off")
    flip: bool = spec(False, doc="random horizontal flips")
    crop: int = spec(1, ge=0, le=64, doc="random crops after padding by this many pixels")
    device: str = spec("auto", doc="auto, cpu, cuda, cuda:N or mps")
    threads: int = spec(1, ge=0, le=1024, doc="torch CPU threads; 0 = every core")
    cpu_kernels: str = spec(
        "avx2", choices=CPU_KERNELS, doc="torch's CPU code paths: avx2, baseline or native"
    )
    seed: int = spec(0, ge=0, doc="drives initialisation, shuffling and augmentation")
    resident_mb: int = spec(
        0,
        ge=0,
        doc="a split up to this many MB moves to the device whole, a larger one "
        "streams from disk; 0 = auto (half the free CUDA memory, or 1024 on the CPU)",
    )
    freeze_epochs: int = spec(0, ge=0, le=10_000, doc="first epochs with the backbone frozen")
    resized_crop: bool = spec(False, doc="random-resized crops (train.crop_scale, crop_ratio)")
    crop_scale: tuple = spec((0.08, 1.0), doc="resized crops: [min, max] share of the image area")
    crop_ratio: tuple = spec((0.75, 1.3333), doc="resized crops: [min, max] width / height")
    color_jitter: float = spec(0.0, ge=0, lt=1, doc="brightness, contrast, saturation strength")
    precision: str = spec("32", choices=PRECISIONS, doc="32, bf16 or 16 (autocast; 16 on CUDA)")
    compile: bool = spec(False, doc="torch.compile the network")
    nproc: int = spec(
        1,
        ge=1,
        le=4096,
        doc="processes training together through torchrun (gloo on the CPU, NCCL on CUDA, "
        "one GPU a process), on this machine or over several; 1 = this process alone",
    )
    sync_bn: bool = spec(
        True, doc="with train.nproc > 1: batch norm statistics of the global batch"
    )


# Params that are a [min, max] range, and the largest max each takes (None: no bound).
RANGES = {"train.crop_scale": 1.0, "train.crop_ratio": None}

# Sections whose keys a sweep cell or a tuning trial may change.
TUNABLE_SECTIONS = ("data", "model", "train")
OBJECTIVES = {"val.acc": "maximize", "val.loss": "minimize"}


@dataclass(frozen=True)
class SweepParams:
    """The sweep stage: a full grid over two params, every cell trained for ``epochs``."""

    x: str = spec("model.lr", doc="param on the heatmap's x axis")
    x_values: tuple = spec((0.001, 0.003, 0.01, 0.03, 0.1))
    y: str = spec("model.width", doc="param on the heatmap's y axis")
    y_values: tuple = spec((8, 16, 32))
    epochs: int = spec(4, ge=1, le=10_000, doc="epochs of every cell (no early stopping)")
    metric: str = spec("val.acc", choices=tuple(OBJECTIVES))


# The robustness stage's corruptions, in the order its curves list them.
CORRUPTIONS = (
    "gaussian_noise",
    "blur",
    "brightness",
    "contrast",
    "rotation",
    "pixelate",
    "occlusion",
)


@dataclass(frozen=True)
class RobustnessParams:
    """The robustness stage: test accuracy under corruptions at severities 1..``severities``."""

    corruptions: tuple = spec(CORRUPTIONS, doc="corruptions applied to the test images")
    severities: int = spec(5, ge=1, le=5, doc="severities 1 to this (5, as ImageNet-C)")
    max_images: int = spec(0, ge=0, doc="test images used, a seeded subset; 0 = all")
    seed: int = spec(0, ge=0, doc="drives noise, rotations, occlusions, the subset")


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    sweep: SweepParams = field(default_factory=SweepParams)
    robustness: RobustnessParams = field(default_factory=RobustnessParams)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run from the repository root") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ParamsError(f"{path} is not valid YAML{line}") from None
    return parse_params(raw)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as loaded from YAML) into :class:`Params`."""
    params = build(Params, raw, "")
    _check_consistency(params)
    return params


def build(cls: type, raw: Any, prefix: str) -> Any:
    """The dataclass ``cls`` from a mapping, every value checked against its field's
    :func:`spec`; errors name keys as ``prefix`` + key (``model.lr``)."""
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, dict):
        raise ParamsError(f"{where} must be a mapping of keys to values, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ParamsError(
                f"{prefix}{key} is not a known key; expected one of {', '.join(fields)}"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, declared in fields.items():
        if name not in raw:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = build(kind, raw[name], f"{prefix}{name}.")
        elif declared.metadata.get("parse"):
            values[name] = declared.metadata["parse"](raw[name])
        elif f"{prefix}{name}" in RANGES:
            values[name] = _check_range(f"{prefix}{name}", raw[name], RANGES[f"{prefix}{name}"])
        elif kind is tuple:
            values[name] = check_list(f"{prefix}{name}", raw[name])
        else:
            values[name] = check_value(f"{prefix}{name}", raw[name], kind, declared.metadata)
    return cls(**values)


def check_value(key: str, value: Any, kind: type, meta: typing.Mapping[str, Any]) -> Any:
    given = value
    if kind is float and _is_type(value, int):
        value = float(value)
    if kind is str and meta.get("choices") and _is_type(value, int):
        value = str(value)  # train.precision=16: YAML reads a number
    if not _is_type(value, kind):
        raise ParamsError(f"{key} must be {_type_name(kind)}, got {given!r}")
    if meta.get("choices") and value not in meta["choices"]:
        options = ", ".join(str(c) for c in meta["choices"])
        raise ParamsError(f"{key} must be one of {options}, got {given!r}")
    for bound, test, word in (
        ("gt", lambda v, b: v > b, ">"),
        ("ge", lambda v, b: v >= b, ">="),
        ("lt", lambda v, b: v < b, "<"),
        ("le", lambda v, b: v <= b, "<="),
    ):
        limit = meta.get(bound)
        if limit is not None and not test(value, limit):
            raise ParamsError(f"{key} must be {word} {limit:g}, got {given!r}")
    return value


def _is_type(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, kind.__name__
    )


def _check_consistency(params: Params) -> None:
    data, model, train = params.data, params.model, params.train
    if data.val_fraction + data.test_fraction >= 0.9:
        raise ParamsError(
            "data.val_fraction + data.test_fraction must be < 0.9, "
            f"got {data.val_fraction + data.test_fraction:g}"
        )
    if data.source not in SOURCE_NAMES and not is_location(data.source):
        raise ParamsError(
            f"data.source must be one of {', '.join(SOURCE_NAMES)}, "
            f"or a folder, archive or http(s) URL, got {data.source!r}"
        )
    _check_model(model)
    _check_train(train)
    _check_sweep(params)
    _check_robustness(params)
    if not _is_device(train.device):
        raise ParamsError(
            f"train.device must be auto, cpu, cuda, cuda:N or mps, got {train.device!r}"
        )


def _check_model(model: ModelParams) -> None:
    for key, value, default in (
        ("pretrained", model.pretrained, False),
        ("weights", model.weights, NO_WEIGHTS),
        ("mean_std", model.mean_std, "data"),
    ):
        if model.name == "cnn" and value != default:
            raise ParamsError(f"model.{key} needs a timm model; model.name is 'cnn'")
    if model.pretrained and model.weights_file:
        raise ParamsError(
            "set model.pretrained (weights from the hub) or model.weights (from a file), not both"
        )
    if model.mean_std == "pretrained" and not (model.pretrained or model.weights_file):
        raise ParamsError("model.mean_std=pretrained needs model.weights or model.pretrained")
    path = Path(model.weights)
    if not model.weights or path.is_absolute() or ".." in path.parts or model.weights.endswith("/"):
        raise ParamsError(
            f"model.weights must name a file in weights/ (e.g. resnet18.safetensors) or be "
            f"{NO_WEIGHTS}, got {model.weights!r}"
        )
    if len(path.parts) > 1 and path.parts[0] == "weights":
        raise ParamsError(
            f"model.weights names a file inside weights/, without the folder: "
            f"{Path(*path.parts[1:])}, got {model.weights!r}"
        )


def _check_train(train: TrainParams) -> None:
    if train.resized_crop and train.crop:
        raise ParamsError("train.resized_crop replaces train.crop's padded crops; set train.crop=0")
    if train.batch_size % train.nproc:
        raise ParamsError(
            f"train.batch_size must divide by train.nproc ({train.nproc} processes share each "
            f"batch equally), got {train.batch_size}"
        )
    if train.nproc > 1 and (train.device == "mps" or train.device.startswith("cuda:")):
        raise ParamsError(
            f"train.nproc={train.nproc} runs on the CPU or on CUDA (one GPU a process: "
            f"train.device auto, cpu or cuda), got train.device={train.device}"
        )
    if train.precision == "16" and train.device in ("cpu", "mps"):
        raise ParamsError(
            f"train.precision=16 needs a CUDA device (train.device is {train.device}); use bf16"
        )


def _is_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda", "mps"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """``params`` with dotted keys (``model.lr``) set to new values, validated again."""
    raw = to_raw(params)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not isinstance(raw.get(section), dict) or not name or "." in name:
            raise ParamsError(f"{key} is not a params key; expected section.key, e.g. model.lr")
        raw[section][name] = value
    return parse_params(raw)


def to_raw(params: Params) -> dict[str, Any]:
    """``params`` as plain YAML data, the form params.yaml has."""
    raw = dataclasses.asdict(params)
    for section in raw.values():
        for name, value in section.items():
            if isinstance(value, tuple):
                section[name] = list(value)
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=2"`` -> ``("train.epochs", 2)``; values parse as YAML, like dvc's -S."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {text!r} must look like section.key=value")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ParamsError(f"override {text!r}: the value is not valid YAML") from None


def _check_range(key: str, value: Any, upper: float | None) -> tuple[float, float]:
    """A ``[min, max]`` pair of numbers with 0 < min <= max (<= ``upper``)."""
    pair = value if isinstance(value, list) and len(value) == 2 else None
    if pair is None or not all(_is_type(v, int) or _is_type(v, float) for v in pair):
        raise ParamsError(f"{key} must be a list [min, max] of two numbers, got {value!r}")
    low, high = float(pair[0]), float(pair[1])
    if not 0 < low <= high or (upper is not None and high > upper):
        most = "" if upper is None else f" <= {upper:g}"
        raise ParamsError(f"{key} must be [min, max] with 0 < min <= max{most}, got {value!r}")
    return low, high


def check_list(key: str, value: Any) -> tuple:
    if not isinstance(value, list) or not value:
        raise ParamsError(f"{key} must be a non-empty list, got {value!r}")
    for item in value:
        if not isinstance(item, (int, float, str, bool)):
            raise ParamsError(f"{key} items must be numbers, strings or booleans, got {item!r}")
    if len(set(value)) != len(value):
        raise ParamsError(f"{key} has repeated values: {value!r}")
    return tuple(value)


def _field(where: str, key: str) -> dataclasses.Field:
    """The schema field of a tunable key such as ``model.lr``; raise naming ``where``."""
    section, _, name = key.partition(".")
    if section in TUNABLE_SECTIONS:
        cls = typing.get_type_hints(Params)[section]
        for declared in dataclasses.fields(cls):
            if declared.name == name:
                return declared
    raise ParamsError(
        f"{where} must name a data, model or train param such as model.lr, got {key!r}"
    )


def check_candidates(where: str, key: str, values: typing.Iterable[Any]) -> None:
    """Each value is valid for ``key``; the error names the list it came from."""
    declared = _field(where, key)
    kind = typing.get_type_hints(_section_class(key))[declared.name]
    for value in values:
        try:
            check_value(key, value, kind, declared.metadata)
        except ParamsError as exc:
            raise ParamsError(f"{where}: {exc}") from None


def _section_class(key: str) -> type:
    return typing.get_type_hints(Params)[key.partition(".")[0]]


def _check_sweep(params: Params) -> None:
    sweep = params.sweep
    for axis in ("x", "y"):
        key = getattr(sweep, axis)
        _field(f"sweep.{axis}", key)
        if key.startswith("data."):
            raise ParamsError(f"sweep.{axis} must be a model or train param, got {key!r}")
        check_candidates(f"sweep.{axis}_values", key, getattr(sweep, f"{axis}_values"))
    if sweep.x == sweep.y:
        raise ParamsError(f"sweep.x and sweep.y must differ, both are {sweep.x!r}")


def _check_robustness(params: Params) -> None:
    for name in params.robustness.corruptions:
        if name not in CORRUPTIONS:
            raise ParamsError(
                f"robustness.corruptions: {name!r} is not a corruption; "
                f"expected some of {', '.join(CORRUPTIONS)}"
            )
