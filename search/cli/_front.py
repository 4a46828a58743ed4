"""`pikenas front`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pikenas.search.cli._app import app, echo, fail


@app.command()
def front(
    run: Annotated[str, typer.Argument(help="Run folder (holds study.log) or storage URL.")],
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: the only one).")
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of objects instead of a table.")
    ] = False,
) -> None:
    """Print the accuracy / ACE v2 Pareto front of a run, cheapest first.

    Columns: trial number, proxy accuracy, ACE v2, ACE v1, final accuracy (after full training),
    archid, MACs, parameters, elementwise share of ACE v2, per-layer bits (weight/activation),
    zoo baseline name. The table names ACE v2 by the cost table that scored the study. With
    successive halving only trials that reached the top rung are on the front; a last line
    counts those stopped at each rung (their rung results: results.load, the dashboard).
    """
    from pikenas.results.front import front_records, front_table
    from pikenas.results.storage import open_study
    from pikenas.results.trials import study_info, trials_frame

    if csv and as_json:
        raise fail("--csv and --json exclude each other; pass one of them")
    opened = open_study(run, study)
    frame = trials_frame(opened)
    if as_json:
        echo(json.dumps(front_records(frame), indent=2, allow_nan=False))
        return
    table = front_table(frame)
    if csv:
        echo(table.to_csv(index=False), nl=False)
        return
    echo(_readable(table, study_info(opened)["cost_table"] or "ace_v2"))
    stopped = frame[frame["status"] == "stopped"]
    if len(stopped):
        by_rung = stopped["rung_epochs"].value_counts().sort_index()
        parts = ", ".join(f"{count} after {epochs} epoch(s)" for epochs, count in by_rung.items())
        learn = int(stopped["reason"].fillna("").str.startswith("does not learn").sum())
        echo(
            f"not on the front: {len(stopped)} trials stopped at a rung of successive halving "
            f"({parts}; {learn} of them because they do not learn)"
        )


def _readable(table, cost_name: str) -> str:  # noqa: ANN001 - a pandas DataFrame
    """Fixed-width text table of the front (accuracy in %, ACE with thousands separators; the
    ACE v2 column named after the study's cost table)."""
    if table.empty:
        return "the study has no completed trial yet: the front is empty"
    shown = table.loc[
        :, ["number", "accuracy", "final_accuracy", "ace_v2", "ace_v1", "archid", "layer_bits"]
    ].copy()
    shown["baseline"] = table["baseline"].fillna("")
    shown.columns = ["trial", "accuracy", "final", "ace_v2", "ace_v1", "archid", "bits", "baseline"]

    def percent(value: float) -> str:
        return "-" if value != value else f"{100 * value:.2f}%"

    def count(value: float) -> str:
        return "-" if value != value else f"{value:,.0f}"

    for column, format_value in (
        ("accuracy", percent),
        ("final", percent),
        ("ace_v2", count),
        ("ace_v1", count),
    ):
        shown[column] = [format_value(float(value)) for value in shown[column]]
    return shown.rename(columns={"ace_v2": cost_name}).to_string(index=False)
