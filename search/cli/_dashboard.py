"""`pikenas dashboard`."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from pikenas.search.cli._app import app, echo, fail


@app.command()
def dashboard(
    run: Annotated[str, typer.Argument(help="Run folder (holds study.log) or storage URL.")],
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: the only one).")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="HTML file to write (default: RUN/dashboard.html)."),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve a live page instead of writing a file.")
    ] = False,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port for --serve.")] = 8050,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address for --serve (127.0.0.1: this machine only; 0.0.0.0 serves every "
            "network, with no password: a warning says so).",
        ),
    ] = "127.0.0.1",
    refresh: Annotated[
        float,
        typer.Option("--refresh", min=0.5, max=86400, help="Seconds between live page updates."),
    ] = 5.0,
    zoo: Annotated[
        list[str] | None,
        typer.Option(
            "--zoo",
            help="Zoo model to draw as an ACE v2 reference line (repeatable; see 'pikenas "
            "zoo'); a baseline of the study is drawn once, with the study's ACE v2.",
        ),
    ] = None,
    breakdowns: Annotated[
        bool,
        typer.Option(
            "--breakdowns/--no-breakdowns", help="Count ACE v2 per layer for the front trials."
        ),
    ] = True,
) -> None:
    """Write an offline HTML dashboard of a run, or serve a live one with --serve.

    The file is self-contained (plotly.js inline): the baseline verdicts; the Pareto scatter
    (log ACE v2 axis, switchable) with every zoo baseline named; the front table (one row per
    architecture); the ACE v2 of a front member by operation kind beside a baseline's and per
    block; hypervolume over wall-clock and CPU time; proxy vs final accuracy; per-layer
    bit-widths of the front; parameter importance per objective; the workers' timeline; the
    rungs of successive halving. The live page re-reads the study every --refresh seconds,
    so new trials appear while a search runs; stop it with Ctrl-C.
    """
    from pikenas.results.dashboard import write_dashboard, zoo_reference_costs
    from pikenas.results.dashboard._server import serve as start_server
    from pikenas.results.storage import open_study
    from pikenas.results.trials import study_cost_table, trials_frame

    if serve and out is not None:
        raise fail("--out writes a file and --serve serves a page; pass only one of them")
    zoo_ace = None
    if zoo:
        opened = open_study(run, study)
        zoo_ace = zoo_reference_costs(list(zoo), trials_frame(opened), study_cost_table(opened))
    if not serve:
        path = write_dashboard(run, study, out, zoo_ace=zoo_ace, breakdowns=breakdowns)
        echo(f"dashboard written to {path}")
        return
    server = start_server(
        run, study, host=host, port=port, refresh_s=refresh, zoo_ace=zoo_ace, breakdowns=breakdowns
    )
    echo(f"serving the live dashboard on {server.url} (Ctrl-C stops it)")
    try:
        while True:  # short naps: a Ctrl-C that the kernel delivers to a server thread only
            time.sleep(0.25)  # runs its Python handler once the main thread wakes up
    finally:  # Ctrl-C: the CLI prints its one line and exits with 130
        server.shutdown()
