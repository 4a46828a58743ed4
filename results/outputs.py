"""Everything ``pikenas search`` leaves in its run folder at the end, in one call."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from results.dashboard import write_dashboard
from results.export import export_pareto
from results.front import write_front_csv
from results.storage import open_study

__all__ = ["RunOutputs", "write_run_outputs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutputs:
    """Paths written by :func:`write_run_outputs`."""

    front_csv: Path
    dashboard: Path
    exports: list[Path] = field(default_factory=list)


def write_run_outputs(
    run_dir: str | Path, study: str | None = None, *, export: bool = True
) -> RunOutputs:
    """Write ``RUN/front.csv``, ``RUN/dashboard.html`` and (``export=True``) the bundles of
    the front into ``RUN/exports/trial-<N>/`` (see STUDY.md); each file is written atomically.
    """
    run_dir = Path(run_dir)
    optuna_study = open_study(run_dir, study)
    front_csv = write_front_csv(optuna_study, out=run_dir / "front.csv")
    dashboard = write_dashboard(optuna_study, out=run_dir / "dashboard.html")
    exports = export_pareto(optuna_study, run_dir / "exports") if export else []
    logger.info("run outputs: %s, %s, %d bundles", front_csv, dashboard, len(exports))
    return RunOutputs(front_csv=front_csv, dashboard=dashboard, exports=exports)
