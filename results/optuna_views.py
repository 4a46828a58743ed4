"""pikenas's key figures and a summary note stored in the study itself, through
optuna-dashboard's public API (``optuna_dashboard.save_plotly_graph_object`` and
``save_note``), so that a user who lives in ``optuna-dashboard`` sees them beside Optuna's own
views (they appear in the study's page; figures under fixed ids, so storing again replaces
them).

Stored: the Pareto plot with the zoo baselines named (:data:`PARETO_ID`), the bit-width map of
the front (:data:`BITS_ID`), the ACE v2 by operation kind of the most accurate searched front
architecture beside a baseline's (:data:`BREAKDOWN_ID`), and a Markdown note: the front as a
table (one row per architecture), the baseline verdicts, the bits legend.

Rung results as learning curves: optuna-dashboard draws them from ``trial.report``, which
Optuna refuses in multi-objective studies (``NotImplementedError``; RFC optuna#3450), so the
rungs stay in the ``rungs`` user attribute (and the pikenas dashboard's rung plot).
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
import plotly.graph_objects as go

__all__ = ["BITS_ID", "BREAKDOWN_ID", "PARETO_ID", "store_dashboard_views", "summary_note"]

logger = logging.getLogger(__name__)

PARETO_ID = "pikenas-pareto"
BITS_ID = "pikenas-bits"
BREAKDOWN_ID = "pikenas-breakdown"


def summary_note(data: dict[str, Any]) -> str:
    """The Markdown note of a study from its dashboard data (:func:`dashboard_data`)."""
    summary = data["summary"]
    unit = summary.get("cost_unit") or "bit-ops"
    lines = [
        f"# {data['title']}",
        "",
        f"{summary['trials']} trials, front of {summary['front_size']} architectures; "
        f"data set {summary['dataset'] or '?'}, sampler {summary['sampler'] or '?'}, "
        f"cost table {summary['cost_table'] or 'ace_v2'} ({unit}).",
        "",
    ]
    for verdict in summary["verdicts"]:
        lines.append(f"- {verdict}")
    lines += [
        "",
        f"| trial | proxy acc. | final acc. | ACE v2 ({unit}) | bits | baseline | matches |",
        "|---:|---:|---:|---:|---|---|---|",
    ]

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f} %"

    for row in data["front"]:
        ace = "-" if row["ace_v2"] is None else f"{row['ace_v2']:,.0f}"
        lines.append(
            f"| {row['number']} | {percent(row['accuracy'])} | {percent(row['final_accuracy'])} "
            f"| {ace} | `{row['bits'] or ''}` | {row['baseline'] or ''} | {row['matches'] or ''} |"
        )
    lines += [
        "",
        summary["bits_legend"],
        "",
        "Rung results (successive halving) are in each trial's `rungs` user attribute: Optuna "
        "refuses `trial.report` in multi-objective studies, so there are no learning curves "
        "here. `pikenas dashboard RUN` draws them.",
    ]
    return "\n".join(lines)


def store_dashboard_views(
    study: optuna.Study, zoo_ace: dict[str, float] | None = None
) -> list[str]:
    """Store the figures and the note in ``study``; returns the figure ids stored."""
    import optuna_dashboard

    from pikenas.results.dashboard import dashboard_data

    data = dashboard_data(study, zoo_ace=zoo_ace)
    figures = {PARETO_ID: data["figures"]["pareto"], BITS_ID: data["figures"]["bits"]}
    searched = [row for row in data["front"] if not row["baseline"]]
    chosen = searched[-1] if searched else (data["front"][-1] if data["front"] else None)
    if chosen is not None and str(chosen["number"]) in data["breakdown_ops"]:
        figures[BREAKDOWN_ID] = data["breakdown_ops"][str(chosen["number"])]
    for graph_id, figure in figures.items():
        optuna_dashboard.save_plotly_graph_object(
            study, go.Figure(figure), graph_object_id=graph_id
        )
    optuna_dashboard.save_note(study, summary_note(data))
    logger.info("optuna-dashboard views stored in study %r: %s", study.study_name, list(figures))
    return list(figures)
