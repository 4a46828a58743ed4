"""Plotly renderers of the data in :mod:`results.figure_data` (thin: no computation here).

Plotly renders hover texts, labels and titles as a subset of HTML, so every user string
(architecture names, zoo names, study names) is passed through :func:`_text`: ``&``, ``<``
and ``>`` escaped, quotes kept (plotly does not decode ``&quot;``: it would show literally).
The Pareto scatter's trial points carry ``meta="trials"`` (one point per completed trial,
split into a search trace and a zoo-baseline trace) so that pages and tests can count them.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pikenas.results.figure_data import MIN_TAU_POINTS

__all__ = [
    "ACE_AXIS",
    "BASELINES_META",
    "axis_switch",
    "STOPPED_META",
    "TRIALS_META",
    "pareto_figure",
    "rungs_figure",
    "hypervolume_figure",
    "bits_heatmap_figure",
    "ace_breakdown_figure",
    "proxy_final_figure",
]

TRIALS_META = "trials"


def _text(value: str) -> str:
    """A user string as plotly's HTML subset shows it literally."""
    return html.escape(value, quote=False)


#: ``meta`` of the Pareto scatter's trace of trials stopped at a rung of successive halving
STOPPED_META = "stopped"
#: ``meta`` of the trace of zoo baselines that did not complete (stopped, over budget, ...)
BASELINES_META = "baselines"
#: the cost axis of the default cost table (a study names its own: ``ACE v2: <table> (<unit>)``)
ACE_AXIS = "ACE v2: ace_v2 (bit-ops)"


def _hover(points: pd.DataFrame) -> list[str]:
    texts = []
    for row in points.itertuples(index=False):
        split = (
            f"MAC {row.mac_cost:,.0f} + elementwise {row.elementwise_cost:,.0f}"
            if math.isfinite(row.mac_cost)
            else "split unknown"
        )
        name = f"<b>{_text(row.baseline)}</b><br>" if row.baseline else ""
        texts.append(
            f"{name}trial #{row.number} ({_text(row.status)})<br>"
            f"accuracy {100 * row.accuracy:.2f}%<br>"
            f"ACE v2 {row.ace_v2:,.0f} = {split}<br>"
            f"ACE v1 {row.ace_v1:,.0f}<br>"
            f"archid {_text(row.archid)}<br>"
            f"bits w/a {_text(row.layer_bits)}<br>"
            f"{_text(row.summary)}"
        )
    return texts


def pareto_figure(
    data: dict[str, Any], title: str = "Pareto front", axis: str = ACE_AXIS
) -> go.Figure:
    """Scatter of every completed trial (accuracy vs ACE v2), the front as a step line, zoo
    baselines labelled, costed zoo models as dashed vertical lines.
    """
    points: pd.DataFrame = data["points"]
    figure = go.Figure()
    for is_baseline, name, marker in (
        (False, "trials", {"size": 8, "color": "#1f77b4", "opacity": 0.7}),
        (True, "zoo baselines", {"size": 12, "color": "#d62728", "symbol": "diamond"}),
    ):
        part = points[(points["baseline"] != "") == is_baseline]
        marker = dict(marker)
        if not is_baseline:
            width = np.where(part["on_front"].to_numpy(bool), 2.0, 0.0)
            marker["line"] = {"width": width, "color": "black"}
        figure.add_trace(
            go.Scatter(
                # plain lists: pages and tests count the points from the JSON
                x=part["ace_v2"].tolist(),
                y=part["accuracy"].tolist(),
                customdata=part["number"].tolist(),
                mode="markers+text" if is_baseline else "markers",
                text=[_text(n) for n in part["baseline"]] if is_baseline else None,
                textposition="top center",
                hovertext=_hover(part),
                hoverinfo="text",
                name=name,
                marker=marker,
                meta=TRIALS_META,
            )
        )
    stopped: pd.DataFrame = data.get("stopped", pd.DataFrame())
    if len(stopped):
        figure.add_trace(
            go.Scatter(
                x=stopped["ace_v2"].tolist(),
                y=stopped["accuracy"].tolist(),
                customdata=stopped["number"].tolist(),
                mode="markers",
                hovertext=[
                    f"trial #{row.number} stopped after {row.epochs} epochs<br>"
                    f"accuracy then {100 * row.accuracy:.2f}%<br>ACE v2 {row.ace_v2:,.0f}<br>"
                    f"{html.escape(row.reason)}"
                    for row in stopped.itertuples(index=False)
                ],
                hoverinfo="text",
                name="stopped at a rung (accuracy there)",
                marker={"size": 6, "color": "#999", "symbol": "circle-open"},
                meta=STOPPED_META,
            )
        )
    baselines: pd.DataFrame = data.get("baselines", pd.DataFrame())
    if len(baselines):
        # Baselines that did not complete: named, at their last rung's accuracy (or on the
        # axis floor when they have none), never anonymous.
        floor = float(points["accuracy"].min()) if len(points) else 0.0
        accuracy = baselines["accuracy"].to_numpy(float)
        figure.add_trace(
            go.Scatter(
                x=baselines["ace_v2"].tolist(),
                y=np.where(np.isfinite(accuracy), accuracy, floor).tolist(),
                customdata=baselines["number"].tolist(),
                mode="markers+text",
                text=[_text(name) for name in baselines["name"]],
                textposition="bottom center",
                hovertext=[
                    f"<b>{_text(row.name)}</b> (zoo baseline, trial #{row.number})<br>"
                    f"{_text(row.state)}<br>"
                    + (
                        f"accuracy then {100 * row.accuracy:.2f}%<br>"
                        if math.isfinite(row.accuracy)
                        else "no accuracy<br>"
                    )
                    + f"ACE v2 {row.ace_v2:,.0f}"
                    for row in baselines.itertuples(index=False)
                ],
                hoverinfo="text",
                name="zoo baselines that did not complete",
                marker={"size": 12, "color": "#d62728", "symbol": "diamond-open"},
                meta=BASELINES_META,
            )
        )
    front: pd.DataFrame = data["front"]
    figure.add_trace(
        go.Scatter(
            x=front["ace_v2"].tolist(),
            y=front["accuracy"].tolist(),
            mode="lines",
            line={"shape": "hv", "color": "black", "width": 1.5},
            name="Pareto front",
            hoverinfo="skip",
        )
    )
    for row in data["zoo"].itertuples(index=False):
        figure.add_vline(
            x=row.ace_v2,
            line={"dash": "dash", "color": "#888", "width": 1},
            annotation_text=_text(row.name),
            annotation_textangle=-90,
        )
    figure.update_layout(
        title=_text(title),
        # SI labels (200k, 5M): plotly's default log labels within a decade read "2, 3, ..."
        xaxis={
            "title": _text(axis),
            "type": "log" if data["log_x"] else "linear",
            "tickformat": "~s",
        },
        yaxis={"title": "proxy accuracy", "tickformat": ".0%"},
        hovermode="closest",
        legend={"orientation": "h", "y": -0.2},
        updatemenus=[axis_switch("log" if data["log_x"] else "linear")],
    )
    return figure


def axis_switch(active: str) -> dict[str, Any]:
    """Plotly buttons switching the x axis between log and linear (``active`` first shown)."""
    return {
        "type": "buttons",
        "direction": "right",
        "x": 1.0,
        "xanchor": "right",
        "y": 1.12,
        "yanchor": "bottom",
        "showactive": True,
        "active": 0 if active == "log" else 1,
        "buttons": [
            {"label": "log ACE", "method": "relayout", "args": [{"xaxis.type": "log"}]},
            {"label": "linear ACE", "method": "relayout", "args": [{"xaxis.type": "linear"}]},
        ],
    }


_OUTCOME_STYLE = {
    "complete": ("reached the top rung", "#1f77b4"),
    "stopped": ("stopped at a rung", "#aaaaaa"),
    "running": ("running", "#2ca02c"),
    "failed": ("failed", "#d62728"),
}


def rungs_figure(data: dict[str, Any], title: str = "Successive halving: rungs") -> go.Figure:
    """Validation accuracy at each rung, one line per trial, coloured by what became of it."""
    table: pd.DataFrame = data["rungs"]
    figure = go.Figure()
    for outcome, (label, color) in _OUTCOME_STYLE.items():
        part = table[table["outcome"] == outcome]
        if part.empty:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        numbers: list[int | None] = []
        for number, rows in part.groupby("number", sort=True):
            xs += rows["epochs"].tolist() + [None]
            ys += rows["accuracy"].tolist() + [None]
            numbers += [int(number)] * len(rows) + [None]
        count = data["counts"].get(outcome, 0)
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                customdata=numbers,
                mode="lines+markers",
                line={"color": color, "width": 1},
                marker={"size": 5, "color": color},
                name=f"{label} ({count})",
                hovertemplate="trial %{customdata}<br>%{x} epochs: %{y:.2%}<extra></extra>",
            )
        )
    if table.empty:
        title += " (this study trains every candidate for the whole proxy budget)"
    figure.update_layout(
        title=html.escape(title),
        xaxis={"title": "epochs (rung)", "type": "log"},
        yaxis={"title": "validation accuracy at the rung", "tickformat": ".0%"},
    )
    return figure


def hypervolume_figure(data: dict[str, Any], title: str = "Hypervolume over trials") -> go.Figure:
    """Normalized hypervolume after each completed trial (reference point in the title)."""
    history: pd.DataFrame = data["history"]
    ref_acc, ref_ace = data["reference"]
    figure = go.Figure(
        go.Scatter(
            x=history["number"].to_numpy(int),
            y=history["normalized"].to_numpy(float),
            mode="lines+markers",
            line={"shape": "hv"},
            customdata=np.stack(
                [history["hypervolume"].to_numpy(float), history["front_size"].to_numpy(float)],
                axis=-1,
            ).reshape(-1, 2),
            hovertemplate="trial %{x}<br>normalized %{y:.4f}<br>hypervolume %{customdata[0]:.4g}"
            "<br>front size %{customdata[1]}<extra></extra>",
            name="hypervolume",
        )
    )
    figure.update_layout(
        title=f"{_text(title)} (reference: accuracy {ref_acc:g}, ACE v2 {ref_ace:,.0f})",
        xaxis={"title": "trial number"},
        yaxis={"title": "hypervolume / reference box", "rangemode": "tozero"},
    )
    return figure


def _nan_to_none(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in matrix]


def bits_heatmap_figure(
    data: dict[str, Any], title: str = "Per-layer bit-widths of the front"
) -> go.Figure:
    """Heat map of weight bits (colour) per front trial and layer; cells show ``w/a``."""
    figure = go.Figure(
        go.Heatmap(
            z=_nan_to_none(data["weight_bits"]),
            x=list(data["layers"]),
            y=list(data["row_labels"]),
            text=data["text"],
            texttemplate="%{text}",
            customdata=_nan_to_none(data["activation_bits"]),
            hovertemplate="%{y}<br>%{x}: weight %{z} bits, activation %{customdata} bits"
            "<extra></extra>",
            colorscale="Viridis",
            colorbar={"title": "weight bits"},
            hoverongaps=False,
        )
    )
    figure.update_layout(
        title=_text(title),
        xaxis={"title": "layer (w/a bits)"},
        yaxis={"title": "front trial (cheapest first)", "type": "category"},
    )
    return figure


def ace_breakdown_figure(
    table: pd.DataFrame, title: str = "ACE v2 per layer", axis: str = ACE_AXIS
) -> go.Figure:
    """Stacked bars per layer: MAC cost vs elementwise cost (ACE v2 bit-ops)."""
    layers = [_text(str(name)) for name in table["layer"]]
    figure = go.Figure(
        [
            go.Bar(x=layers, y=table["mac_cost"].tolist(), name="MACs"),
            go.Bar(x=layers, y=table["elementwise_cost"].tolist(), name="elementwise"),
        ]
    )
    figure.update_layout(
        title=_text(title),
        barmode="stack",
        xaxis={"title": "layer"},
        yaxis={"title": _text(axis)},
    )
    return figure


def proxy_final_figure(data: dict[str, Any], title: str = "Proxy vs final accuracy") -> go.Figure:
    """Final accuracy against proxy accuracy of fully trained trials; Kendall tau in the title."""
    points: pd.DataFrame = data["points"]
    tau = data["tau"]
    tau_text = (
        f"Kendall tau = {tau:.3f}"
        if not math.isnan(tau)
        else f"Kendall tau shown from {MIN_TAU_POINTS} trained trials on; {len(points)} so far"
    )
    low, high = data.get("range", [0.0, 1.0])
    figure = go.Figure(
        go.Scatter(
            x=points["accuracy"].tolist(),
            y=points["final_accuracy"].tolist(),
            customdata=points["number"].tolist(),
            mode="markers",
            marker={"size": 9},
            hovertemplate="trial %{customdata}<br>proxy %{x:.2%}<br>final %{y:.2%}<extra></extra>",
            name="trained trials",
        )
    )
    figure.add_trace(  # y = x: above it, full training did better than the proxy said
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            line={"dash": "dot", "color": "#999", "width": 1},
            name="final = proxy",
            hoverinfo="skip",
        )
    )
    figure.update_layout(
        title=f"{_text(title)} ({tau_text})",
        xaxis={"title": "proxy accuracy", "tickformat": ".1%", "range": [low, high]},
        yaxis={"title": "final accuracy", "tickformat": ".1%", "range": [low, high]},
    )
    return figure
