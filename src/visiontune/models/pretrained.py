"""Where a timm model's starting weights come from, as the ``pretrained_cfg_overlay`` that
``timm.create_model(..., pretrained=True)`` loads them through (timm drops the classifier
for the dataset's classes and adapts the first convolution to ``data.channels``):

- ``model.weights``: a file in ``weights/`` (safetensors, a torch state dict, or a timm or
  visiontune checkpoint holding one, read by timm's own ``load_state_dict``), checked first
  to hold this architecture's tensors, in timm's layout;
- ``model.pretrained``: the hub's weights, from the hub's local cache when they are there
  (no network then), else after one request that the hub answers within
  :data:`HUB_TIMEOUT_S`: huggingface_hub itself retries an unreachable hub for about 25 s
  per file, and timm asks for two files.

``visiontune fetch-weights`` saves the hub's weights once into ``weights/``, where DVC
versions them, through the same one request.

Imported only where a timm model is built; timm and huggingface_hub come in with the calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.paths import WEIGHTS, replacing

# Seconds the hub has to answer before it is taken as unreachable (HF_HUB_ETAG_TIMEOUT, when
# set, overrides it, as it does huggingface_hub's own first request).
HUB_TIMEOUT_S = 5.0
_OFFLINE_ADVICE = "offline, put the weights in a file and set model.weights: see weights/README.md"
# The hub's weight files of a timm model, in the order timm asks for them.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_SHOWN_KEYS = 3


def weights_overlay(timm: ModuleType, name: str, weights: str) -> dict[str, Any]:
    """The overlay that loads ``weights/<weights>`` into the timm model ``name``.

    One-line VisiontuneError for a missing file, one timm cannot read, or one whose tensors
    are not those of ``name`` (naming the first missing and unexpected keys). The file's own
    classifier is never kept (the overlay's ``num_classes`` 0 makes timm drop it), and its
    first convolution's channels are declared, so that timm adapts them to the model's.
    """
    path = WEIGHTS / weights
    if not path.is_file():
        raise VisiontuneError(
            f"{path} not found: put the file there and `dvc add` it, or `dvc pull` it"
        )
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:  # safetensors, zip, pickle or layout errors: all unreadable
        raise VisiontuneError(f"{path} cannot be read as weights ({reason(exc)})") from None
    with torch.device("meta"):  # the architecture's tensor names and shapes, none allocated
        skeleton = timm.create_model(name)
    cfg = skeleton.pretrained_cfg
    _check_keys(path, name, state, skeleton.state_dict(), _names(cfg.get("classifier")))
    overlay: dict[str, Any] = {"file": str(path), "num_classes": 0}
    first_conv = next(iter(_names(cfg.get("first_conv"))), None)
    tensor = state.get(f"{first_conv}.weight")
    if first_conv is not None and isinstance(tensor, torch.Tensor) and tensor.ndim == 4:
        channels = tensor.shape[1] * getattr(skeleton.get_submodule(first_conv), "groups", 1)
        overlay["input_size"] = (channels, *cfg["input_size"][1:])
    return overlay


def misfit(weights: str, name: str, exc: BaseException) -> VisiontuneError:
    """The one-line error for a file whose tensors timm could not load into ``name``: the
    first size mismatch torch reports."""
    lines = [line.strip() for line in str(exc).splitlines()]
    detail = next((line for line in lines if line.startswith("size mismatch")), reason(exc))
    return VisiontuneError(f"{WEIGHTS / weights} does not fit {name}: {detail.rstrip('.')}")


def is_load_error(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's refusal of a state dict (tensors of other shapes)."""
    return isinstance(exc, RuntimeError) and str(exc).startswith("Error(s) in loading state_dict")


def hub_overlay(
    timm: ModuleType,
    name: str,
    asker: str = "model.pretrained=true",
    advice: str = _OFFLINE_ADVICE,
) -> dict[str, Any]:
    """The overlay that loads the hub's weights for ``name``: the file in the hub's cache
    when it is there; else nothing (timm downloads them) once the hub has answered.

    One-line VisiontuneError, within :data:`HUB_TIMEOUT_S`, when the hub is offline
    (``HF_HUB_OFFLINE``) or unreachable and the cache lacks the weights: ``asker`` (what
    asked for them) says why, then ``advice`` what to do.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return {}  # weights at a plain URL: timm's download, without the hub's retries
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES
    for filename in files:
        cached = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(cached, str):
            return {"file": cached}
    if constants.is_offline_mode():
        raise VisiontuneError(
            f"{asker}: the hub is offline (HF_HUB_OFFLINE) and its cache "
            f"({constants.HF_HUB_CACHE}) has no weights for {name}; {advice}"
        )
    timeout = HUB_TIMEOUT_S
    if constants.HF_HUB_ETAG_TIMEOUT != constants.DEFAULT_ETAG_TIMEOUT:
        timeout = constants.HF_HUB_ETAG_TIMEOUT
    url = hf_hub_url(repo, files[0], revision=revision or None)
    try:
        get_hf_file_metadata(url, timeout=timeout)  # one request, no retries
    except HfHubHTTPError:
        pass  # the hub answered: a file it lacks is timm's to handle (it asks for the next)
    except Exception as exc:  # connection refused, DNS, timeout, TLS, proxy: unreachable
        raise VisiontuneError(
            f"{asker}: cannot reach the model hub for {name} "
            f"({reason(exc, innermost=True)}); {advice}"
        ) from None
    return {}


def fetch_weights(name: str, out: Path) -> int:
    """Save the pretrained weights of the timm model ``name`` (a tag such as
    ``resnet18.a1_in1k``) as safetensors at ``out``; return their parameter count. From the
    hub's cache when they are there; one-line VisiontuneError when they cannot be had."""
    import safetensors.torch
    import timm

    if timm.models.get_pretrained_cfg(name) is None:
        raise VisiontuneError(
            f"timm knows no pretrained weights named {name!r} (e.g. resnet18.a1_in1k; "
            f"timm.list_pretrained('resnet18*') lists them)"
        )
    asker = f"fetch-weights {name} needs a network"
    advice = "run it where there is one, then `dvc add` and `dvc push` the file"
    overlay = hub_overlay(timm, name, asker, advice)
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay or None)
    except OSError as exc:  # weights at a plain URL, which could not be fetched
        raise VisiontuneError(f"{asker}: {reason(exc, innermost=True)}; {advice}") from None
    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    with replacing(out) as partial:
        safetensors.torch.save_file(state, str(partial))
    return sum(tensor.numel() for tensor in model.parameters())


def _check_keys(
    path: Path,
    name: str,
    state: Mapping[str, Any],
    expected: Mapping[str, Any],
    classifiers: tuple[str, ...],
) -> None:
    """Fail unless ``state`` has the tensors of ``expected`` by name, the classifier's aside."""
    head = {f"{classifier}.{kind}" for classifier in classifiers for kind in ("weight", "bias")}
    missing = [key for key in expected if key not in state and key not in head]
    unexpected = [key for key in state if key not in expected and key not in head]
    if missing or unexpected:
        found = (("missing", missing), ("unexpected", unexpected))
        parts = [f"{word} {_first(keys)}" for word, keys in found if keys]
        raise VisiontuneError(f"{path} does not fit {name}: {'; '.join(parts)}")


def _first(keys: list[str]) -> str:
    """The first few ``keys``, and how many more."""
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOWN_KEYS else "")


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """timm's cfg names one module as a string, several as a tuple, or none."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
