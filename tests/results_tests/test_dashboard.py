from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from pikenas.evaluators._atomic import LEDGER_NAME
from pikenas.results.dashboard import dashboard_data, render_html, serve, write_dashboard
from pikenas.results.storage import open_study
from tests.results_tests._studies import MIXED, Point, make_run, record

EVIL = "</script><script>alert(1)</script><b>x</b>&"


def embedded_data(page: str) -> dict:
    match = re.search(
        r"<script id='pikenas-data' type='application/json'>(.*?)</script>", page, re.S
    )
    assert match is not None
    return json.loads(match.group(1))


def trial_points(data: dict) -> int:
    traces = data["figures"]["pareto"]["data"]
    return sum(len(t.get("x", [])) for t in traces if t.get("meta") == "trials")


def test_offline_file_default_path_and_points(mixed_run, tmp_path):
    out = write_dashboard(mixed_run, out=tmp_path / "d.html", breakdowns=False)
    page = out.read_text()
    assert "Plotly" in page and "<script src=" not in page  # plotly.js inline, nothing fetched
    data = embedded_data(page)
    assert trial_points(data) == 6  # one point per completed trial
    assert [r["number"] for r in data["front"]] == [0, 2, 5]  # one row per architecture
    assert data["summary"]["states"] == {"COMPLETE": 6, "PRUNED": 1, "FAIL": 1, "RUNNING": 1}
    assert "PIKENAS_LIVE = false" in page


def test_default_output_is_run_dashboard_html(tmp_path):
    make_run(tmp_path, MIXED[:2])
    assert write_dashboard(tmp_path, breakdowns=False) == tmp_path / "dashboard.html"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [LEDGER_NAME]


def test_user_strings_cannot_break_out(tmp_path):
    study = make_run(tmp_path, [Point(0.5, 10.0, attrs={"baseline": EVIL})], study_name=EVIL)
    study.set_user_attr("dataset", EVIL)
    page = write_dashboard(tmp_path, breakdowns=False).read_text()
    assert EVIL not in page and "<script>alert" not in page and "<b>x" not in page
    assert "&lt;/script&gt;" in page  # the escaped title
    data = embedded_data(page)
    assert data["summary"]["study"] == EVIL and data["summary"]["dataset"] == EVIL  # round trip


def test_breakdowns_for_front_trials(mixed_run):
    data = dashboard_data(open_study(mixed_run))
    assert set(data["breakdowns"]) == {"0", "2", "5"} and data["breakdown_errors"] == {}
    bars = data["breakdowns"]["5"]["data"]
    assert [t["name"] for t in bars] == ["MACs", "elementwise"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.mark.slow
def test_live_server_shows_new_trials(tmp_path):
    study = make_run(tmp_path, MIXED[:3])
    server = serve(tmp_path, port=0, refresh_s=1.0, breakdowns=False)
    try:
        status, page = get(server.url)
        assert status == 200 and "PIKENAS_LIVE = true" in page
        assert trial_points(embedded_data(page)) == 3
        record(study, Point(0.99, 5.0))
        status, body = get(server.url + "data.json")
        assert status == 200 and trial_points(json.loads(body)) == 4
        assert get(server.url + "nope")[0] == 404
    finally:
        server.shutdown()


def test_render_html_is_deterministic_in_structure(mixed_run):
    data = dashboard_data(open_study(mixed_run), breakdowns=False)
    page = render_html(data, live=True, refresh_s=2.5)
    assert "PIKENAS_REFRESH_MS = 2500" in page and page.count("<html") == 1


def test_zoo_reference_costs_use_the_study_geometry(mixed_run):
    from pikenas.evaluators.cost import count_ace
    from pikenas.results.dashboard import zoo_reference_costs
    from pikenas.results.trials import load
    from pikenas.space.errors import UnknownNameError
    from pikenas.space.zoo.catalog import get_zoo_arch

    frame = load(mixed_run)
    costs = zoo_reference_costs(["tiny-w8a8"], frame)
    expected = count_ace(get_zoo_arch("tiny-w8a8", resolution=8, input_channels=1, num_classes=10))
    assert costs == {"tiny-w8a8": float(expected.ace_v2)}
    with pytest.raises(UnknownNameError):
        zoo_reference_costs(["no-such-model"], frame)


def test_empty_and_all_failed_studies_render(tmp_path):
    make_run(tmp_path / "empty", [])
    make_run(tmp_path / "failed", [Point(state="FAIL"), Point(state="PRUNED")])
    for name in ("empty", "failed"):
        data = embedded_data(write_dashboard(tmp_path / name).read_text())
        assert trial_points(data) == 0 and data["front"] == [] and data["breakdowns"] == {}
        assert data["summary"]["hypervolume"] is None


def _optuna_dashboard_api(study) -> dict:
    """What optuna-dashboard's page reads for ``study`` (its own HTTP API, served for real)."""
    import threading
    import urllib.request
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(study._storage), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/studies/{study._study_id}?after=0"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()


def test_optuna_dashboard_shows_pikenas_figures_and_note(tmp_path):
    from pikenas.results.optuna_views import BITS_ID, BREAKDOWN_ID, PARETO_ID, store_dashboard_views

    study = make_run(tmp_path, MIXED)
    stored = store_dashboard_views(study)
    assert stored == [PARETO_ID, BITS_ID, BREAKDOWN_ID]
    store_dashboard_views(study)  # again: replaced, not added
    api = _optuna_dashboard_api(study)
    graphs = {
        graph["id"]: json.loads(graph["graph_object"]) for graph in api["plotly_graph_objects"]
    }
    assert sorted(graphs) == sorted(stored)
    pareto_names = [trace.get("text") for trace in graphs[PARETO_ID]["data"] if trace.get("text")]
    assert ["mobilenet_v1-0.25-w4a4"] in pareto_names  # the baseline, named
    note = api["note"]["body"]
    assert "no cheaper searched architecture reaches mobilenet_v1-0.25-w4a4's 50.0 %" in note
    assert "| 5 | 90.00 % | 95.00 % | 900 |" in note and "bits: weight/input-activation" in note
    assert "refuses `trial.report` in multi-objective studies" in note


def test_optuna_refuses_trial_report_in_multi_objective_studies():
    """Why rung results are no learning curves in optuna-dashboard (say so if this changes)."""
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    with pytest.raises(NotImplementedError):
        trial.report(0.5, step=1)
