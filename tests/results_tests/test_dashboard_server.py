"""The live dashboard server: only the bound host names are answered (DNS rebinding gets 403),
a bind to every interface is warned about, bind failures get the fix that fits them."""

from __future__ import annotations

import http.client
import logging
import socket

import pytest

from pikenas.results.dashboard._server import host_allowed, serve
from pikenas.space.errors import RunDirError


@pytest.mark.parametrize(
    ("header", "bind", "allowed"),
    [
        ("127.0.0.1:8050", "127.0.0.1", True),
        ("localhost:8050", "127.0.0.1", True),
        ("[::1]:8050", "127.0.0.1", True),
        ("attacker.example:8050", "127.0.0.1", False),  # a rebound DNS name
        ("attacker.example", "0.0.0.0", False),
        ("10.1.2.3:8050", "0.0.0.0", True),  # an address literal cannot be rebound
        ("10.1.2.3:8050", "127.0.0.1", False),
        (f"{socket.gethostname()}:8050", "0.0.0.0", True),
        (None, "127.0.0.1", False),
        ("", "127.0.0.1", False),
    ],
)
def test_host_header_check(header: str | None, bind: str, allowed: bool) -> None:
    assert host_allowed(header, bind) is allowed


def _get(port: int, host_header: str | None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": host_header} if host_header is not None else {}
    connection.putrequest("GET", "/data.json", skip_host=True)
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_a_rebinding_page_gets_403(mixed_run) -> None:
    server = serve(mixed_run, host="127.0.0.1", port=0, breakdowns=False)
    try:
        port = server._httpd.server_address[1]
        assert _get(port, f"127.0.0.1:{port}") == 200
        assert _get(port, "evil.example") == 403
        assert _get(port, None) == 403
    finally:
        server.shutdown()


def test_every_interface_is_warned_about(mixed_run, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        server = serve(mixed_run, host="0.0.0.0", port=0, breakdowns=False)
    server.shutdown()
    assert "every machine that reaches it may read the study" in caplog.text


def test_bind_failures_say_what_to_fix(mixed_run) -> None:
    with pytest.raises(RunDirError, match="is not an address of this machine"):
        serve(mixed_run, host="no-such-host.invalid", port=0)
    with pytest.raises(RunDirError, match="is not an address of this machine"):
        serve(mixed_run, host="10.254.254.254", port=0)
    first = serve(mixed_run, port=0, breakdowns=False)
    try:
        with pytest.raises(RunDirError, match="in use; choose another --port"):
            serve(mixed_run, port=first._httpd.server_address[1])
    finally:
        first.shutdown()


def test_chart_labels_are_escaped_once(tmp_path) -> None:
    from pikenas.results.dashboard import dashboard_data
    from tests.results_tests._studies import Point, make_run

    study = make_run(tmp_path / "run", [Point(0.5, 100.0, attrs={"baseline": 'my "net" <b>'})])
    traces = dashboard_data(study, breakdowns=False)["figures"]["pareto"]["data"]
    labels = [text for trace in traces for text in (trace.get("text") or [])]
    assert 'my "net" &lt;b&gt;' in labels  # plotly shows &quot; literally: quotes stay
    assert not any("&quot;" in label or "&amp;lt;" in label for label in labels)
