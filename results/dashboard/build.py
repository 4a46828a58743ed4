"""The results dashboard: one self-contained offline HTML file, or a live local server.

The page holds plotly.js inline and its data as JSON in a ``<script type="application/json">``
element (``<``, ``>`` and ``&`` escaped as ``\\u003c`` ..., so no user string can close the
element); the page script draws the figures and builds the front table with ``textContent``.
Strings that plotly renders as HTML (hover texts, titles) are escaped in
:mod:`results.figures`; the page title and header are escaped with :func:`html.escape`.

Live mode (``serve`` in :mod:`pikenas.results.dashboard._server`): the same
page fetches ``data.json`` every ``refresh_s`` seconds and redraws, so new trials appear while
a search runs. It binds to 127.0.0.1 by default and answers only its own host names.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from pikenas.evaluators._atomic import atomic_write
from pikenas.results.figure_data import (
    ace_breakdown_data,
    bits_heatmap_data,
    pareto_scatter_data,
    proxy_final_data,
    rungs_data,
)
from pikenas.results.figures import (
    ace_breakdown_figure,
    bits_heatmap_figure,
    pareto_figure,
    proxy_final_figure,
    rungs_figure,
)
from pikenas.results.front import (
    BITS_LEGEND,
    baseline_verdicts,
    front_records,
    front_table,
    verdict_line,
)
from pikenas.results.insight_data import (
    hypervolume_reference,
    hypervolume_time_data,
    importance_data,
    op_breakdown_data,
    timeline_data,
)
from pikenas.results.insight_figures import (
    hypervolume_time_figure,
    importance_figure,
    op_breakdown_figure,
    timeline_figure,
)
from pikenas.results.storage import display_name, open_study
from pikenas.results.trials import study_cost_table, study_info, trials_frame
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import PikeNASError, RunDirError

__all__ = [
    "DASHBOARD_NAME",
    "MAX_BREAKDOWNS",
    "dashboard_data",
    "zoo_reference_costs",
    "render_html",
    "write_dashboard",
]

logger = logging.getLogger(__name__)

DASHBOARD_NAME = "dashboard.html"
#: ACE breakdowns are computed for at most this many front trials (the most accurate ones).
MAX_BREAKDOWNS = 40
_FRONT_FIELDS = ("number", "accuracy", "final_accuracy", "ace_v2", "ace_v1", "archid")


def _figure_json(figure: Any) -> dict[str, Any]:
    return json.loads(figure.to_json())


@functools.lru_cache(maxsize=512)
def _breakdown_table(arch_json: str, cost_table_json: str) -> tuple[pd.DataFrame, float]:
    """Per-layer ACE v2 split and total of one architecture under a cost table (cached: the
    live page redraws)."""
    from pikenas.evaluators.cost import CostTable, count_ace

    table = CostTable.from_dict(json.loads(cost_table_json))
    report = count_ace(ArchConfig.from_json(arch_json), cost_table=table)
    return ace_breakdown_data(report), float(report.ace_v2)


@functools.lru_cache(maxsize=512)
def _report_dict(arch_json: str, cost_table_json: str) -> dict[str, Any]:
    """The ACE report (``to_dict()``) of one architecture under a cost table (cached)."""
    from pikenas.evaluators.cost import CostTable, count_ace

    table = CostTable.from_dict(json.loads(cost_table_json))
    return count_ace(ArchConfig.from_json(arch_json), cost_table=table).to_dict()


def _compared_baseline(
    row: Any, baselines: pd.DataFrame, verdicts: pd.DataFrame
) -> pd.Series | None:
    """The baseline shown beside a front member: the one whose verdict names it, else the most
    accurate baseline it beats, else the cheapest baseline (None without baselines)."""
    if baselines.empty:
        return None
    named = verdicts[verdicts["member_number"] == row.number]
    if len(named):
        return baselines[baselines["number"] == named["baseline_number"].iloc[0]].iloc[0]
    beaten = baselines[baselines["_accuracy"] <= row.accuracy]
    if len(beaten):
        return beaten.sort_values("_accuracy").iloc[-1]
    return baselines.sort_values("ace_v2").iloc[0]


def _breakdowns(
    frame: pd.DataFrame, front: pd.DataFrame, cost_table: Any, axis: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Per front member (the :data:`MAX_BREAKDOWNS` most accurate): the per-block MAC /
    elementwise figure, the by-op-kind figure beside a baseline's, and errors."""
    figures: dict[str, Any] = {}
    by_op: dict[str, Any] = {}
    problems: dict[str, str] = {}
    table_json = json.dumps(cost_table.to_dict())
    names = frame["baseline"].fillna("").astype(str)
    baselines = frame[(names != "") & (frame["arch"] != "")]
    baselines = baselines.assign(
        _accuracy=baselines["accuracy"].where(
            baselines["accuracy"].notna(), baselines["rung_accuracy"]
        )
    ).drop_duplicates("baseline")
    verdicts = baseline_verdicts(frame)
    chosen = front.sort_values(["accuracy", "number"], ascending=[False, True])
    for row in chosen.head(MAX_BREAKDOWNS).itertuples(index=False):
        if not row.arch:
            continue
        try:
            table, total = _breakdown_table(row.arch, table_json)
            title = (
                f"ACE v2 per block of trial #{row.number}: MACs vs elementwise (total {total:,.0f})"
            )
            figure = ace_breakdown_figure(table, title=title, axis=axis)
            figures[str(row.number)] = _figure_json(figure)
            reports = {f"trial #{row.number}": _report_dict(row.arch, table_json)}
            other = _compared_baseline(row, baselines, verdicts)
            if other is not None and other["number"] != row.number:
                label = f"{other['baseline']} (baseline #{int(other['number'])})"
                reports[label] = _report_dict(other["arch"], table_json)
            ops = op_breakdown_data(reports)
            by_op[str(row.number)] = _figure_json(
                op_breakdown_figure(
                    ops, title="ACE v2 by operation kind, beside a zoo baseline", axis=axis
                )
            )
        except PikeNASError as exc:  # shown on the page instead of the figure
            logger.warning("trial %d: no ACE breakdown: %s", row.number, exc)
            problems[str(row.number)] = str(exc)
    return figures, by_op, problems


def zoo_reference_costs(
    names: list[str], frame: pd.DataFrame, cost_table: Any = None
) -> dict[str, float]:
    """ACE v2 (under ``cost_table``, default: the default table) of zoo models at the geometry
    (input channels, resolution, classes) of the study's trials, for the dashed reference lines
    of the Pareto plot. An unknown name or a model that cannot take that geometry raises a
    one-line :class:`PikeNASError`.
    """
    from pikenas.evaluators.cost import count_ace
    from pikenas.space.zoo.catalog import get_zoo_arch

    if not names:
        return {}
    archs = [text for text in frame["arch"] if isinstance(text, str) and text]
    if not archs:
        raise RunDirError("the study has no trial with an architecture yet; drop --zoo for now")
    like = ArchConfig.from_json(archs[0])
    return {
        name: float(
            count_ace(
                get_zoo_arch(
                    name,
                    resolution=like.resolution,
                    input_channels=like.input_channels,
                    num_classes=like.num_classes,
                ),
                cost_table=cost_table,
            ).ace_v2
        )
        for name in names
    }


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def dashboard_data(
    study: optuna.Study,
    *,
    zoo_ace: dict[str, float] | None = None,
    breakdowns: bool = True,
    run_label: str = "",
) -> dict[str, Any]:
    """Everything the page shows, JSON-able: ``title``, ``summary`` (counts, dataset, sampler,
    hypervolume; trials stopped at a rung of successive halving count as ``STOPPED``; one
    verdict line per zoo baseline; the bits legend), ``figures`` (plotly JSON of ``pareto``,
    ``rungs``, ``hypervolume`` (over wall-clock / CPU time), ``bits``, ``proxy_final``,
    ``importance`` (per objective), ``timeline`` (workers)), ``breakdowns`` (trial number ->
    per-block figure; front architectures only, see :data:`MAX_BREAKDOWNS`),
    ``breakdown_ops`` (trial number -> ACE v2 by op kind beside a baseline's),
    ``breakdown_errors`` and ``front`` (one record per architecture).
    """
    frame = trials_frame(study)
    info = study_info(study)
    axis = f"ACE v2: {info['cost_label']}"
    title = f"pikenas: {study.study_name}"
    pareto = pareto_scatter_data(frame, zoo_ace)
    history = hypervolume_time_data(frame)  # in completion order; the last value is the same
    reference = hypervolume_reference(frame)
    table = front_table(frame)
    front = frame[frame["number"].isin(table["number"])]
    breakdown_figures, breakdown_ops, breakdown_errors = (
        _breakdowns(frame, front, study_cost_table(study), axis) if breakdowns else ({}, {}, {})
    )
    states = frame["state"].where(frame["status"] != "stopped", "STOPPED")
    counts = states.value_counts().to_dict()
    summary = {
        "study": info["study"],
        "run": run_label,
        "dataset": info["dataset"],
        "sampler": info["sampler"],
        "cost_table": info["cost_table"],
        "trials": int(len(frame)),
        "states": {str(k): int(v) for k, v in counts.items()},
        "front_size": int(len(table)),  # architectures, as in the front table
        "hypervolume": _clean(float(history["normalized"].iloc[-1])) if len(history) else None,
        "reference": list(reference),
        "updated": datetime.now().isoformat(timespec="seconds"),
        "cost_unit": info["cost_unit"] or "bit-ops",
        "verdicts": [verdict_line(v) for _, v in baseline_verdicts(frame).iterrows()],
        "bits_legend": BITS_LEGEND,
    }
    records = []
    for row in front_records(table=table):
        record = {key: _clean(row[key]) for key in _FRONT_FIELDS}
        record.update(
            bits=row["layer_bits"],
            baseline=row["baseline"],
            matches=row["matches"],
            same_archid=row["same_archid"],
        )
        records.append(record)
    return {
        "title": title,
        "summary": summary,
        "figures": {
            "pareto": _figure_json(
                pareto_figure(pareto, title="Proxy accuracy vs ACE v2", axis=axis)
            ),
            "rungs": _figure_json(rungs_figure(rungs_data(frame))),
            "hypervolume": _figure_json(hypervolume_time_figure(history, reference)),
            "bits": _figure_json(bits_heatmap_figure(bits_heatmap_data(frame))),
            "proxy_final": _figure_json(proxy_final_figure(proxy_final_data(frame))),
            "importance": _figure_json(importance_figure(importance_data(study))),
            "timeline": _figure_json(timeline_figure(timeline_data(frame))),
        },
        "breakdowns": breakdown_figures,
        "breakdown_ops": breakdown_ops,
        "breakdown_errors": breakdown_errors,
        "front": records,
    }


def _script_json(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element: no ``<``, ``>`` or ``&`` characters remain."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def render_html(data: dict[str, Any], *, live: bool = False, refresh_s: float = 5.0) -> str:
    """The page for ``data`` (from :func:`dashboard_data`). ``live``: poll ``data.json``."""
    from pikenas.results.dashboard._page import PAGE_CSS, PAGE_SCRIPT

    title = html.escape(data["title"])
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{title}</title><style>{PAGE_CSS}</style>"
        f"<script>{_plotly_js()}</script></head>\n<body>"
        f"<header><h1 id='title'>{title}</h1><p id='summary'></p><p id='status'></p>"
        "<ul id='verdicts'></ul></header>"
        "<main><div id='pareto' class='plot wide'></div>"
        "<section><h2>Pareto front (one row per architecture)</h2>"
        "<table id='front'><thead></thead><tbody></tbody></table>"
        "<p id='bits-legend' class='note'></p></section>"
        "<section><label>ACE v2 breakdown of front trial "
        "<select id='breakdown-trial'></select></label><p id='breakdown-note'></p>"
        "<div class='row'><div id='breakdown_ops' class='plot'></div>"
        "<div id='breakdown' class='plot'></div></div></section>"
        "<div class='row'><div id='hypervolume' class='plot'></div>"
        "<div id='proxy_final' class='plot'></div></div>"
        "<div id='bits' class='plot wide'></div>"
        "<div class='row'><div id='importance' class='plot'></div>"
        "<div id='timeline' class='plot'></div></div>"
        "<div id='rungs' class='plot wide'></div>"
        "</main>\n"
        f"<script id='pikenas-data' type='application/json'>{_script_json(data)}</script>\n"
        f"<script>const PIKENAS_LIVE = {json.dumps(bool(live))}; "
        f"const PIKENAS_REFRESH_MS = {int(refresh_s * 1000)};\n{PAGE_SCRIPT}</script>"
        "</body></html>\n"
    )


def write_dashboard(
    run: str | Path | optuna.Study,
    study: str | None = None,
    out: str | Path | None = None,
    *,
    zoo_ace: dict[str, float] | None = None,
    breakdowns: bool = True,
) -> Path:
    """Write the offline dashboard of ``run`` to ``out`` (default ``RUN/dashboard.html``)
    atomically and return its path. A storage URL or study object needs ``out``.
    """
    optuna_study = run if isinstance(run, optuna.Study) else open_study(run, study)
    if out is None:
        if isinstance(run, optuna.Study) or not Path(run).is_dir():
            raise RunDirError(f"{run!r} is not a run folder; pass --out FILE for the dashboard")
        out = Path(run) / DASHBOARD_NAME
    label = "" if isinstance(run, optuna.Study) else display_name(run)
    data = dashboard_data(optuna_study, zoo_ace=zoo_ace, breakdowns=breakdowns, run_label=label)
    path = atomic_write(Path(out), render_html(data))
    logger.info("dashboard written to %s", path)
    return path
