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

from visiontune.errors import VisiontuneError
from visiontune.params import Params
from visiontune.training import PHASES, TrainSplit

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

    ``step.cpu_us`` is the CPU time of all profiled steps and ``step.device_us`` the time
    of every GPU kernel they ran (0 on a CPU); phases count inclusive time, operators their
    self time.
    """

    steps: int
    device: torch.device
    step: Timing
    phases: list[Timing]  # in PHASES order
    by_cpu: list[Timing]  # the top operators by self CPU time
    by_device: list[Timing]  # the top operators by self CUDA time (none on a CPU)
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
    data = TrainSplit.load(params, prepared_dir)
    trainer = data.new_trainer(params)
    most = trainer.total_steps - WARMUP
    if not 1 <= steps <= most:
        raise VisiontuneError(
            f"--steps must be from 1 to {most} (these params train for "
            f"{trainer.total_steps} steps, {WARMUP} of them spent on warm-up), got {steps}"
        )
    trainer.phase = record_function
    batches = data.full_batches(min(params.train.batch_size, len(data.labels)), trainer.generator)
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
            with record_function(PHASES[0]):  # the batch's index slice, before the step
                idx = next(batches)
                images, labels = data.images[idx], data.labels[idx]
            trainer.step(images, labels, data.normalize)
            prof.step()
    return _summary(recorded, steps, data.device, trace, top)


def _summary(events: list[Any], steps: int, device: torch.device, trace: Path, top: int) -> Profile:
    """The step, phases and top operators of torch's per-name averages."""
    by_name = {event.key: event for event in events}
    operators = [_own(e) for e in events if e.key not in {*PHASES, STEP}]
    total = by_name[STEP]
    return Profile(
        steps=steps,
        device=device,
        step=Timing(STEP, total.count, total.cpu_time_total, sum(o.device_us for o in operators)),
        phases=[_inclusive(by_name[name]) for name in PHASES if name in by_name],
        by_cpu=sorted(operators, key=lambda o: o.cpu_us, reverse=True)[:top],
        by_device=[
            o for o in sorted(operators, key=lambda o: o.device_us, reverse=True) if o.device_us
        ][:top],
        trace=trace,
    )


def _own(event: Any) -> Timing:
    return Timing(event.key, event.count, event.self_cpu_time_total, event.self_device_time_total)


def _inclusive(event: Any) -> Timing:
    return Timing(event.key, event.count, event.cpu_time_total, event.device_time_total)


def format_profile(result: Profile, params: Params) -> str:
    """What ``visiontune profile`` prints: the step, its phases' shares, the top operators.

    Times are per step; a share is of the step's CPU time (of its CUDA kernels' time in
    the CUDA columns). ``other`` is the step's time outside the phases (the loop itself).
    """
    cuda = result.device.type == "cuda"
    cfg, n = params.train, result.steps
    head = (
        f"{n} training steps of {params.model.name} (batch {cfg.batch_size}, {cfg.optimizer}) "
        f"on {result.device}, after {WARMUP} warm-up steps: "
        f"{_ms(result.step.cpu_us, n)} ms CPU time a step"
    )
    if cuda:
        head += f", {_ms(result.step.device_us, n)} ms in CUDA kernels"
    lines = [head, "", _header("phase", cuda)]
    other = Timing("other", n, result.step.cpu_us - sum(p.cpu_us for p in result.phases))
    lines += [_row(t, result, cuda and t is not other) for t in [*result.phases, other]]
    tables = (
        [("CPU", result.by_cpu), ("CUDA", result.by_device)] if cuda else [("CPU", result.by_cpu)]
    )
    for kind, operators in tables:
        lines += [
            "",
            f"top {len(operators)} operators by self {kind} time",
            _header("operator", cuda),
        ]
        lines += [_row(op, result, cuda) for op in operators]
    lines += ["", f"trace: {result.trace} (open it in https://ui.perfetto.dev or chrome://tracing)"]
    return "\n".join(lines)


def _header(first: str, cuda: bool) -> str:
    columns = f"{first:<44}{'calls':>7}{'CPU ms':>10}{'share':>8}"
    return columns + (f"{'CUDA ms':>10}{'share':>8}" if cuda else "")


def _row(timing: Timing, result: Profile, cuda: bool) -> str:
    n = result.steps
    line = f"{timing.name[:43]:<44}{timing.calls / n:>7g}{_ms(timing.cpu_us, n):>10}"
    line += f"{timing.cpu_us / result.step.cpu_us:>8.1%}"
    if cuda:
        share = timing.device_us / max(result.step.device_us, 1)
        line += f"{_ms(timing.device_us, n):>10}{share:>8.1%}"
    return line


def _ms(microseconds: float, steps: int) -> str:
    """Milliseconds a step, to 3 decimals."""
    return f"{microseconds / steps / 1000:.3f}"
