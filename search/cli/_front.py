"""`pikenas front`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from pikenas.search.cli._app import app, echo, fail

if TYPE_CHECKING:
    import pandas as pd

#: the columns of the text table: (front-table column, header); ``{cost}`` is the cost label.
TABLE_COLUMNS = (
    ("number", "trial"),
    ("accuracy", "proxy acc"),
    ("final_accuracy", "final acc"),
    ("ace_v2", "{cost}"),
    ("ace_v1", "ACE v1"),
    ("archid", "archid"),
    ("layer_bits", "bits (w/a per layer)"),
    ("baseline", "baseline"),
    ("matches", "matches baseline"),
    ("same_archid", "same arch"),
)


@app.command()
def front(
    run: Annotated[str, typer.Argument(help="Run folder (holds study.log) or storage URL.")],
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: the only one).")
    ] = None,
    csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV (every column) instead of a table.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print a JSON list of objects (every column) instead."),
    ] = False,
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy",
            min=0.0,
            max=1.0,
            help="Show only architectures with at least this proxy accuracy (a fraction: 0.9).",
        ),
    ] = None,
    max_ace: Annotated[
        float | None,
        typer.Option(
            "--max-ace", min=0.0, help="Show only architectures with at most this ACE v2."
        ),
    ] = None,
) -> None:
    """Print the accuracy / ACE v2 Pareto front of a run as a set of architectures, cheapest
    first.

    One row per architecture (archid): of trials with the same architecture the fully trained
    one, then the most accurate. Table columns: trial, proxy accuracy (%), final accuracy
    after full training (%), ACE v2 (named after the study's cost table and unit), ACE v1,
    archid, bits (weight/input-activation bits of each MAC layer, stem first, head last),
    baseline (zoo name of a baseline trial), matches baseline (the baselines whose accuracy
    this row is the cheapest to reach, with the ACE v2 ratio), same arch (other trials of this
    architecture). --csv and --json add MACs, parameters, elementwise share of ACE v2 and
    status. Under the table: one verdict line per zoo baseline and, with successive halving,
    how many trials stopped at a rung (they are not on the front).
    """
    from pikenas.results.front import (
        BITS_LEGEND,
        baseline_verdicts,
        filter_front,
        front_records,
        front_table,
        verdict_line,
    )
    from pikenas.results.storage import open_study
    from pikenas.results.trials import study_info, trials_frame
    from pikenas.space._text import inline

    if csv and as_json:
        raise fail("--csv and --json exclude each other; pass one of them")
    opened = open_study(run, study)
    frame = trials_frame(opened)
    whole = front_table(frame)
    table = filter_front(whole, min_accuracy=min_accuracy, max_ace=max_ace)
    if as_json:
        echo(json.dumps(front_records(table=table), indent=2, allow_nan=False))
        return
    if csv:
        echo(table.to_csv(index=False), nl=False)
        return
    info = study_info(opened)
    unit = inline(info["cost_unit"] or "bit-ops")  # the study's strings: one printable line
    cost = f"ACE v2 [{unit}]"
    if info["cost_table"] and info["cost_table"] != "ace_v2":
        cost = f"{inline(info['cost_table'])} [{unit}]"
    echo(_readable(table, cost, filtered=len(table) < len(whole)))
    if not table.empty:
        echo(BITS_LEGEND)
    for _, verdict in baseline_verdicts(frame).iterrows():
        echo(verdict_line(verdict, unit="ACE v2"))
    stopped = frame[frame["status"] == "stopped"]
    if len(stopped):
        by_rung = stopped["rung_epochs"].value_counts().sort_index()
        parts = ", ".join(f"{count} after {epochs} epoch(s)" for epochs, count in by_rung.items())
        learn = int(stopped["reason"].fillna("").str.startswith("does not learn").sum())
        echo(
            f"not on the front: {len(stopped)} trials stopped at a rung of successive halving "
            f"({parts}; {learn} of them because they do not learn)"
        )


def _readable(table: pd.DataFrame, cost: str, *, filtered: bool) -> str:
    """Fixed-width text table of the front: accuracy in %, ACE with thousands separators."""
    if table.empty:
        if filtered:
            return "no front architecture passes --min-accuracy / --max-ace"
        return "the study has no completed trial yet: the front is empty"
    shown = table.loc[:, [name for name, _ in TABLE_COLUMNS]].copy()

    def percent(value: float) -> str:
        return "-" if value != value else f"{100 * value:.2f}"

    def count(value: float) -> str:
        return "-" if value != value else f"{value:,.0f}"

    for column, format_value in (
        ("accuracy", percent),
        ("final_accuracy", percent),
        ("ace_v2", count),
        ("ace_v1", count),
    ):
        shown[column] = [format_value(float(value)) for value in shown[column]]
    for column in ("baseline", "matches", "same_archid"):
        shown[column] = shown[column].fillna("").astype(str).replace("", "-")
    shown.columns = [header.format(cost=cost) for _, header in TABLE_COLUMNS]
    shown = shown.rename(columns={"proxy acc": "proxy acc %", "final acc": "final acc %"})
    return shown.to_string(index=False)
