"""train.precision and train.compile: float32 stays plain float32, bfloat16 trains close to
it, float16 scales its loss and needs CUDA, a compiled run saves a checkpoint that loads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import Params, parse_params
from visiontune.data.batches import read_split
from visiontune.models.checkpoint import save_checkpoint
from visiontune.models.scoring import evaluate_batches, load_trained
from visiontune.training.fit import fit
from visiontune.training.parts import Splits, build_trainer
from visiontune.training.precision import Precision


def small(epochs: int = 3, **train: object) -> Params:
    return parse_params(
        {
            "model": {"width": 8, "blocks": 2},
            "train": {"epochs": epochs, "threads": 1, "batch_size": 32, **train},
        }
    )


def test_float32_is_plain_float32_training(prepared):
    """train.precision 32 steps exactly as a bare float32 loop (no autocast, no scaler) on
    the same batches: the same weights bit for bit, and the same validation."""
    params = small(flip=True)
    data = Splits.load(params, prepared)
    trainer = build_trainer(params, data)
    steps = 0
    for _ in range(2):
        for batch in trainer.made(data.train.batches(32, trainer.generator)):
            trainer.step(batch)
            steps += 1
    bare = build_trainer(params, data)  # freshly seeded: the same weights, generator, dropout
    for _ in range(2):
        for batch in data.train.batches(32, bare.generator):
            loss = F.cross_entropy(bare.model(batch.inputs), batch.labels)
            bare.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bare.optimizer.step()
            bare.scheduler.step()
    assert steps > 10 and trainer.network is trainer.model
    ours, theirs = trainer.model.state_dict(), bare.model.state_dict()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    val = data.val
    assert trainer.evaluate(val).predictions.equal(
        evaluate_batches(bare.model, val.batches(64)).predictions
    )


def test_bfloat16_trains_close_to_float32(prepared):
    """bf16 autocast on the CPU learns as float32 does, with different rounding; the model
    it returns (and saves) is float32."""
    fp32 = fit(small(epochs=6), prepared)
    bf16 = fit(small(epochs=6, precision="bf16"), prepared)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert math.isfinite(bf16.kept.val.loss) and math.isfinite(bf16.kept.train_loss)
    assert bf16.kept.val.loss != fp32.kept.val.loss
    assert bf16.kept.val.loss == pytest.approx(fp32.kept.val.loss, rel=0.1)
    assert abs(bf16.kept.val.acc - fp32.kept.val.acc) <= 0.1
    assert bf16.kept.val.acc >= 0.6  # seen: 0.75, float32 0.8


@pytest.mark.skipif(torch.cuda.is_available(), reason="train.device auto resolves to CUDA")
def test_float16_on_a_device_without_cuda_is_one_line(prepared):
    with pytest.raises(
        VisiontuneError, match=r"^train.precision=16 needs CUDA; the device is cpu: use bf16 or 32$"
    ):
        fit(small(precision=16), prepared)


def test_float16_scales_the_loss_and_unscales_the_step():
    """The float16 path (run on the CPU here, where torch allows it, though training refuses
    it): gradients are scaled for backward and unscaled for the step, which then equals a
    plain step on the same float16 loss."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 4)
    plain = torch.nn.Linear(16, 4)
    plain.load_state_dict(layer.state_dict())
    inputs, labels = torch.randn(8, 16), torch.randint(0, 4, (8,))
    precision = Precision("16", torch.device("cpu"))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    with precision.autocast():
        loss = F.cross_entropy(layer(inputs), labels)
    precision.backward(loss)
    assert layer.weight.grad.abs().max() > 1000  # scaled (2**16 at first)
    precision.step(optimizer)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.cross_entropy(plain(inputs), labels)
    loss.backward()
    torch.optim.SGD(plain.parameters(), lr=0.1).step()
    torch.testing.assert_close(layer.weight, plain.weight)


def test_compile_failure_is_one_line_naming_the_param(prepared):
    """torch compiles at the first step; without a working C++ compiler (inductor's for the
    CPU) that fails, and says which param to change."""
    import torch._inductor.config as inductor

    no_compiler = {"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False}
    with (
        inductor.patch(no_compiler),
        pytest.raises(
            VisiontuneError,
            match=r"^train.compile=true but torch.compile failed \(No working C\+\+ compiler "
            r"found in .*\); set train.compile=false$",
        ),
    ):
        fit(small(epochs=1, compile=True), prepared)


@pytest.mark.slow
def test_compiled_training_saves_a_checkpoint_that_loads_and_scores(prepared, tmp_path: Path):
    """train.compile compiles the forward passes, not what is saved: the checkpoint holds
    the model's own keys, loads as any other and scores as validation did."""
    # 20 divides the 280 training and 60 validation images: torch compiles two graphs
    # (training, no-grad validation), not a third for a smaller last batch.
    fitted = fit(small(epochs=4, compile=True, batch_size=20), prepared)
    save_checkpoint(tmp_path / "model.pt", fitted.model, fitted.meta)
    keys = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in keys)
    trained = load_trained(tmp_path / "model.pt")
    images, labels = read_split(prepared, "val")
    result = trained.evaluate(images, labels, 64)
    assert abs(result.acc - fitted.kept.val.acc) <= 0.02
    assert result.acc >= 0.5
