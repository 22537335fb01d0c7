"""``visiontune profile``: torch.profiler over training steps of the current params.

The steps are the train stage's own (:class:`Trainer`, same model, optimizer, schedule,
augmentation and batch size, on the prepared train split), with each phase of a step
labelled by ``torch.profiler.record_function`` in this loop only: training itself runs
unlabelled. Prints the phases' share of a step and the top operators by self time, and
writes a Chrome trace.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visiontune.config.errors import VisiontuneError
from visiontune.config.params import Params
from visiontune.training.parts import Splits, build_trainer
from visiontune.training.trainer import PHASES

WARMUP = 2  # steps run before recording: lazy initialisation, optimizer state, allocator
STEP = "ProfilerStep*"  # torch.profiler's label of a whole step, averaged over steps


@dataclass(frozen=True)
class Timing:
    """Microseconds spent in a phase or an operator over all profiled steps."""

    name: str
    calls: int
    cpu_us: float
    device_us: float = 0.0


@dataclass(frozen=True)
class Profile:
    """What ``visiontune profile`` measured: whole steps, their phases, the top operators.

    ``step`` and ``phases`` count inclusive time: CPU time of the region, and the CUDA
    kernels launched inside it (0 on a CPU). Operators count their self CPU time, kernels
    their GPU time.
    """

    steps: int
    device: torch.device
    step: Timing
    phases: list[Timing]  # in PHASES order
    operators: list[Timing]  # the top operators by self CPU time
    kernels: list[Timing]  # the top CUDA kernels by time (none on a CPU)
    trace: Path


def profile_training(
    params: Params, prepared_dir: Path, *, steps: int, trace: Path, top: int = 15
) -> Profile:
    """Profile ``steps`` training steps (after ``WARMUP`` unrecorded ones) of ``params`` on
    ``prepared_dir``'s train split; write the Chrome trace to ``trace``.

    Raises VisiontuneError if ``steps`` is below 1 or more than training with ``params``
    would run (where its schedule ends).
    """
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # no profiler start/stop lines on stderr
    data = Splits.load(params, prepared_dir)
    trainer = build_trainer(params, data)
    most = trainer.total_steps - WARMUP
    if not 1 <= steps <= most:
        raise VisiontuneError(
            f"--steps must be from 1 to {most} (these params train for "
            f"{trainer.total_steps} steps, {WARMUP} of them spent on warm-up), got {steps}"
        )
    trainer.phase = record_function
    batch_size = min(params.train.batch_size, len(data.train))
    batches = trainer.made(data.train.full_batches(batch_size, trainer.generator))
    activities = [ProfilerActivity.CPU]
    if data.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    recorded: list[Any] = []

    def ready(prof: Any) -> None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
        recorded.extend(prof.key_averages())

    plan = schedule(wait=0, warmup=WARMUP, active=steps, repeat=1)
    with profile(activities=activities, schedule=plan, on_trace_ready=ready) as prof:
        for _ in range(WARMUP + steps):
            trainer.step(next(batches))
            prof.step()
    return _summary(recorded, steps, data.device, trace, top)


def _summary(events: list[Any], steps: int, device: torch.device, trace: Path, top: int) -> Profile:
    """The step, phases, top operators and kernels in torch's per-name averages, which keep
    host events apart from device ones (a label has one of each on a GPU)."""
    from torch.autograd import DeviceType

    host = {e.key: e for e in events if e.device_type == DeviceType.CPU}
    operators = [_own(e) for key, e in host.items() if key not in {*PHASES, STEP}]
    kernels = [
        Timing(e.key, e.count, 0.0, e.self_device_time_total)
        for e in events
        if e.device_type != DeviceType.CPU and not e.is_user_annotation
    ]
    return Profile(
        steps=steps,
        device=device,
        step=_inclusive(host[STEP]),
        phases=[_inclusive(host[name]) for name in PHASES if name in host],
        operators=sorted(operators, key=lambda o: o.cpu_us, reverse=True)[:top],
        kernels=sorted(kernels, key=lambda k: k.device_us, reverse=True)[:top],
        trace=trace,
    )


def _own(event: Any) -> Timing:
    return Timing(event.key, event.count, event.self_cpu_time_total)


def _inclusive(event: Any) -> Timing:
    return Timing(event.key, event.count, event.cpu_time_total, event.device_time_total)


def format_profile(result: Profile, params: Params) -> str:
    """What ``visiontune profile`` prints: the step, its phases' shares, the top operators
    (and CUDA kernels).

    Times are per step; a share is of the step's CPU time, or in CUDA columns of the
    CUDA kernel time of the step. ``other`` is the step's time outside the phases.
    """
    cuda = result.device.type == "cuda"
    cfg, n = params.train, result.steps
    head = (
        f"{n} training steps of {params.model.name} (batch {cfg.batch_size}, {cfg.optimizer}) "
        f"on {result.device}, after {WARMUP} warm-up steps: "
        f"{_ms(result.step.cpu_us, n)} ms CPU time a step"
    )
    if cuda:
        head += f", {_ms(result.step.device_us, n)} ms of CUDA kernels"
    cpu_total, device_total = result.step.cpu_us, max(result.step.device_us, 1.0)
    other = Timing("other", n, cpu_total - sum(p.cpu_us for p in result.phases))
    lines = [head, "", _columns("phase", "CPU", cuda)]
    for phase in [*result.phases, other]:
        line = _cells(phase, n, phase.cpu_us, cpu_total)
        if cuda and phase is not other:
            line += _cells(phase, n, phase.device_us, device_total, calls=False)
        lines.append(line)
    lines += ["", f"top {len(result.operators)} operators by self CPU time"]
    lines += [_columns("operator", "CPU", False)]
    lines += [_cells(op, n, op.cpu_us, cpu_total) for op in result.operators]
    if cuda:
        lines += ["", f"top {len(result.kernels)} CUDA kernels by time"]
        lines += [_columns("kernel", "CUDA", False)]
        lines += [_cells(k, n, k.device_us, device_total) for k in result.kernels]
    lines += ["", f"trace: {result.trace} (open it in https://ui.perfetto.dev or chrome://tracing)"]
    return "\n".join(lines)


def _columns(first: str, kind: str, cuda: bool) -> str:
    columns = f"{first:<48}{'calls':>6}{kind + ' ms':>10}{'share':>8}"
    return columns + (f"{'CUDA ms':>10}{'share':>8}" if cuda else "")


def _cells(timing: Timing, steps: int, us: float, total: float, *, calls: bool = True) -> str:
    """A timing's name and calls (per step), then ``us`` in ms per step and its share."""
    head = f"{timing.name[:47]:<48}{timing.calls / steps:>6g}" if calls else ""
    return head + f"{_ms(us, steps):>10}{us / total:>8.1%}"


def _ms(microseconds: float, steps: int) -> str:
    """Milliseconds a step, to 3 decimals."""
    return f"{microseconds / steps / 1000:.3f}"
