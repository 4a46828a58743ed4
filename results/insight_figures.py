"""Plotly renderers of :mod:`results.insight_data` (thin: no computation here). User strings
go through :func:`results.figures._text` (plotly renders a subset of HTML)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from pikenas.results.figures import _text

__all__ = [
    "hypervolume_time_figure",
    "importance_figure",
    "op_breakdown_figure",
    "timeline_figure",
]

#: bar colours of the timeline per trial outcome.
OUTCOME_COLORS = {
    "complete": "#1f77b4",
    "stopped": "#aaaaaa",
    "over budget": "#ff7f0e",
    "duplicate": "#9467bd",
    "failed": "#d62728",
    "running": "#2ca02c",
}
#: how many parameters the importance chart shows (the most important ones).
TOP_PARAMS = 12


def importance_figure(
    table: pd.DataFrame, title: str = "Parameter importance per objective"
) -> go.Figure:
    """Horizontal bars: importance of each parameter for accuracy and for ACE v2 (the
    :data:`TOP_PARAMS` most important, the most important on top)."""
    shown = table.head(TOP_PARAMS).iloc[::-1]
    figure = go.Figure(
        [
            go.Bar(
                y=shown["param"].tolist(),
                x=shown[column].tolist(),
                name=label,
                orientation="h",
                hovertemplate="%{y}: %{x:.3f}<extra>" + label + "</extra>",
            )
            for column, label in (("accuracy", "accuracy"), ("ace_v2", "ACE v2"))
        ]
    )
    if table.empty:
        title += " (needs 5 COMPLETE trials with searched parameters)"
    figure.update_layout(
        title=_text(title) + "<br><sup>Optuna's importance evaluator (PED-ANOVA by default)</sup>",
        barmode="group",
        xaxis={"title": "importance (share)", "rangemode": "tozero"},
        yaxis={"automargin": True},
        legend={"orientation": "h", "y": -0.15},
    )
    return figure


def timeline_figure(table: pd.DataFrame, title: str = "Workers over time") -> go.Figure:
    """One row per worker, one bar per trial from its start to its end, coloured by outcome."""
    figure = go.Figure()
    for outcome, color in OUTCOME_COLORS.items():
        part = table[table["outcome"] == outcome]
        if part.empty:
            continue
        figure.add_trace(
            go.Bar(
                base=[start.isoformat() for start in pd.to_datetime(part["start"])],
                x=(part["seconds"] * 1000.0).tolist(),  # a date axis counts in milliseconds
                y=[_text(worker) for worker in part["worker"]],
                orientation="h",
                marker={"color": color},
                name=f"{outcome} ({len(part)})",
                customdata=list(
                    zip(part["number"], part["seconds"], part["baseline"], strict=True)
                ),
                hovertemplate="trial %{customdata[0]} %{customdata[2]}<br>"
                "%{customdata[1]:.1f} s<extra>" + outcome + "</extra>",
            )
        )
    figure.update_layout(
        title=_text(title),
        barmode="overlay",
        xaxis={"type": "date", "title": "time"},
        yaxis={"title": "worker (host:pid)", "automargin": True, "type": "category"},
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def hypervolume_time_figure(
    table: pd.DataFrame, reference: tuple[float, float], title: str = "Hypervolume over time"
) -> go.Figure:
    """Normalized hypervolume against wall-clock seconds, with a button for CPU seconds."""
    ref_acc, ref_ace = reference
    figure = go.Figure(
        go.Scatter(
            x=table["wall_s"].tolist(),
            y=table["normalized"].tolist(),
            customdata=list(zip(table["number"], table["cpu_s"], table["wall_s"], strict=True)),
            mode="lines+markers",
            line={"shape": "hv"},
            hovertemplate="after trial %{customdata[0]}<br>normalized %{y:.4f}<br>"
            "wall %{customdata[2]:.0f} s, CPU %{customdata[1]:.0f} s<extra></extra>",
            name="hypervolume",
        )
    )
    switch = {
        "type": "buttons",
        "direction": "right",
        "x": 1.0,
        "xanchor": "right",
        "y": 1.12,
        "yanchor": "bottom",
        "buttons": [
            {
                "label": "wall-clock",
                "method": "update",
                "args": [{"x": [table["wall_s"].tolist()]}, {"xaxis.title.text": "wall-clock s"}],
            },
            {
                "label": "CPU time",
                "method": "update",
                "args": [
                    {"x": [table["cpu_s"].tolist()]},
                    {"xaxis.title.text": "training CPU s (all trials)"},
                ],
            },
        ],
    }
    figure.update_layout(
        title=f"{_text(title)}<br><sup>reference: accuracy {ref_acc:g}, ACE v2 {ref_ace:,.0f}"
        "</sup>",
        xaxis={"title": "wall-clock s", "rangemode": "tozero"},
        yaxis={"title": "hypervolume / reference box", "rangemode": "tozero"},
        updatemenus=[switch],
    )
    return figure


def op_breakdown_figure(
    table: pd.DataFrame, title: str = "ACE v2 by operation kind", axis: str = "ACE v2"
) -> go.Figure:
    """One stacked bar per model (side by side), one segment per operation kind."""
    models = list(dict.fromkeys(table["model"]))
    figure = go.Figure()
    for kind in dict.fromkeys(table.sort_values("cost", ascending=False)["op"]):
        part = table[table["op"] == kind].set_index("model")
        figure.add_trace(
            go.Bar(
                x=[_text(model) for model in models],
                y=[float(part["cost"].get(model, 0.0)) for model in models],
                customdata=[float(part["share"].get(model, 0.0)) for model in models],
                name=_text(kind),
                hovertemplate="%{x}<br>" + _text(kind) + ": %{y:,.0f} (%{customdata:.1%})"
                "<extra></extra>",
            )
        )
    figure.update_layout(
        title=_text(title), barmode="stack", yaxis={"title": _text(axis)}, xaxis={"title": ""}
    )
    return figure
