"""Train-loop speed as ratios, measured in one run on this machine.

(a) the train stage's epoch time divided by the bare compute on the same batches
    (forward, backward and optimizer step on ready float tensors): 1.0 is the limit;
(b) the speed-up over a conventional pipeline: an ImageFolder of PNG files read per image
    with PIL, torchvision transforms and a DataLoader (the fastest of num_workers 0 and 2).

Usage: python benchmarks/train_speed.py [--params params.yaml] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from visiontune.config.params import load_params
from visiontune.data.augmentation import Augmentation
from visiontune.data.batches import BatchSource, read_split
from visiontune.data.download import download
from visiontune.data.prepared import load_meta
from visiontune.data.preprocess import prepare
from visiontune.models.meta import ModelMeta
from visiontune.models.runtime import configure
from visiontune.models.scoring import evaluate_split
from visiontune.training.optimization import Optimization
from visiontune.training.precision import Precision
from visiontune.training.trainer import Trainer

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--repeats", type=int, default=9, help="timed epochs per method")
    args = parser.parse_args()
    params = load_params(args.params)
    # Enough schedule steps for the warm-up and timed epochs of every method.
    epochs = max(params.train.epochs, 4 * (args.repeats + 1))
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=epochs))
    configure(params.train.seed, params.train.threads)
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp, "raw"), Path(tmp, "prepared")
        download(params.data.source, raw)
        prepare(raw, prepared, params.data)
        meta = ModelMeta.trained_on(load_meta(prepared), params)
        x, y = read_split(prepared, "train")
        x_val, y_val = read_split(prepared, "val")
        folder = _write_png_folder(x, y, meta.classes, Path(tmp, "png"))
        model_input = meta.model_input(CPU)
        cfg = params.train
        model = meta.build_model(load_pretrained=True)
        optimization = Optimization.of(model, params.model, cfg, x.shape[0])
        trainer = Trainer(model, model, optimization, Precision.of(cfg.precision, CPU), cfg)
        source = BatchSource(x, y, model_input, Augmentation.of(cfg))
        ready = _ready_batches(BatchSource(x, y, model_input), cfg.batch_size, cfg.seed)

        def stage_epoch() -> None:
            trainer.epoch(source, "bench")

        def stage_epoch_with_val() -> None:
            trainer.epoch(source, "bench")
            evaluate_split(trainer.model, x_val, y_val, model_input, 2 * cfg.batch_size)

        def bare_epoch() -> None:
            _fit(trainer, ready)

        loaders = {w: _conventional_loader(folder, meta, params, w) for w in (0, 2)}
        conventional = {w: partial(_fit, trainer, loader) for w, loader in loaders.items()}

        methods = {"stage": stage_epoch, "stage+val": stage_epoch_with_val, "bare": bare_epoch}
        methods |= {f"dataloader(workers={w})": fn for w, fn in conventional.items()}
        times = _time_interleaved(methods, args.repeats)

    bare = times["bare"]
    best_conventional = min(v for k, v in times.items() if k.startswith("dataloader"))
    print(
        f"source={params.data.source} image_size={params.data.image_size} "
        f"model={params.model.name} batch_size={params.train.batch_size} "
        f"train images={x.shape[0]} threads={torch.get_num_threads()}"
    )
    for name, seconds in times.items():
        print(f"  {name:24s} median epoch {seconds * 1000:8.1f} ms")
    print(f"(a) train-stage epoch / bare compute:              {times['stage'] / bare:.3f}")
    print(f"    same, with the per-epoch validation pass:      {times['stage+val'] / bare:.3f}")
    speedup = best_conventional / times["stage"]
    print(f"(b) speed-up over per-image DataLoader + PIL:      {speedup:.2f}x")


def _ready_batches(
    source: BatchSource, batch_size: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of batches made in advance (gathered, normalised): what the bare loop
    consumes."""
    generator = torch.Generator().manual_seed(seed)
    return [(b.inputs, b.labels) for b in source.batches(batch_size, generator)]


def _fit(trainer: Trainer, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Forward, backward and optimizer step on each ready (images, labels) batch."""
    model, optimizer = trainer.model, trainer.optimizer
    model.train()
    for images, labels in batches:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _write_png_folder(x: torch.Tensor, y: torch.Tensor, classes: Sequence[str], root: Path) -> Path:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x, y.tolist(), strict=True)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).squeeze(-1).numpy()
        Image.fromarray(array).save(folder / f"{i:06d}.png")
    return root


def _conventional_loader(folder: Path, meta: ModelMeta, params, workers: int):
    """ImageFolder + PIL + torchvision transforms + DataLoader, as most course projects do."""
    from torchvision import datasets, transforms

    mode = "L" if meta.channels == 1 else "RGB"
    transform = transforms.Compose(
        [
            transforms.Resize((meta.image_size, meta.image_size)),
            transforms.ToTensor(),
            transforms.Normalize(meta.mean, meta.std),
        ]
    )
    dataset = datasets.ImageFolder(folder, transform=transform, loader=partial(_open, mode=mode))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=params.train.batch_size,
        shuffle=True,
        num_workers=workers,
    )


def _open(path: str, mode: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert(mode)


def _time_interleaved(methods: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call, after one warm-up each, in a new random order each round."""
    for fn in methods.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(list(methods), len(methods)):
            fn = methods[name]
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


if __name__ == "__main__":
    main()
