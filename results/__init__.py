"""pikenas: results — trial tables, the Pareto front, figures, dashboards and export bundles.

``results.load(run)`` gives the trials of a run as a DataFrame; see :mod:`results.trials`,
:mod:`results.pareto`, :mod:`results.front`, :mod:`results.figures`, :mod:`results.dashboard`
and :mod:`results.export`.
"""

from __future__ import annotations

from pikenas.results.trials import load

__all__ = ["load"]
