"""The live dashboard server against hostile clients and faults, on a real server on 127.0.0.1:
many requests compute the study view once per change of the study; headers that never finish,
drip in, or are huge are cut off; a client that goes away mid-answer and a journal that turns
corrupt while served are one log line (and a 503), never a traceback. Every loop is bounded."""

from __future__ import annotations

import http.client
import logging
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import pikenas.results.dashboard._server as server_module
from pikenas.results.dashboard._server import DashboardServer, serve
from pikenas.results.storage import open_study

LOGGER = "pikenas.results.dashboard._server"


@pytest.fixture()
def run(tmp_path: Path, mixed_run: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(mixed_run, copy)
    return copy


@pytest.fixture()
def live(run: Path) -> Iterator[DashboardServer]:
    server = serve(run, port=0, breakdowns=False)
    try:
        yield server
    finally:
        server.shutdown()


def _port(server: DashboardServer) -> int:
    return int(server._httpd.server_address[1])


def _get(port: int, path: str = "/data.json") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = server_module.dashboard_data

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "dashboard_data", counted)
    return calls


def test_parallel_requests_compute_the_view_once_per_change(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch)
    server = serve(run, port=0, breakdowns=False)
    try:
        port = _port(server)
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: _get(port), range(48)))
        assert {status for status, _ in answers} == {200}
        assert len({body for _, body in answers}) == 1
        assert len(calls) == 1  # one computation for 48 requests of an unchanged study
        assert _get(port, "/")[0] == 200 and len(calls) == 1
        open_study(run).set_user_attr("note", "changed")  # the journal changes
        assert _get(port)[0] == 200 and len(calls) == 2
    finally:
        server.shutdown()


def _connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client


def _closed_by_server(client: socket.socket, *, drip: bytes = b"", rounds: int = 40) -> bool:
    """Whether the server closes (or answers) ``client`` within ``rounds`` steps of 0.1 s
    while it sends ``drip`` one byte a step (bounded: at most ~4 s + 10 s)."""
    client.settimeout(0.1)
    for index in range(rounds):
        if drip:
            try:
                client.sendall(drip[index % len(drip) : index % len(drip) + 1])
            except OSError:
                return True
        try:
            if client.recv(4096) is not None:
                return True  # b"": closed; bytes: an answer (431 / 408)
        except TimeoutError:
            continue
        except OSError:
            return True
    client.settimeout(10)
    try:
        client.recv(4096)
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


@pytest.fixture()
def short_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "HEADER_DEADLINE_S", 1.0, raising=False)
    monkeypatch.setattr(server_module, "CLIENT_TIMEOUT_S", 0.5, raising=False)


def test_headers_that_never_finish_are_cut_off(
    short_limits: None, live: DashboardServer
) -> None:
    client = _connect(_port(live))
    try:
        client.sendall(b"GET /data.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then nothing
        assert _closed_by_server(client, rounds=1)
    finally:
        client.close()


def test_headers_that_drip_in_are_cut_off(short_limits: None, live: DashboardServer) -> None:
    client = _connect(_port(live))
    try:
        client.sendall(b"GET /data.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _closed_by_server(client, drip=b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    finally:
        client.close()


def test_huge_headers_are_refused(live: DashboardServer) -> None:
    port = _port(live)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", "/data.json", skip_host=True)
        connection.putheader("Host", f"127.0.0.1:{port}")
        for index in range(60):
            connection.putheader(f"X-Filler-{index}", "a" * 1000)
        try:
            connection.endheaders()
            status = connection.getresponse().status
        except (ConnectionError, http.client.RemoteDisconnected):
            status = 431  # cut off while still sending
        assert status == 431
    finally:
        connection.close()
    assert _get(port)[0] == 200  # and it keeps serving


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def _wait_for_log(caplog: pytest.LogCaptureFixture, rounds: int = 100) -> None:
    for _ in range(rounds):
        if _records(caplog):
            return
        time.sleep(0.05)


def test_a_client_that_goes_away_is_one_line_without_traceback(
    run: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = server_module.dashboard_data

    def slow(*args: Any, **kwargs: Any) -> dict[str, Any]:
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "dashboard_data", slow)
    server = serve(run, port=0, breakdowns=False)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    try:
        port = _port(server)
        client = _connect(port)
        client.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert entered.wait(10)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: the browser aborted the download
        release.set()
        _wait_for_log(caplog)
        assert _get(port)[0] == 200  # still serving
    finally:
        release.set()
        server.shutdown()
    records = _records(caplog)
    assert records and all(r.exc_info is None for r in records)
    assert any("went away" in r.getMessage() for r in records)
    assert "Traceback" not in capfd.readouterr().err


def test_a_journal_corrupted_while_served_is_a_503_and_one_line(
    run: Path, live: DashboardServer, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    port = _port(live)
    assert _get(port)[0] == 200
    last = (run / "study.log").read_bytes().splitlines(keepends=True)[-1]
    with (run / "study.log").open("ab") as journal:  # a broken record, then a whole one
        journal.write(b'{"op_code": 5, "trial_id"\n' + last)
    for path in ("/data.json", "/"):
        status, body = _get(port, path)
        assert status == 503
        assert b"line" in body and len(body.decode().strip().splitlines()) == 1
    records = _records(caplog)
    assert records and all(r.exc_info is None for r in records)
    assert all("\n" not in r.getMessage() for r in records)
    assert "Traceback" not in capfd.readouterr().err
