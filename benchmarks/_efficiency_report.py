"""The summary of ``search_efficiency.py``'s runs: hypervolume over CPU time, the table, the
plot (see that script's docstring for the definitions)."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import numpy as np

FRACTIONS = (0.5, 0.9, 0.95)
CHANCE = 0.1


def _hv_curve(events: list, top: int, reference: tuple[float, float]) -> list[tuple[float, float]]:
    """``(cpu_s, hypervolume)`` after every top-fidelity result of one run."""
    from pikenas.results.pareto import hypervolume

    accuracy: list[float] = []
    log_ace: list[float] = []
    curve = []
    for cpu, _archid, epochs, acc, ace in sorted(events):
        if epochs != top:
            continue
        accuracy.append(acc)
        log_ace.append(math.log10(ace))
        curve.append((cpu, hypervolume(accuracy, log_ace, reference)))
    return curve


def _at(curve: list[tuple[float, float]], cpu: float) -> float:
    value = 0.0
    for time, volume in curve:
        if time > cpu:
            break
        value = volume
    return value


def _reach(curve: list[tuple[float, float]], target: float) -> float:
    return next((time for time, volume in curve if volume >= target), math.inf)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt(value: float) -> str:
    return "never" if math.isinf(value) else ("-" if math.isnan(value) else f"{value:,.0f}")


def report(out: Path) -> dict:
    from pikenas.results.ranking import kendall_tau

    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*-[0-9]*.json"))]
    if not runs:
        raise SystemExit(f"no runs in {out}")
    worst = max(event[4] for run in runs for event in run["events"])
    reference = (CHANCE, math.log10(1.1 * worst))
    for run in runs:
        run["curve"] = _hv_curve(run["events"], run["top"], reference)
        run["final"] = run["curve"][-1][1] if run["curve"] else 0.0
    best = max(runs, key=lambda run: run["final"])
    ref_hv = best["final"]
    budget = min(run["budget"] for run in runs)
    methods = list(dict.fromkeys(run["method"] for run in runs))
    rows = []
    for method in methods:
        mine = [run for run in runs if run["method"] == method]
        reach = {f: [_reach(r["curve"], f * ref_hv) for r in mine] for f in FRACTIONS}
        rows.append(
            {
                "method": method,
                "seeds": [r["seed"] for r in mine],
                "reach": {str(f): [None if math.isinf(v) else v for v in reach[f]] for f in reach},
                "median_reach": {str(f): _median(reach[f]) for f in reach},
                "hv_half": _median([_at(r["curve"], budget / 2) / ref_hv for r in mine]),
                "hv_budget": _median([_at(r["curve"], budget) / ref_hv for r in mine]),
                "candidates": _median([len({e[1] for e in r["events"]}) for r in mine]),
                "top_trials": _median([len(r["curve"]) for r in mine]),
            }
        )
    kendall = None
    path = out / "kendall.json"
    if path.is_file():
        data = json.loads(path.read_text())
        final = [row["final"] for row in data["rows"]]
        kendall = {
            "architectures": len(final),
            "tau": {
                str(e): kendall_tau([row["rungs"][i] for row in data["rows"]], final)
                for i, e in enumerate(data["rungs"])
            },  # fmt: skip
        }
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    summary = {
        "reference_point": reference,
        "reference_hv": ref_hv,
        "reference_run": f"{best['method']} seed {best['seed']}",
        "cpu_budget": budget,
        "methods": rows,
        "kendall": kendall,
        "meta": meta,
    }
    (out / "efficiency.json").write_text(json.dumps(summary, indent=1, default=float))
    _print(summary)
    _plot(runs, methods, ref_hv, out)
    return summary


def _print(summary: dict) -> None:
    ref = summary["reference_point"]
    print(
        f"reference hypervolume {summary['reference_hv']:.4f} (best final front: "
        f"{summary['reference_run']}); hypervolume in (accuracy, log10 ACE v2) from "
        f"({ref[0]}, {ref[1]:.3f}); CPU budget {summary['cpu_budget']:.0f} s a run"
    )
    budget = summary["cpu_budget"]
    print(
        "\n| method | seeds | CPU s to 50 % | to 90 % | to 95 % | HV at "
        f"{budget / 2:.0f} s | HV at {budget:.0f} s | candidates | top-fidelity results |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in summary["methods"]:
        reach = [row["median_reach"][str(f)] for f in FRACTIONS]
        per_seed = " / ".join(
            "never" if v is None else f"{v:.0f}" for v in row["reach"][str(FRACTIONS[-1])]
        )
        print(
            f"| {row['method']} | {len(row['seeds'])} | {_fmt(reach[0])} | {_fmt(reach[1])} | "
            f"{_fmt(reach[2])} ({per_seed}) | {100 * row['hv_half']:.1f} % | "
            f"{100 * row['hv_budget']:.1f} % | {row['candidates']:.0f} | {row['top_trials']:.0f} |"
        )
    if summary["kendall"]:
        taus = ", ".join(f"{e} epochs {t:.3f}" for e, t in summary["kendall"]["tau"].items())
        print(
            f"\nKendall tau, rung accuracy vs fully trained test accuracy "
            f"({summary['kendall']['architectures']} architectures): {taus}"
        )
    meta = summary["meta"]
    if meta:
        print(
            f"load average before {meta['load_before'][0]:.2f}, after {meta['load_after'][0]:.2f};"
            f" wall {meta['wall_s'] / 60:.1f} min"
        )


def _plot(runs: list[dict], methods: list[str], ref_hv: float, out: Path) -> None:
    import plotly.graph_objects as go

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    budget = max(run["budget"] for run in runs)
    grid = np.linspace(0, budget, 200)
    figure = go.Figure()
    for index, method in enumerate(methods):
        color = colors[index % len(colors)]
        curves = [run["curve"] for run in runs if run["method"] == method]
        values = np.array([[_at(curve, t) / ref_hv for t in grid] for curve in curves])
        for row in values:
            line = {"color": color, "width": 0.6}
            figure.add_trace(
                go.Scatter(x=grid, y=row, mode="lines", showlegend=False, line=line, opacity=0.35)
            )
        figure.add_trace(
            go.Scatter(
                x=grid,
                y=np.median(values, axis=0),
                mode="lines",
                name=f"{method} (median)",
                line={"color": color, "width": 2.5},
            )  # fmt: skip
        )
    figure.add_hline(y=0.95, line={"dash": "dot", "color": "#555"}, annotation_text="95 %")
    figure.update_layout(
        title="Hypervolume over CPU time (digits, one thread a run)",
        xaxis={"title": "CPU seconds"},
        yaxis={"title": "hypervolume / reference", "range": [0, 1.02]},
        width=900,
        height=520,
    )
    figure.write_html(out / "hypervolume.html", include_plotlyjs="cdn")
    os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    try:
        figure.write_image(out / "hypervolume.png")
    except Exception as exc:  # noqa: BLE001 - kaleido or its browser missing: say so, keep the rest
        print(f"no PNG ({type(exc).__name__}: {exc}); install the bench extra and chromium")
