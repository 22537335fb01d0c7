"""Networks chosen by ``model.name``: the configurable CNN (:mod:`visiontune.models.cnn`)
or any timm model, checked to take ``data.image_size``, starting from the weights that
``model.weights`` or ``model.pretrained`` ask for (:mod:`visiontune.models.pretrained`).
timm is imported only when a timm model is built; nothing on the params-validation path
imports this module.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from visiontune.config.errors import VisiontuneError, reason
from visiontune.models.cnn import build_cnn
from visiontune.models.pretrained import hub_overlay, is_load_error, misfit, weights_overlay

if TYPE_CHECKING:
    from types import ModuleType

    from visiontune.config.params import ModelParams


class ModelExample(NamedTuple):
    """A model the manual lists (docs/datasets-and-models.md) and the smallest
    data.image_size (>= 4) it takes."""

    name: str
    min_image_size: int
    note: str


MODEL_EXAMPLES: tuple[ModelExample, ...] = (
    ModelExample("cnn", 4, "configurable; needs data.image_size >= 2**model.blocks"),
    ModelExample("resnet18", 4, "any size; downsamples 32x"),
    ModelExample("convnext_atto", 32, "downsamples 32x with strided convs: needs >= 32 px"),
    ModelExample("mambaout_femto", 4, "any size; downsamples 32x"),
    ModelExample(
        "volo_d1_224", 16, "built with img_size; sizes 47, 63, 79, ... (16k - 1 >= 47) fail"
    ),
    ModelExample("vit_tiny_patch16_224", 16, "built with img_size; 16 px patches"),
    ModelExample("efficientnet_b0", 4, "any size; downsamples 32x"),
)


def build_model(
    model: ModelParams, *, num_classes: int, channels: int, image_size: int
) -> nn.Module:
    """The network ``model.name`` names, for square images of ``image_size`` pixels.

    The model comes in channels_last memory format, in which convolutions run faster on
    CPUs and GPUs alike. Raises VisiontuneError (one line, naming the params key) for an unknown
    name, an image size the network cannot take, or pretrained weights that cannot be fetched.
    """
    build = build_cnn if model.name == "cnn" else _timm_model
    network = build(model, num_classes=num_classes, channels=channels, image_size=image_size)
    return network.to(memory_format=torch.channels_last)


def _timm_model(
    model: ModelParams, *, num_classes: int, channels: int, image_size: int
) -> nn.Module:
    """``timm.create_model``, from the starting weights asked for, checked to run on a zeros
    batch of the image size."""
    import timm

    _check_timm_name(timm, model)
    overlay = None
    if model.weights_file:
        overlay = weights_overlay(timm, model.name, model.weights_file)
    elif model.pretrained:
        overlay = hub_overlay(timm, model.name)
    kwargs = {
        "pretrained": overlay is not None,
        "pretrained_cfg_overlay": overlay,
        "num_classes": num_classes,
        "in_chans": channels,
        "drop_rate": model.dropout,
    }
    try:
        net = _create(timm, model, kwargs, image_size)
    except RuntimeError as exc:
        if not (model.weights_file and is_load_error(exc)):
            raise
        raise misfit(model.weights_file, model.name, exc) from None
    except OSError as exc:
        if not model.pretrained:
            raise
        raise VisiontuneError(
            f"model.pretrained=true: fetching the weights of {model.name} failed "
            f"({reason(exc, innermost=True)})"
        ) from None
    _probe(timm, net, model, channels, image_size)
    return net


def pretrained_mean_std(
    model: ModelParams, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean and std that ``model.name``'s pretrained weights were trained with
    (timm's pretrained config), per channel; one channel gets the mean of the three."""
    import timm

    _check_timm_name(timm, model)
    cfg = timm.models.get_pretrained_cfg(model.name)
    if cfg is None:
        raise VisiontuneError(
            f"model.mean_std=pretrained: timm has no pretrained config for {model.name}; "
            "set model.mean_std=data"
        )
    mean, std = tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std)
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean, std


def _check_timm_name(timm: ModuleType, model: ModelParams) -> None:
    """Fail early, with suggestions, on names timm does not know or has no weights for."""
    if not timm.is_model(model.name):
        close = difflib.get_close_matches(model.name, ["cnn", *timm.list_models()], n=4)
        hint = f"did you mean: {', '.join(close)}?" if close else "see timm.list_models()"
        raise VisiontuneError(
            f"model.name {model.name!r} is neither 'cnn' nor a timm model; {hint}"
        )
    if model.pretrained and not timm.models.is_model_pretrained(model.name):
        raise VisiontuneError(
            f"model.pretrained=true but timm has no pretrained weights for {model.name}; "
            "set model.pretrained=false"
        )


def _create(timm: ModuleType, model: ModelParams, kwargs: dict, image_size: int) -> nn.Module:
    """Build with ``img_size`` when the constructor takes it (vit, volo, swin, ...).

    Entrypoints are all ``fn(pretrained, **kwargs)``, so only the class constructor
    knows; it rejects the keyword, naming it, before building anything. Trying with it
    and retrying without on that TypeError was checked on every timm 1.0.31 model. Any
    other failure here, but a download's OSError or weights of other shapes, comes from the
    size it was built for.
    """
    try:
        return timm.create_model(model.name, img_size=image_size, **kwargs)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
    except OSError:
        raise
    except Exception as exc:
        if kwargs["pretrained"] and is_load_error(exc):
            raise  # weights that do not fit: the caller names them
        raise _size_error(timm, model, image_size, exc) from None
    return timm.create_model(model.name, **kwargs)


def _probe(
    timm: ModuleType, net: nn.Module, model: ModelParams, channels: int, image_size: int
) -> None:
    """Run one zeros image through ``net`` (eval mode, no grad); fail on the image size."""
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, image_size, image_size))
    except Exception as exc:  # the input shape is the only thing that varies here
        raise _size_error(timm, model, image_size, exc) from None
    finally:
        net.train()


def _size_error(
    timm: ModuleType, model: ModelParams, image_size: int, exc: BaseException
) -> VisiontuneError:
    """The one-line error for a model that cannot take its input size, naming the param
    that sets it: ``model.input_size``, or ``data.image_size`` when that is 0."""
    name, key = model.name, "model.input_size" if model.input_size else "data.image_size"
    arch = timm.models.get_arch_name(name)
    known = {example.name: example.min_image_size for example in MODEL_EXAMPLES}
    cfg = timm.models.get_pretrained_cfg(name)
    if image_size < known.get(arch, 0):
        hint = f"; try {key} >= {known[arch]}"
    elif cfg is not None:
        hint = f"; try {key}={cfg.input_size[-1]}, the size it was designed for"
    else:
        hint = ""
    return VisiontuneError(
        f"model.name={name} cannot take {key}={image_size} ({reason(exc)}){hint}"
    )
