"""Which trials count toward ``--trials``, and how many are still to start.

A trial counts once it is COMPLETE, PRUNED (as in Optuna) or FAILED by itself (diverged,
crashed, timed out).
Trials stopped from outside (Ctrl-C, a surplus ask) are recorded as FAIL with a reason that
says so, and trials whose tuner died as FAIL with no reason; neither counts, so a resumed
study still gets its full number.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

REASON = "fail_reason"  # user attr of a FAIL that counts, unless absent or one of these:
INTERRUPTED = "interrupted"  # stopped by Ctrl-C
SURPLUS = "surplus"  # asked while other workers' trials already reached --trials
NOT_COUNTED = (INTERRUPTED, SURPLUS)  # and no reason at all: its tuner died (went stale)
WORKER = "worker"  # user attr: host and clone of the tuner that ran the trial
LOG = "fail_log"  # user attr of a FAIL: its kept log, relative to the clone that ran it
TAIL = "fail_tail"  # user attr of a crashed FAIL: the last lines of that log


def experiment_name(study: str, number: int) -> str:
    """The dvc experiment of trial ``number`` of ``study``: ``<study>-<number>``."""
    return f"{study}-{number}"


def worker(repo: Path) -> str:
    """This tuner's :data:`WORKER` mark: ``host:clone``."""
    return f"{socket.gethostname()}:{repo.resolve()}"


def counted(trial: FrozenTrial) -> bool:
    """A trial that counts toward ``--trials``: complete, pruned, or failed by itself."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    reason = trial.user_attrs.get(REASON)
    return trial.state == TrialState.FAIL and reason is not None and reason not in NOT_COUNTED


def surplus(study: optuna.Study, number: int, target: int) -> bool:
    """Whether trial ``number`` would overshoot ``target``: the trials numbered below it that
    count or still run already reach the target.

    Two workers that each see one trial missing both ask. Optuna numbers new trials under a
    lock on the study, so every lower-numbered trial is visible here: the lowest-numbered
    of the racing trials run, the rest are recorded as surplus (FAIL, not counted). If a
    running trial later fails without counting, the waiting workers ask again.
    """
    from optuna.trial import TrialState

    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    return sum(counted(t) or t.state == TrialState.RUNNING for t in earlier) >= target


def remaining(study: optuna.Study, target: int, in_flight: int) -> int:
    """Trials still to start: the target less counted ones and those running anywhere."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(counted(t) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return target - done - max(running, in_flight)


def reached(study: optuna.Study, target: int) -> bool:
    """Whether the study counts ``target`` trials: the tuner's work is done."""
    return sum(counted(t) for t in study.get_trials(deepcopy=False)) >= target
