"""Which trials are alive: heartbeats for this tuner's trials, staleness for the others'.

The one module that touches an Optuna internal: the storage knows which trials' heartbeats
went stale (``_get_stale_trial_ids``) but has no public method for it. Everything else
goes through the storage object this tuner opened and Optuna's public API.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna


class Liveness:
    """Heartbeats of the trials this tuner runs, in ``storage``, for one study."""

    def __init__(self, storage: optuna.storages.RDBStorage, study: optuna.Study):
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.alive: set[int] = set()  # trial ids this tuner runs: never stale to it

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def start(self, number: int) -> None:
        """Trial ``number`` runs here from now on: beat once, keep it alive."""
        trial_id = self.trial_id(number)
        self.storage.record_heartbeat(trial_id)
        self.alive.add(trial_id)

    def stop(self, number: int) -> None:
        self.alive.discard(self.trial_id(number))

    def stale(self) -> list[int]:
        """Numbers of RUNNING trials whose tuner stopped beating, other than ours."""
        stale_ids = self.storage._get_stale_trial_ids(self.study_id)  # no public equivalent
        return [self.storage.get_trial(i).number for i in stale_ids if i not in self.alive]

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
                        self.storage.record_heartbeat(trial_id)  # a lost beat: the next one

        thread = threading.Thread(target=beat, name="visiontune-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
