"""Which trials are alive: heartbeats for this tuner's trials, staleness for the others'.

The storage methods it calls (heartbeats, staleness, ids) are Optuna internals, reached
through :mod:`~visiontune.tuning.optuna_internals`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from visiontune.tuning import optuna_internals as internals

if TYPE_CHECKING:
    import optuna


class Liveness:
    """Heartbeats of the trials this tuner runs, in ``storage``, for one study."""

    def __init__(self, storage: optuna.storages.RDBStorage, study: optuna.Study):
        self.storage = storage
        self.study_id = internals.study_id(storage, study.study_name)
        self.alive: set[int] = set()  # trial ids this tuner runs: never stale to it

    def trial_id(self, number: int) -> int:
        return internals.trial_id(self.storage, self.study_id, number)

    def start(self, number: int) -> None:
        """Trial ``number`` runs here from now on: beat once, keep it alive."""
        trial_id = self.trial_id(number)
        internals.record_heartbeat(self.storage, trial_id)
        self.alive.add(trial_id)

    def stop(self, number: int) -> None:
        self.alive.discard(self.trial_id(number))

    def stale(self) -> list[int]:
        """Numbers of RUNNING trials whose tuner stopped beating, other than ours."""
        stale = internals.stale_trial_ids(self.storage, self.study_id)
        return [
            internals.frozen_trial(self.storage, i).number for i in stale if i not in self.alive
        ]

    @contextlib.contextmanager
    def beating(self, interval: float) -> Iterator[None]:
        """Mark our trials alive every ``interval`` seconds while the tuner runs.

        A thread, so that a slow dvc call never lets a live trial look stale to another
        worker.
        """
        import optuna

        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                for trial_id in self.alive.copy():
                    with contextlib.suppress(optuna.exceptions.StorageInternalError):
                        # a lost beat: the next one
                        internals.record_heartbeat(self.storage, trial_id)

        thread = threading.Thread(target=beat, name="visiontune-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
