"""build_model: the configurable CNN, the manual's timm models, and its one-line errors."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import ModelParams
from visiontune.models.cnn import ConvBlock, SqueezeExcite
from visiontune.models.factory import MODEL_EXAMPLES, ModelExample, build_model

NUM_CLASSES = 5


def _first_layer(net: nn.Module) -> nn.Module:
    """The first conv or linear layer in module order (the stem or patch embedding)."""
    return next(m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _train_step(net: nn.Module, channels: int, image_size: int) -> torch.Tensor:
    """Forward a random batch of 2 and backpropagate; return the logits."""
    logits = net(torch.randn(2, channels, image_size, image_size))
    logits.logsumexp(dim=1).sum().backward()
    return logits


def _assert_trains(net: nn.Module, channels: int, image_size: int) -> None:
    """Logits have shape (2, classes) and gradients reach the first layer."""
    logits = _train_step(net, channels, image_size)
    assert logits.shape == (2, NUM_CLASSES)
    grad = _first_layer(net).weight.grad
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("example", MODEL_EXAMPLES, ids=lambda e: e.name)
def test_examples_train_at_their_minimal_size(example: ModelExample, channels: int) -> None:
    torch.manual_seed(0)
    size = example.min_image_size
    net = build_model(
        ModelParams(name=example.name), num_classes=NUM_CLASSES, channels=channels, image_size=size
    )
    assert net.training
    _assert_trains(net, channels, size)


@pytest.mark.parametrize(
    ("batchnorm", "residual", "squeeze_excite"), list(itertools.product([False, True], repeat=3))
)
@pytest.mark.parametrize("blocks", [1, 2, 3, 4])
def test_cnn_variants_train(
    blocks: int, batchnorm: bool, residual: bool, squeeze_excite: bool
) -> None:
    torch.manual_seed(0)
    params = ModelParams(
        blocks=blocks,
        width=4,
        dropout=0.5,
        batchnorm=batchnorm,
        residual=residual,
        squeeze_excite=squeeze_excite,
    )
    net = build_model(params, num_classes=NUM_CLASSES, channels=3, image_size=16)
    _assert_trains(net, 3, 16)
    convs3 = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) == 1 + 2 * blocks
    assert all((conv.bias is None) == batchnorm for conv in convs3)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == batchnorm
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5]
    conv_blocks = [m for m in net.modules() if isinstance(m, ConvBlock)]
    assert all((block.skip is not None) == residual for block in conv_blocks)
    assert any(isinstance(m, SqueezeExcite) for m in net.modules()) == squeeze_excite


def test_cnn_width_doubles_per_block_up_to_8x() -> None:
    net = build_model(
        ModelParams(blocks=5, width=2), num_classes=NUM_CLASSES, channels=1, image_size=32
    )
    assert net[-1].in_features == 16


def test_cnn_is_deterministic_given_the_seed() -> None:
    def build() -> nn.Module:
        torch.manual_seed(7)
        return build_model(
            ModelParams(squeeze_excite=True), num_classes=NUM_CLASSES, channels=1, image_size=8
        )

    first, second = build().state_dict(), build().state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_img_size_reaches_models_that_take_it() -> None:
    net = build_model(
        ModelParams(name="vit_tiny_patch16_224"), num_classes=NUM_CLASSES, channels=3, image_size=32
    )
    assert net.patch_embed.img_size == (32, 32)
    assert net.pos_embed.shape[1] == 1 + (32 // 16) ** 2


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(VisiontuneError) as info:
        build_model(
            ModelParams(name="resnet81"), num_classes=NUM_CLASSES, channels=3, image_size=32
        )
    message = str(info.value)
    assert message.startswith(
        "model.name 'resnet81' is neither 'cnn' nor a timm model; did you mean:"
    )
    assert "resnet18" in message
    assert "\n" not in message


def test_too_many_blocks_for_the_image_size() -> None:
    with pytest.raises(VisiontuneError) as info:
        build_model(ModelParams(blocks=5), num_classes=NUM_CLASSES, channels=1, image_size=16)
    assert str(info.value) == (
        "model.blocks=5 halves data.image_size=16 below 1 pixel; "
        "use model.blocks <= 4 or data.image_size >= 32"
    )


def test_convnext_rejects_16px_with_a_hint() -> None:
    with pytest.raises(VisiontuneError) as info:
        build_model(
            ModelParams(name="convnext_atto"), num_classes=NUM_CLASSES, channels=3, image_size=16
        )
    message = str(info.value)
    assert message.startswith("model.name=convnext_atto cannot take data.image_size=16 (")
    assert message.endswith("); try data.image_size >= 32")
    assert "\n" not in message
    with pytest.raises(VisiontuneError) as info:
        model = ModelParams(name="convnext_atto", input_size=16)
        build_model(model, num_classes=NUM_CLASSES, channels=3, image_size=16)
    assert str(info.value).endswith("); try model.input_size >= 32")  # the param that set it


def test_pretrained_without_network_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE when imported (timm imports it),
    # so setting the environment here would be too late: set its constants instead.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(VisiontuneError) as info:
        build_model(
            ModelParams(name="resnet18", pretrained=True),
            num_classes=NUM_CLASSES,
            channels=3,
            image_size=32,
        )
    assert str(info.value) == (
        f"model.pretrained=true: the hub is offline (HF_HUB_OFFLINE) and its cache ({tmp_path}) "
        "has no weights for resnet18; offline, put the weights in a file and set model.weights: "
        "see weights/README.md"
    )


def test_the_manual_lists_exactly_the_tested_models():
    page = Path(__file__).resolve().parents[1] / "docs" / "datasets-and-models.md"
    listed = re.findall(r"^\| `([\w.]+)` \| (\d+) \|", page.read_text(), flags=re.MULTILINE)
    assert listed == [(e.name, str(e.min_image_size)) for e in MODEL_EXAMPLES]
