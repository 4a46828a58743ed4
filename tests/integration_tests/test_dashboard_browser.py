"""The dashboard in a real headless Chromium (the Debian package): the offline file and the
live page load without console errors and plot one point per completed trial."""

from __future__ import annotations

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


def test_offline_file(browser, tmp_path):
    study = make_run(tmp_path / "run", MIXED, study_name=EVIL)
    study.set_user_attr("dataset", EVIL)
    path = write_dashboard(tmp_path / "run")
    page, problems = open_page(browser, path.as_uri())
    completed = sum(1 for p in MIXED if p.state == "COMPLETE")
    assert page.evaluate(COUNT_POINTS) == completed == 6
    assert page.title() == f"pikenas: {EVIL}"  # shown as text, never run
    assert page.locator("#front tbody tr").count() == 4
    assert page.evaluate("document.getElementById('breakdown').data.length") == 2
    assert problems == []
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
