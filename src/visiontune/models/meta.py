"""What a trained model is, apart from its weights: the one contract between training, the
checkpoint, evaluation, the predictors, ONNX export and serving.

``ModelMeta.to_dict``/``from_dict`` are the one place its keys are written; the checkpoint
stores that dict beside the weights and an ONNX export stores it as JSON. Importing this
module is cheap: torch comes in only when ``build_model`` builds a network.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visiontune.config.errors import VisiontuneError, reason
from visiontune.config.params import Params
from visiontune.data.input_stats import InputStats

if TYPE_CHECKING:
    import torch
    from torch import nn

    from visiontune.data.model_input import ModelInput
    from visiontune.data.prepared import PreparedMeta


@dataclass(frozen=True)
class ModelMeta:
    """The params a model was trained with and the images it takes.

    ``classes`` are the names of its outputs, in order; it takes uint8 images of
    ``channels`` x ``image_size`` x ``image_size``, standardised per channel with ``mean``
    and ``std`` (on a 0..1 scale: the train split's, or the pretrained weights' own).
    ``reference`` is the train split's input statistics, which drift checks compare against
    (None in a model trained before they were recorded). Fields are in the checkpoint's key
    order.
    """

    params: Params
    classes: tuple[str, ...]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reference: InputStats | None = None

    @classmethod
    def trained_on(cls, prepared: PreparedMeta, params: Params) -> ModelMeta:
        """The meta of a model trained with ``params`` on the prepared dataset ``prepared``:
        inputs standardised with the train split's mean/std, or with those of the pretrained
        weights (``model.mean_std: pretrained``)."""
        mean, std = prepared.mean, prepared.std
        if params.model.mean_std == "pretrained":
            from visiontune.models.factory import pretrained_mean_std

            mean, std = pretrained_mean_std(params.model, prepared.channels)
        return cls(
            params=params,
            classes=prepared.classes,
            channels=prepared.channels,
            image_size=prepared.image_size,
            mean=mean,
            std=std,
            reference=prepared.reference,
        )

    @property
    def input_size(self) -> int:
        """The network's input side: ``model.input_size``, or the stored ``image_size``."""
        return self.params.model.input_size or self.image_size

    def model_input(self, device: torch.device) -> ModelInput:
        """How this model's stored images become its input on ``device``: the centre
        ``model.crop_pct`` of each side resized to :attr:`input_size`, standardised."""
        from visiontune.data.model_input import ModelInput

        return ModelInput.from_stats(
            self.mean,
            self.std,
            device,
            stored=self.image_size,
            crop_pct=self.params.model.crop_pct,
            size=self.input_size,
        )

    def build_model(self, *, load_pretrained: bool = False) -> nn.Module:
        """A new network for this meta (channels_last, in train mode).

        With ``load_pretrained`` it starts from the weights that ``params.model.weights`` or
        ``params.model.pretrained`` ask for (as training does); without, starting weights are
        never read or fetched, as the caller loads its own (from a checkpoint).
        """
        from visiontune.models.factory import build_model

        model = self.params.model
        if not load_pretrained:
            model = dataclasses.replace(model, pretrained=False, weights="")
        return build_model(
            model, num_classes=len(self.classes), channels=self.channels, image_size=self.input_size
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, not tuples), as the checkpoint has always stored them."""
        return {
            "params": dataclasses.asdict(self.params),
            "classes": list(self.classes),
            "channels": self.channels,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "reference": None if self.reference is None else self.reference.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any, path: Path, *, extra_keys: tuple[str, ...] = ()) -> ModelMeta:
        """The meta in ``data`` (a :meth:`to_dict`, also after a JSON round trip), read from
        ``path``. VisiontuneError (one line) if a key is missing, naming every missing one,
        ``extra_keys`` (those the file holds besides the meta) first, or a value is unusable.
        ``reference`` may be missing (a model trained before it was recorded).
        """
        fields = (field.name for field in dataclasses.fields(cls) if field.name != "reference")
        keys = (*extra_keys, *fields)
        missing = [key for key in keys if not isinstance(data, Mapping) or key not in data]
        if missing:
            names = ", ".join(missing)
            raise VisiontuneError(f"{path} is not a visiontune model file (no {names})")
        try:
            return cls(
                params=_rebuild(Params, data["params"]),
                classes=tuple(str(name) for name in data["classes"]),
                channels=int(data["channels"]),
                image_size=int(data["image_size"]),
                mean=tuple(float(m) for m in data["mean"]),
                std=tuple(float(s) for s in data["std"]),
                reference=_reference(data.get("reference")),
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            why = f"unknown key {exc}" if isinstance(exc, KeyError) else reason(exc)
            raise VisiontuneError(
                f"{path} is not a visiontune model file (unusable meta: {why})"
            ) from None


def _reference(data: Any) -> InputStats | None:
    """The stored reference statistics, if any; ValueError if unusable."""
    try:
        return None if data is None else InputStats.from_dict(data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"reference: {reason(exc)}") from None


# Sections of params.yaml that models trained before they left it still carry: the tuner's
# settings (now in pyproject.toml), which never changed a model.
RETIRED = frozenset({"tune"})


def _rebuild(cls: type, data: Mapping[str, Any]) -> Any:
    """The params dataclass ``cls`` from its ``dataclasses.asdict`` form, not re-validated
    (they were when the model was trained). Lists become tuples again (JSON has no tuples).
    A section params.yaml no longer has (:data:`RETIRED`) is left out."""
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        if cls is Params and name in RETIRED:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = _rebuild(kind, value)
        elif kind is tuple:
            value = tuple(value)
        values[name] = value
    return cls(**values)
