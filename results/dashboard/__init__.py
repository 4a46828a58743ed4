"""The results dashboard: a self-contained offline HTML page (:mod:`.build`) and a live local
server (:mod:`._server`)."""

from __future__ import annotations

from pikenas.results.dashboard._server import DashboardServer, serve
from pikenas.results.dashboard.build import (
    dashboard_data,
    render_html,
    write_dashboard,
    zoo_reference_costs,
)

__all__ = [
    "DashboardServer",
    "dashboard_data",
    "render_html",
    "serve",
    "write_dashboard",
    "zoo_reference_costs",
]
