"""A photo-folder fine-tune through the real pipeline against the same fine-tune written the
way timm users write it, on one GPU (or, without CUDA, the CPU at a smaller size).

Generates ``--images`` photo-like JPEGs (240-640 px, 10 classes; benchmarks/data_scale.py's
generator) in a temp folder, then:

- pipeline: the project's download and preprocess (decoded once to uint8 at
  ``--size`` / crop_pct px, train/val/test split), then the project's ``fit`` with
  train.precision bf16, channels_last (build_model's default), train.resized_crop true,
  train.crop 0, train.flip true, model.input_size ``--size``, model.crop_pct 0.875 (and
  train.compile with ``--compile``): batches gathered, cropped and flipped on the device;
- reference: torchvision ``ImageFolder`` over the same train and val files (the split the
  preprocess made), ``RandomResizedCrop`` + ``RandomHorizontalFlip`` + ``ToTensor`` +
  ``Normalize`` (val: ``Resize`` + ``CenterCrop``), ``DataLoader(num_workers=--workers,
  pin_memory=True, persistent_workers=True)``, ``torch.autocast`` bf16, the same model
  (timm, channels_last), optimizer, schedule, batch size and epochs, cudnn.benchmark on
  (as timm's train.py sets it).

Each run is a fresh process; ``--repeats`` rounds run both in a random order. Images/s is
train images times epochs after the first (a warm-up: CUDA context, cudnn autotuning,
compilation, DataLoader workers), divided by those epochs' time (each epoch is a train
pass and a val pass, in both). Prints images/s of each run, the ratio pipeline/reference
per round (median and range), val/acc, and peak device memory
(``torch.cuda.max_memory_allocated``) -- on the CPU, peak RSS. The pipeline's one-off
preprocess time is printed apart.

Usage on a GPU machine (estimated 2-3 minutes on an H200 with the defaults, 4-5 with
--compile; not yet run on a GPU):
    python benchmarks/cuda_finetune.py --images 5000 --size 224
Options: [--model resnet18] [--epochs 5] [--batch-size 256] [--workers N] [--repeats 2]
         [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CROP_PCT = 0.875
CPU_IMAGES, CPU_SIZE, CPU_BATCH = 400, 128, 32  # the CPU fallback's largest settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=224, help="the network's input side")
    parser.add_argument("--model", default="resnet18", help="a timm model name")
    parser.add_argument("--epochs", type=int, default=5, help="the first one warms up")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=2, help="rounds of both runs")
    parser.add_argument("--compile", action="store_true", help="torch.compile both")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        args.images = min(args.images, CPU_IMAGES)
        args.size = min(args.size, CPU_SIZE)
        args.batch_size = min(args.batch_size, CPU_BATCH)
        args.epochs = min(args.epochs, 2)
        print(
            f"no CUDA device: running on the CPU with {args.images} images at {args.size} px, "
            f"batch {args.batch_size}, {args.epochs} epochs (peak RSS instead of device memory)"
        )
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = _prepare(work, args)
        print(
            f"{device}; {args.model} at {args.size} px, batch {args.batch_size}, "
            f"{args.epochs} epochs (1 warm-up), {run['train']} train / {run['val']} val images; "
            f"preprocess {run['preprocess_s']:.1f} s ({run['image_size']} px)"
            + (", compiled" if args.compile else "")
        )
        rows: dict[str, list[dict]] = {"pipeline": [], "reference": []}
        order = random.Random(0)
        for _ in range(args.repeats):
            for kind in order.sample(list(rows), 2):
                result = _child(kind, work)
                rows[kind].append(result)
                print(
                    f"  {kind:9s} {result['images_per_s']:8.0f} images/s  "
                    f"val/acc {result['val_acc']:.3f}  peak {result['memory']}"
                )
    ratios = [
        p["images_per_s"] / r["images_per_s"]
        for p, r in zip(rows["pipeline"], rows["reference"], strict=True)
    ]
    print(
        f"pipeline / reference images/s: {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f}) over {len(ratios)} rounds"
    )


def _prepare(work: Path, args: argparse.Namespace) -> dict:
    """The photo folder, the pipeline's prepared splits and the reference's split folders;
    the settings both runs read, in work/run.json."""
    from visiontune.config.params import parse_params
    from visiontune.data import preprocess
    from visiontune.data.download import download

    sys.path.insert(0, str(Path(__file__).parent))
    from data_scale import make_photos

    make_photos(work / "photos", args.images)
    image_size = round(args.size / CROP_PCT)
    params = {
        "data": {"source": str(work / "photos"), "image_size": image_size, "channels": 3},
        "model": {
            "name": args.model,
            "lr": args.lr,
            "input_size": args.size,
            "crop_pct": CROP_PCT,
        },
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "adamw",
            "weight_decay": 0.0005,
            "schedule": "cosine",
            "precision": "bf16",
            "compile": args.compile,
            "flip": True,
            "crop": 0,
            "resized_crop": True,
        },
    }
    data = parse_params(params).data
    download(data.source, work / "raw")
    start = time.perf_counter()
    preprocess.prepare(work / "raw", work / "prepared", data)
    seconds = time.perf_counter() - start
    counts = _reference_folders(work, data)
    run = {
        "params": params,
        "args": vars(args),
        "image_size": image_size,
        "preprocess_s": seconds,
        **counts,
    }
    (work / "run.json").write_text(json.dumps(run))
    return run


def _reference_folders(work: Path, data) -> dict:
    """work/reference/{train,val}/<class>/: links to the very files the preprocess dealt to
    its train and val splits (its seeded deal, redone here)."""
    from visiontune.data import preprocess

    raw = work / "raw"
    source = json.loads((raw / "source.json").read_text())
    members, _ = preprocess._open_raw(raw, source)
    dealt = preprocess._deal(source["classes"], preprocess._shuffled_subsets(members, data), data)
    counts = {}
    for split in ("train", "val"):
        refs, labels = dealt[split]
        for ref, label in zip(refs, labels, strict=True):
            link = work / "reference" / split / source["classes"][label] / Path(ref).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(raw / ref)
        counts[split] = len(refs)
    return counts


def _child(kind: str, work: Path) -> dict:
    """Run :func:`child` in a fresh Python process; its JSON result."""
    command = [sys.executable, __file__, "--child", kind, str(work)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def child(kind: str, work: Path) -> dict:
    """One fine-tune in this process: its images/s after the warm-up epoch, last val/acc and
    peak memory."""
    import torch

    run = json.loads((work / "run.json").read_text())
    ends: list[float] = []
    fine_tune = _pipeline if kind == "pipeline" else _reference
    val_acc = fine_tune(work, run, ends)
    epochs = len(ends) - 1
    images_per_s = run["train"] * epochs / (ends[-1] - ends[0])
    if torch.cuda.is_available():
        memory = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated on the device"
    else:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        children = f" (largest child process {workers:.0f} MB)" if workers else ""
        memory = f"RSS {own:.0f} MB{children}"
    return {"images_per_s": images_per_s, "val_acc": val_acc, "memory": memory}


def _pipeline(work: Path, run: dict, ends: list[float]) -> float:
    """The project's fit on the prepared splits; ``ends`` gets each epoch's end time."""
    from visiontune.config.params import parse_params
    from visiontune.training.fit import fit

    def mark(result) -> None:
        _synchronize()
        ends.append(time.perf_counter())

    fitted = fit(parse_params(run["params"]), work / "prepared", on_epoch=mark)
    return fitted.kept.val.acc


def _reference(work: Path, run: dict, ends: list[float]) -> float:
    """The same fine-tune as timm users write it (a last batch of one image dropped, as the
    pipeline drops it); ``ends`` gets each epoch's end time."""
    import timm
    import torch
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    args, size = run["args"], run["args"]["size"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    val_tf = transforms.Compose(
        [
            transforms.Resize(run["image_size"]),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    loader = {
        "batch_size": args["batch_size"],
        "num_workers": args["workers"],
        "pin_memory": True,
        "persistent_workers": args["workers"] > 0,
    }
    train_set = datasets.ImageFolder(work / "reference" / "train", train_tf)
    single = len(train_set) % args["batch_size"] == 1  # batch norm cannot train on one image
    train = torch.utils.data.DataLoader(train_set, shuffle=True, drop_last=single, **loader)
    val = torch.utils.data.DataLoader(
        datasets.ImageFolder(work / "reference" / "val", val_tf), **loader
    )
    model = timm.create_model(args["model"], pretrained=False, num_classes=10)
    model = model.to(device, memory_format=torch.channels_last)
    forward = torch.compile(model) if args["compile"] else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args["lr"], weight_decay=0.0005)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=len(train) * args["epochs"]
    )
    acc = 0.0
    for _ in range(args["epochs"]):
        model.train()
        for images, labels in train:
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(forward(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = total = 0
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            for images, labels in val:
                images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
                labels = labels.to(device, non_blocking=True)
                correct += (forward(images).argmax(1) == labels).sum().item()
                total += labels.numel()
        acc = correct / total
        _synchronize()
        ends.append(time.perf_counter())
    return acc


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
