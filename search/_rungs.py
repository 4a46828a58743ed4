"""The study side of successive halving in the trial loop: where rung results live and how a
worker decides a rung.

Rung state lives in the study only: every trial's :class:`~results.record.TrialRecord` holds
its ``rungs`` (stored the moment a rung is decided), so a rerun after a crash, another worker
or another machine sees all of it. :class:`RungIndex` gathers them by rung and by archid (the
loop's study view feeds it: finished trials once, running ones on every read).
:class:`TrialRungs` is what :func:`search.objective.run_rungs` calls for one trial; it decides
under the study's ask lock, so that no more trials are promoted into the top rung than the
study still needs (exactly N COMPLETE trials).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pikenas.results.record import RungResult, TrialRecord
from pikenas.search._journal import flush
from pikenas.search.fidelity import Decision, FidelityConfig, decide

if TYPE_CHECKING:
    import optuna

    from pikenas.search.lock import AskLock

__all__ = ["RungIndex", "TrialRungs", "checkpoint_folder"]


def checkpoint_folder(checkpoints: str | Path | None, study_name: str) -> Path | None:
    """The folder of a study's proxy checkpoints (one file per archid) under ``checkpoints``."""
    return Path(checkpoints) / study_name if checkpoints is not None else None


class RungIndex:
    """Rung results of a study: points ``(accuracy, ACE v2)`` by rung epochs and archid, and
    every archid's results with the trial they came from. ``finishing``: RUNNING trials that
    were promoted into the top rung."""

    def __init__(self, fidelity: FidelityConfig) -> None:
        self.fidelity = fidelity
        self._finished: dict[str, tuple[int, dict[int, RungResult], float]] = {}
        self._running: dict[str, tuple[int, dict[int, RungResult], float]] = {}
        self.finishing = 0

    def start_running(self) -> None:
        self._running = {}
        self.finishing = 0

    def add(self, number: int, record: TrialRecord, running: bool) -> None:
        """Index ``record`` of trial ``number`` (a finished one once, a running one on every
        read, after :meth:`start_running`)."""
        if not record.rungs or not record.archid or record.ace_v2 is None:
            return
        if running:  # promoted into the top rung, or done and about to be told
            last = record.rungs[-1]
            below_top = self.fidelity.rungs[-2]
            self.finishing += (last.decision == "promoted" and last.epochs == below_top) or (
                last.decision == "top"
            )
        entries = self._running if running else self._finished
        results = {rung.epochs: rung for rung in record.rungs}
        held = entries.get(record.archid)
        if held is None or len(results) > len(held[1]):
            entries[record.archid] = (number, results, float(record.ace_v2))

    def _entries(self) -> dict[str, tuple[int, dict[int, RungResult], float]]:
        merged = dict(self._finished)
        for archid, entry in self._running.items():
            if archid not in merged or len(entry[1]) > len(merged[archid][1]):
                merged[archid] = entry
        return merged

    def points(self, epochs: int) -> dict[str, tuple[float, float]]:
        """archid -> (accuracy, ACE v2) of every architecture measured at rung ``epochs``."""
        return {
            archid: (results[epochs].val_accuracy, ace_v2)
            for archid, (_, results, ace_v2) in self._entries().items()
            if epochs in results
        }

    def promoted(self, epochs: int) -> set[str]:
        """archids promoted at rung ``epochs``."""
        return {
            archid
            for archid, (_, results, _) in self._entries().items()
            if epochs in results and results[epochs].decision == "promoted"
        }

    def known(self, archid: str, exclude: int) -> tuple[int | None, dict[int, RungResult]]:
        """``archid``'s rung results from a trial other than ``exclude``, and its number."""
        entry = self._entries().get(archid)
        if entry is None or entry[0] == exclude:
            return None, {}
        return entry[0], dict(entry[1])


class TrialRungs:
    """:class:`search.objective.Rungs` for one trial of a worker's loop. ``refresh()`` (called
    under the lock) brings the loop's study view, with its :class:`RungIndex`, up to date and
    returns the COMPLETE trials and the RUNNING ones that will be COMPLETE unless they fail."""

    def __init__(
        self,
        study: optuna.Study,
        trial_id: int,
        number: int,
        *,
        fidelity: FidelityConfig,
        index: RungIndex,
        refresh: Callable[[], tuple[int, int]],
        lock: AskLock,
        n_trials: int,
        checkpoints: Path | None,
    ) -> None:
        self.study = study
        self.trial_id = trial_id
        self.number = number
        self.fidelity = fidelity
        self.index = index
        self.refresh = refresh
        self.lock = lock
        self.n_trials = n_trials
        self.checkpoints = checkpoints

    def known(self, archid: str) -> tuple[int | None, dict[int, RungResult]]:
        with self.lock:
            self.refresh()
            return self.index.known(archid, exclude=self.number)

    def checkpoint(self, archid: str) -> Path | None:
        return self.checkpoints / f"{archid}.safetensors" if self.checkpoints else None

    def decide(self, record: TrialRecord, result: RungResult) -> Decision:
        archid = record.archid or ""
        num_classes = int(json.loads(record.arch or "{}").get("num_classes", 10))
        with self.lock:
            complete, finishing = self.refresh()
            reached = {k: v for k, v in self.index.points(result.epochs).items() if k != archid}
            promoted = len(self.index.promoted(result.epochs) - {archid})
            decision = decide(
                self.fidelity,
                result.epochs,
                archid,
                (result.val_accuracy, float(record.ace_v2 or 0.0)),
                reached,
                num_classes=num_classes,
                val_images=result.val_images,
                promoted=promoted,
            )
            if decision.promote and complete + finishing >= self.n_trials:
                decision = Decision(
                    False,
                    f"the study has its {self.n_trials} trials at the top rung (or training to it)",
                    decision.rank,
                    decision.of,
                )
            rungs = (*(record.rungs or ()), decision.applied_to(result))
            attrs = record.model_copy(update={"rungs": rungs}).to_attrs()
            storage = self.study._storage
            storage.set_trial_user_attr(self.trial_id, "rungs", attrs["rungs"])
            flush(storage)  # the rung result and its promotion are visible at once
        return decision
