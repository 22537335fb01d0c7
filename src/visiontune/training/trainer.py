"""One model's training: the loss, one step on a batch and one epoch over the train split's
batch source.

The Trainer is handed its parts, built once (:mod:`visiontune.training.parts`).
``Trainer.phase(name)`` wraps each phase of a step (:data:`PHASES`): a no-op context unless
the profiler swaps in ``torch.profiler.record_function`` to label them. ``train.precision``
and ``train.compile`` act through the Trainer (:mod:`visiontune.training.precision`), so
every step and validation pass it runs follows them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from tqdm import tqdm

from visiontune.config.params import TrainParams
from visiontune.data.batches import Batch, BatchSource
from visiontune.models.scoring import EvalResult, evaluate_batches
from visiontune.training.distributed import SINGLE, Group
from visiontune.training.optimization import Optimization
from visiontune.training.precision import Precision

# The phases of a training step, in order; Trainer.phase wraps each (the profiler labels them).
PHASES = ("data/augment", "forward", "backward", "optimizer step")


class Trainer:
    """Steps and epochs of one model with the parts :mod:`visiontune.training.parts` built:
    the network, its optimization (optimizer, schedule, backbone), the precision, and the
    generator that shuffles and augments its batches (seeded from ``train.seed``).

    ``model`` is what is saved; ``network`` runs the forward passes (``model`` compiled
    with ``train.compile``, else ``model`` itself). The backbone is frozen for the first
    ``train.freeze_epochs`` epochs. ``precision`` (``train.precision``) wraps forward,
    loss, backward and optimizer step. ``cfg`` gives the batch size, label smoothing and
    freeze epochs.

    In a ``group`` of several processes ``network`` is the model in DistributedDataParallel,
    each step's loss is weighted by the process's share of the global batch (so that the
    averaged gradient is the global batch's mean, shares equal or not), an epoch's
    metrics and a validation are those of every process together, and ``scorer`` (the
    model itself, compiled or not) scores each process's share of the val split.
    """

    phase: Callable[[str], AbstractContextManager] = nullcontext

    def __init__(
        self,
        model: torch.nn.Module,
        network: torch.nn.Module,
        optimization: Optimization,
        precision: Precision,
        cfg: TrainParams,
        *,
        scorer: torch.nn.Module | None = None,
        group: Group = SINGLE,
    ) -> None:
        self.model, self.network, self.precision, self.cfg = model, network, precision, cfg
        self.scorer = network if scorer is None else scorer
        self.group = group
        self.optimizer, self.scheduler = optimization.optimizer, optimization.scheduler
        self.backbone, self.total_steps = optimization.backbone, optimization.total_steps
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.epochs_done = 0

    def freeze_backbone(self, frozen: bool) -> None:
        """Fix the backbone's weights (only the head learns; batch norm statistics still
        follow the data) or let them learn again."""
        for param in self.backbone:
            param.requires_grad_(not frozen)

    def made(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """``batches``, each one made (gathered, augmented, normalised) in the data phase."""
        while True:
            with self.phase("data/augment"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    def step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer (and schedule) step on a batch; returns (logits, loss)."""
        phase = self.phase
        with phase("forward"), self.precision.autocast():
            logits = self.network(batch.inputs)
            loss = F.cross_entropy(logits, batch.labels, label_smoothing=self.cfg.label_smoothing)
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.backward(self._weighted(loss, batch))
        with phase("optimizer step"):
            self.precision.step(self.optimizer)
            if self.scheduler is not None:
                self.scheduler.step()
        return logits.detach(), loss.detach()

    def _weighted(self, loss: torch.Tensor, batch: Batch) -> torch.Tensor:
        """A process's mean ``loss`` weighted by its share of the global batch, times the
        processes: DistributedDataParallel's average of the gradients is then the gradient
        of the global batch's mean loss."""
        if self.group.world == 1:
            return loss
        return loss * (len(batch) * self.group.world / batch.total)

    def epoch(self, source: BatchSource, desc: str) -> tuple[float, float]:
        """One pass over ``source``'s shuffled, augmented batches; mean loss and accuracy."""
        self.model.train()
        if self.cfg.freeze_epochs:
            self.freeze_backbone(self.epochs_done < self.cfg.freeze_epochs)
        self.epochs_done += 1
        device = source.labels.device
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        batches = self.made(source.batches(self.cfg.batch_size, self.generator))
        total = source.batch_count(self.cfg.batch_size)
        quiet = None if self.group.writes else True  # None: a bar on a terminal only
        for batch in tqdm(
            batches, total=total, desc=desc, leave=False, disable=quiet, unit="batch"
        ):
            logits, loss = self.step(batch)
            loss_sum += loss * len(batch)
            correct += (logits.argmax(1) == batch.labels).sum()
            seen += len(batch)
        if self.group.world == 1:
            return loss_sum.item() / seen, correct.item() / seen
        sums = torch.stack(
            [
                loss_sum.double(),
                correct.double(),
                torch.tensor(float(seen), dtype=torch.float64, device=device),
            ]
        )
        loss_total, correct_total, seen_total = self.group.sum(sums).tolist()
        return loss_total / seen_total, correct_total / seen_total

    def evaluate(self, source: BatchSource) -> EvalResult:
        """:func:`evaluate_batches` of ``source`` (in order, unaugmented) as training computes:
        the same network, under the same autocast; in a group, of every process's share."""
        gather = self.group.gather if self.group.world > 1 else None
        with self.precision.autocast():
            return evaluate_batches(self.scorer, source.batches(2 * self.cfg.batch_size), gather)
