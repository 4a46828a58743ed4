"""The dashboard in a real headless Chromium (the Debian package): the offline file and the
live page load without console errors and plot one point per completed trial; the decision
panels (baselines named, log/linear switch, op-kind breakdown beside a baseline, importance,
timeline) are drawn. Full-page screenshots are kept as artifacts under the test's tmp folder
(``PIKENAS_SCREENSHOTS=DIR`` copies them to DIR as well)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pikenas.results.dashboard import serve, write_dashboard
from tests.results_tests._studies import MIXED, Point, make_run, record

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "</script><script>alert('x')</script><img src=x onerror=alert(1)>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
    ),
]

COUNT_POINTS = """
() => {
  const plot = document.getElementById('pareto');
  if (!plot || !plot.data) return -1;
  return plot.data.filter(t => t.meta === 'trials').reduce((n, t) => n + (t.x || []).length, 0);
}
"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def open_page(browser, url: str):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(url)
    page.wait_for_function(f"({COUNT_POINTS})() >= 0", timeout=30_000)
    return page, problems


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """A full-page PNG of ``page`` kept as a test artifact; returns its path."""
    path = tmp_path / "screenshots" / f"{name}.png"
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("PIKENAS_SCREENSHOTS"):
        target = Path(os.environ["PIKENAS_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    return path


def test_offline_file(browser, tmp_path):
    study = make_run(tmp_path / "run", MIXED, study_name=EVIL)
    study.set_user_attr("dataset", EVIL)
    path = write_dashboard(tmp_path / "run")
    page, problems = open_page(browser, path.as_uri())
    completed = sum(1 for p in MIXED if p.state == "COMPLETE")
    assert page.evaluate(COUNT_POINTS) == completed == 6
    assert page.title() == f"pikenas: {EVIL}"  # shown as text, never run
    assert page.locator("#front tbody tr").count() == 3  # one row per architecture
    assert page.evaluate("document.getElementById('breakdown').data.length") == 2
    assert problems == []
    screenshot(page, tmp_path, "offline")
    page.close()


def test_decision_panels(browser, tmp_path):
    """Baselines (also one stopped at a rung) drawn and named, the ACE axis log and switchable,
    the op-kind breakdown of the selected member beside its baseline, importance, timeline."""
    baseline_rungs = [{"epochs": 1, "val_accuracy": 0.3, "val_loss": 2.0, "decision": "stopped"}]
    points = (
        [Point(0.92, 1_000.0, channels=8 + i, bits=((4, 4), (2, 2))) for i in range(3)]
        + [
            Point(0.80 + i / 100, 200.0 * (i + 1), channels=16 + i, bits=((2, 2), (2, 4)))
            for i in range(6)
        ]
        + [
            Point(0.95, 40_000.0, attrs={"baseline": "tiny-w8a8"}, bits=((8, 8), (8, 8))),
            Point(
                0.0,
                30_000.0,
                state="PRUNED",
                bits=((4, 4), (4, 4)),
                attrs={"baseline": "tiny-w4a4", "status": "stopped", "rungs": baseline_rungs},
            ),
        ]
    )
    make_run(tmp_path / "run", points)
    page, problems = open_page(browser, write_dashboard(tmp_path / "run").as_uri())
    named = page.evaluate(
        "() => document.getElementById('pareto').data.filter(t => t.text)"
        ".map(t => Array.from(t.text)).flat()"
    )
    assert sorted(named) == ["tiny-w4a4", "tiny-w8a8"]
    axis = "() => document.getElementById('pareto').layout.xaxis.type"
    assert page.evaluate(axis) == "log"
    page.locator("#pareto .updatemenu-button", has_text="linear ACE").click()
    page.wait_for_function(f"({axis})() === 'linear'", timeout=10_000)
    models = page.evaluate("() => document.getElementById('breakdown_ops').data[0].x")
    # the most accurate baseline that trial beats (tiny-w8a8 is more accurate than any member)
    assert models[0].startswith("trial #") and models[1].startswith("tiny-w4a4 (baseline #")
    assert page.evaluate("() => document.getElementById('importance').data.length") == 2
    assert page.evaluate("() => document.getElementById('timeline').data.length") >= 2
    assert (
        "no searched architecture reaches tiny-w8a8's 95.0 % yet"
        in page.locator("#verdicts").inner_text()
    )
    assert page.locator("#bits-legend").inner_text().startswith("bits: weight/input-activation")
    assert problems == []
    screenshot(page, tmp_path, "decision_panels")
    page.close()


def test_live_page_shows_new_trials(browser, tmp_path):
    study = make_run(tmp_path / "run", MIXED[:4])
    server = serve(tmp_path / "run", port=0, refresh_s=0.5, breakdowns=False)
    try:
        page, problems = open_page(browser, server.url)
        assert page.evaluate(COUNT_POINTS) == 4
        record(study, Point(0.99, 50.0))
        record(study, Point(0.2, 60.0, state="PRUNED"))
        page.wait_for_function(f"({COUNT_POINTS})() === 5", timeout=20_000)
        assert "6 trials" in page.locator("#summary").inner_text()
        assert problems == []
        page.close()
    finally:
        server.shutdown()


def test_stopped_trials_are_drawn_apart_in_the_page(browser, tmp_path):
    """A successive-halving run: the page plots the stopped trials in their own trace (grey,
    open) at their rung accuracy, and the rung plot has one line per trial."""
    from tests.results_tests.test_rungs import POINTS

    make_run(tmp_path / "run", POINTS)
    page, problems = open_page(browser, write_dashboard(tmp_path / "run").as_uri())
    stopped = page.evaluate(
        "() => document.getElementById('pareto').data.filter(t => t.meta === 'stopped')"
        ".map(t => [t.x.length, t.marker.symbol])"
    )
    assert page.evaluate(COUNT_POINTS) == 1
    assert stopped == [[2, "circle-open"]]
    lines = page.evaluate("() => document.getElementById('rungs').data.length")
    assert lines == 2  # reached the top rung / stopped at a rung
    assert problems == []
    page.close()


def test_optuna_dashboard_shows_the_stored_figures(browser, tmp_path):
    """optuna-dashboard's own page (its React app, served by its WSGI app) of a study where
    pikenas stored its views: the Pareto plot with baselines, the bit-width map and the op-kind
    breakdown are drawn as plotly graphs; its screenshot is kept beside ours to compare."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    from pikenas.results.optuna_views import store_dashboard_views

    study = make_run(tmp_path / "run", MIXED)
    store_dashboard_views(study)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(study._storage), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{server.server_port}/dashboard/studies/{study._study_id}")
        for title in ("Proxy accuracy vs ACE v2", "Per-layer bit-widths of the front"):
            page.locator(".gtitle", has_text=title).first.wait_for(timeout=30_000)
        page.locator(".gtitle", has_text="ACE v2 by operation kind").first.wait_for()
        screenshot(page, tmp_path, "optuna_dashboard")
        page.close()
    finally:
        server.shutdown()
        server.server_close()
