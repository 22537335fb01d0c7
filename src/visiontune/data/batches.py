"""The batch source: a split's model-ready batches.

A split that fits the device budget (:func:`resident_budget`) moves to the device once, as
uint8 tensors (N, C, H, W), and a batch is an index gather from it; a larger split stays
in its file and each batch is gathered from it memory-mapped (pinned and copied
asynchronously on CUDA), the next batch gathered in a thread while the current one
trains. Either way a batch is then augmented as one tensor when training
(:mod:`visiontune.data.augmentation`) or given the evaluation view otherwise, and
standardised to float (:mod:`visiontune.data.model_input`): the batches are the same,
batch for batch.
:class:`BatchSource` is the one place batches are made: the trainer's epochs, the finders'
and the profiler's steps, and scoring.

Among several processes (``train.nproc``) each holds a :class:`Shard`: a disjoint share of
every global batch in training (the shuffled order and the augmentation's draws are the
global batch's, from the seed alone) and a contiguous share of the split in evaluation; it
gathers only the images of its share, resident or streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from visiontune.data.augmentation import Augmentation, Rows
from visiontune.data.model_input import ModelInput
from visiontune.data.prepared import PreparedMeta, StoredSplit, open_split

AUTO_CPU_BUDGET_MB = 1024  # train.resident_mb 0 on the CPU: larger splits stream
AUTO_CUDA_SHARE = 0.5  # train.resident_mb 0 on CUDA: this share of the free device memory


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count``: its share of a batch or split of ``n`` images is the
    ``index``-th of ``count`` contiguous parts, the first ``n % count`` one image larger."""

    index: int = 0
    count: int = 1

    def rows(self, n: int) -> Rows:
        """This process's rows of ``n`` images."""
        base, extra = divmod(n, self.count)
        start = self.index * base + min(self.index, extra)
        return Rows(start, start + base + (self.index < extra), n)


@dataclass(frozen=True)
class Batch:
    """Images as the model takes them (float, normalised, on the device), and their labels;
    ``total``: the images of the global batch this one is a process's share of (0: itself)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    total: int = 0

    def __len__(self) -> int:
        return self.labels.shape[0]


class BatchSource:
    """One split on the device, served as model-ready batches.

    ``augmentation`` (``train.*``) makes the batches of a pass shuffled by a generator
    (training); a pass without one is in order, through ``model_input``'s evaluation view.
    ``shard``: the share of each pass this process reads.
    """

    def __init__(
        self,
        images: torch.Tensor | StoredSplit,
        labels: torch.Tensor,
        model_input: ModelInput,
        augmentation: Augmentation | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.images, self.labels, self.input = images, labels, model_input
        self.augmentation = augmentation or Augmentation()
        self.shard = shard or Shard()

    @classmethod
    def of_split(
        cls,
        prepared_dir: Path,
        split: str,
        model_input: ModelInput,
        device: torch.device,
        resident_mb: int = 0,
        augmentation: Augmentation | None = None,
        meta: PreparedMeta | None = None,
        shard: Shard | None = None,
    ) -> BatchSource:
        """A prepared split's batches on ``device``: moved there whole when it fits
        :func:`resident_budget`, else streamed from its file (checked against ``meta``, the
        prepared meta.json, read when not given); ``shard`` of them."""
        stored = open_split(prepared_dir, split, meta)
        labels = torch.from_numpy(stored.labels).to(device)
        images: torch.Tensor | StoredSplit = stored
        if stored.nbytes <= resident_budget(device, resident_mb):
            images = torch.from_numpy(stored.read()).to(device)
        return cls(images, labels, model_input, augmentation, shard)

    @property
    def streamed(self) -> bool:
        """Whether batches are gathered from the split's file (it did not fit the budget)."""
        return isinstance(self.images, StoredSplit)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch_count(self, batch_size: int) -> int:
        """Batches in one pass (a dropped single-image batch included)."""
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One pass over the split: this process's shard of it. With ``generator``
        (training): in a shuffled order, augmented, and without a last batch of a single
        image from a split of several (batch norm cannot train on one), nor one smaller than
        the processes. Without: in order, as stored."""
        device = self.labels.device
        if generator is None:
            rows = self.shard.rows(len(self))
            order = torch.arange(rows.start, rows.stop).to(device).split(batch_size)
            for idx, _, images in self._gathered((idx, None) for idx in order):
                yield Batch(self.input(images), self.labels[idx])
            return
        indices = index_batches(len(self), batch_size, device, generator)
        if len(self) > 1:
            indices = (idx for idx in indices if idx.numel() >= max(2, self.shard.count))
        yield from self._augmented(indices, generator)

    def full_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Shuffled, augmented batches of exactly ``batch_size`` (at most the split's size),
        epoch after epoch: the steps the finders and the profiler measure."""
        while True:
            indices = index_batches(len(self), batch_size, self.labels.device, generator)
            yield from self._augmented(
                (idx for idx in indices if idx.numel() == batch_size), generator
            )

    def _augmented(
        self, indices: Iterator[torch.Tensor], generator: torch.Generator
    ) -> Iterator[Batch]:
        """This process's share of each global batch of ``indices``, augmented with the
        global batch's random draws."""
        shares = ((idx, self.shard.rows(idx.numel())) for idx in indices)
        gathered = self._gathered((rows.kept(idx), rows) for idx, rows in shares)
        for idx, rows, images in gathered:
            images = self.augmentation(images, self.input.view, self.input.size, generator, rows)
            yield Batch(self.input.standardise(images), self.labels[idx], rows.total)

    def _gathered(
        self, indices: Iterator[tuple[torch.Tensor, Rows | None]]
    ) -> Iterator[tuple[torch.Tensor, Rows | None, torch.Tensor]]:
        """(index, rows, uint8 images on the device) for each (index, rows); a streamed
        split's next batch is gathered in a thread while the caller works on the current
        one."""
        if isinstance(self.images, torch.Tensor):
            for idx, rows in indices:
                yield idx, rows, self.images[idx]
            return
        device = self.labels.device
        with ThreadPoolExecutor(1) as reader:
            ahead = None
            for idx, rows in indices:
                gathering = reader.submit(self._read, idx)
                if ahead is not None:
                    yield ahead[0], ahead[1], ahead[2].result().to(device, non_blocking=True)
                ahead = (idx, rows, gathering)
            if ahead is not None:
                yield ahead[0], ahead[1], ahead[2].result().to(device, non_blocking=True)

    def _read(self, idx: torch.Tensor) -> torch.Tensor:
        """A streamed split's images at ``idx``, in host memory (pinned for CUDA)."""
        images = torch.from_numpy(self.images.gather(idx.cpu().numpy()))
        return images.pin_memory() if self.labels.device.type == "cuda" else images


def read_split(prepared_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole prepared split in host memory: uint8 images (N, C, S, S), int64 labels."""
    stored = open_split(prepared_dir, split)
    return torch.from_numpy(stored.read()), torch.from_numpy(stored.labels)


def resident_budget(device: torch.device, resident_mb: int = 0) -> int:
    """The largest split in bytes that moves to ``device`` whole (``train.resident_mb``;
    0 = :data:`AUTO_CUDA_SHARE` of the free CUDA memory, or :data:`AUTO_CPU_BUDGET_MB`)."""
    if resident_mb:
        return resident_mb << 20
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * AUTO_CUDA_SHARE)
    return AUTO_CPU_BUDGET_MB << 20


def index_batches(
    n: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Index slices covering 0..n-1 on ``device``, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.to(device).split(batch_size)
