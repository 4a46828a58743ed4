"""A journal storage that writes a trial's parameters and user attributes in one append.

Optuna's :class:`~optuna.storages.JournalStorage` appends (lock, write, ``fsync``) once per
operation, so a 50-gene candidate costs 50 appends, serialized across workers by the file lock
(``benchmarks/search_overhead.py`` measures what that costs). :class:`BufferedJournalStorage`
holds ``set_trial_param`` and ``set_trial_user_attr`` records (the very records Optuna writes)
in memory and appends them together right before any other storage call — every read and every
other write flushes first, so this process always sees its own writes and other processes see
them no later than this worker's next storage call (at the latest when it tells the trial).
Errors of a buffered record (for example a trial already finished by another worker) surface at
the flush, from the call that triggered it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from pikenas.results._journal_file import CheckedJournalStorage

__all__ = ["BufferedJournalStorage", "buffered", "flush"]

# Every public JournalStorage method except the two buffered ones flushes first.
_FLUSH_FIRST = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "get_trial_id_from_study_id_trial_number",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
)


def _flushing(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: BufferedJournalStorage, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return method(self, *args, **kwargs)

    return wrapper


class BufferedJournalStorage(CheckedJournalStorage):
    """:class:`JournalStorage` with buffered parameter and user-attribute writes."""

    def __init__(self, log_storage: BaseJournalBackend) -> None:
        super().__init__(log_storage)
        self._pending: list[dict[str, Any]] = []
        self._pending_lock = threading.Lock()

    def __getstate__(self) -> dict[Any, Any]:
        self.flush()
        state = super().__getstate__()
        state.pop("_pending", None)
        state.pop("_pending_lock", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._pending = []
        self._pending_lock = threading.Lock()

    def _buffer(self, op_code: int, fields: dict[str, Any]) -> None:
        with self._pending_lock:
            self._pending.append(
                {"op_code": op_code, "worker_id": self._replay_result.worker_id, **fields}
            )

    def _sync_with_backend(self) -> None:
        # Optuna raises when it replays a record of this worker for a trial finished elsewhere,
        # at the first such record; replay the rest of a buffered batch too, then raise once.
        error: UpdateFinishedTrialError | None = None
        while True:
            try:
                super()._sync_with_backend()
                break
            except UpdateFinishedTrialError as exc:
                error = error or exc
        if error is not None:
            raise error

    def flush(self) -> None:
        """Append the buffered records (one lock, one write) and read them back."""
        with self._pending_lock:
            if not self._pending:
                return
            logs, self._pending = self._pending, []
            with self._thread_lock:
                self._backend.append_logs(logs)
                self._sync_with_backend()

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        from optuna.storages.journal._storage import JournalOperation

        self._buffer(
            JournalOperation.SET_TRIAL_PARAM,
            {
                "trial_id": trial_id,
                "param_name": param_name,
                "param_value_internal": param_value_internal,
                "distribution": distribution_to_json(distribution),
            },
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        from optuna.storages.journal._storage import JournalOperation

        self._buffer(
            JournalOperation.SET_TRIAL_USER_ATTR, {"trial_id": trial_id, "user_attr": {key: value}}
        )


for _name in _FLUSH_FIRST:
    setattr(BufferedJournalStorage, _name, _flushing(getattr(JournalStorage, _name)))


def buffered(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """A buffered view of a journal storage (same log file); other storages unchanged."""
    if isinstance(storage, JournalStorage) and not isinstance(storage, BufferedJournalStorage):
        return BufferedJournalStorage(storage._backend)
    return storage


def flush(storage: optuna.storages.BaseStorage) -> None:
    """Write out anything ``storage`` buffers (no-op for other storages)."""
    if isinstance(storage, BufferedJournalStorage):
        storage.flush()
