"""A terminal progress bar for training (rich), or nothing: library code stays silent unless
the caller asks for ``progress=True``."""

from __future__ import annotations

from types import TracebackType

__all__ = ["TrainingProgress"]


class TrainingProgress:
    """``with TrainingProgress(enabled, total_steps, done_steps, title) as bar: bar.step(...)``."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int, title: str) -> None:
        self.enabled = enabled
        self._progress = None
        self._task = None
        self._total = total_steps
        self._done = done_steps
        self._title = title

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                self._title, total=self._total, completed=self._done, status=""
            )
        return self

    def step(self, epoch: int, epochs: int, status: str = "") -> None:
        """One optimizer step done, during ``epoch`` (1-based) of ``epochs``."""
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=1,
                description=f"{self._title} epoch {epoch}/{epochs}",
                status=status,
            )

    def status(self, status: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, status=status)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, error, trace)
