"""models/model.pt: weights plus everything needed to rebuild and feed the model.

The file is ``{"state_dict": ..., **ModelMeta.to_dict()}``: only tensors and plain Python
values, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.paths import replacing
from visiontune.models.meta import ModelMeta


def save_checkpoint(path: Path, model: torch.nn.Module, meta: ModelMeta) -> None:
    """Save the weights and the model's meta (the params it was trained with, its inputs);
    a new file replaces ``path`` (:func:`~visiontune.config.paths.replacing`)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with replacing(path) as partial:
        torch.save({"state_dict": state, **meta.to_dict()}, partial)


def load_checkpoint(path: Path, device: torch.device) -> tuple[torch.nn.Module, ModelMeta]:
    """Rebuild the model from a checkpoint; return it (eval mode, on ``device``) and its meta."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise VisiontuneError(f"{path} not found: run `dvc repro train` first") from None
    except Exception as exc:
        raise VisiontuneError(f"{path} is not a visiontune model file ({_refusal(exc)})") from None
    meta = ModelMeta.from_dict(ckpt, path, extra_keys=("state_dict",))
    model = meta.build_model()  # the weights come from the file: never fetch pretrained ones
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), meta


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (``md5`` is DVC's: it is how dvc.lock records outputs)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refusal(exc: Exception) -> str:
    """One line of why torch.load failed; its weights-only refusals bury it in advice."""
    why = reason(exc)
    if why.startswith("Weights only load failed"):
        advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = [line for line in lines if not line.startswith(advice)]
        return "weights-only loading refused it: " + (detail[0] if detail else "unsafe content")
    return why
