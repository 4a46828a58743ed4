"""Export bundles: a Pareto member (or a ``pikenas train`` folder) as files that rebuild the
same network (:mod:`.bundle`), with its model card and format checks."""

from __future__ import annotations

from pikenas.results.export.bundle import (
    BundleError,
    export_pareto,
    export_trained,
    export_trial,
    load_bundle,
)

__all__ = ["BundleError", "export_pareto", "export_trained", "export_trial", "load_bundle"]
