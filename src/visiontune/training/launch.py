"""The train stage as ``train.nproc`` processes: its own process launches them through
torchrun's launcher (``torch.distributed.run``'s API, in this process) and waits.

One machine: torchrun's standalone rendezvous on a free local port. Several machines: the
same command on each, with :data:`~visiontune.config.processes.NNODES_ENV` (machines) and
:data:`~visiontune.config.processes.ENDPOINT_ENV` (``host:port`` of torchrun's c10d
rendezvous) in the environment; ``train.nproc`` is the total and divides by the machines.
A process that fails or is killed stops every other (torchrun's agent), and the stage
fails with one line naming its rank; the launched processes end with this one
(:func:`~visiontune.config.processes.watch_launcher`).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import uuid
from pathlib import Path

from visiontune.config import processes
from visiontune.config.errors import VisiontuneError
from visiontune.config.params import ParamsError, TrainParams


def launches(cfg: TrainParams) -> bool:
    """Whether this process launches the stage's processes: ``train.nproc`` > 1, and it is
    not one of them."""
    return cfg.nproc > 1 and not processes.launched()


def run_processes(cfg: TrainParams, script: Path) -> None:
    """Run ``python script`` as this machine's share of ``train.nproc`` processes and wait
    for all of them; VisiontuneError (one line) when one fails or the params cannot run."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nodes, endpoint = _nodes()
    per_node = _per_node(cfg, nodes)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    os.environ[processes.LAUNCHER_ENV] = str(os.getpid())
    try:
        with tempfile.TemporaryDirectory(prefix="visiontune-train-") as logs:
            config = LaunchConfig(
                min_nodes=nodes,
                max_nodes=nodes,
                nproc_per_node=per_node,
                run_id=os.environ.get(processes.RUN_ID_ENV, "visiontune-train")
                if endpoint
                else uuid.uuid4().hex,
                rdzv_backend="c10d",
                rdzv_endpoint=endpoint or "localhost:0",
                max_restarts=0,
                logs_specs=DefaultLogsSpecs(log_dir=logs),
                shutdown_timeout=5,
            )
            elastic_launch(config, sys.executable)(str(script))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        why = (
            f"killed by {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exit status {failure.exitcode}"
        )
        raise VisiontuneError(
            f"train.nproc={cfg.nproc}: rank {rank} failed ({why}); every process was stopped"
        ) from None
    except SignalException as exc:  # the stage stopped (Ctrl-C, dvc queue kill): so are they
        raise VisiontuneError(
            f"train.nproc={cfg.nproc}: stopped by {exc.sigval.name}; every process was stopped"
        ) from None
    except RendezvousError as exc:
        raise VisiontuneError(
            f"train.nproc={cfg.nproc}: the {nodes} nodes did not meet at {endpoint} ({exc})"
        ) from None
    finally:
        del os.environ[processes.LAUNCHER_ENV]


def _nodes() -> tuple[int, str | None]:
    """Machines of the run and the rendezvous endpoint, from the environment."""
    raw = os.environ.get(processes.NNODES_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise VisiontuneError(f"{processes.NNODES_ENV} must be a number of machines, got {raw!r}")
    endpoint = os.environ.get(processes.ENDPOINT_ENV) or None
    if int(raw) > 1 and endpoint is None:
        raise VisiontuneError(
            f"{processes.NNODES_ENV}={raw} needs {processes.ENDPOINT_ENV}=host:port, where the "
            "nodes meet (torchrun's c10d rendezvous)"
        )
    return int(raw), endpoint


def _per_node(cfg: TrainParams, nodes: int) -> int:
    """Processes on this machine; ParamsError where ``train.nproc`` cannot run here."""
    import torch

    from visiontune.models.runtime import resolve_device
    from visiontune.training.distributed import backend_for

    per_node, rest = divmod(cfg.nproc, nodes)
    if rest or not per_node:
        raise ParamsError(
            f"train.nproc must divide by the {nodes} machines of {processes.NNODES_ENV}, "
            f"got {cfg.nproc}"
        )
    device = resolve_device(cfg.device)
    backend_for(device)
    if device.type == "cuda" and per_node > torch.cuda.device_count():
        raise ParamsError(
            f"train.nproc must be at most the {torch.cuda.device_count()} GPUs here (one a "
            f"process) times the machines, got {cfg.nproc}"
        )
    return per_node
