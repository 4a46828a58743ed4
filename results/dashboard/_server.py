"""The live dashboard: the page of :mod:`results.dashboard`, served by a
:class:`ThreadingHTTPServer` in a thread, re-reading the study on every ``data.json`` request.

It binds 127.0.0.1 unless told otherwise. It answers only requests whose ``Host`` header names
the address it serves (``localhost`` and the bound address; bound to a network address also the
machine's names and any IP literal): a web page on another site that rebinds its DNS name to
127.0.0.1 (DNS rebinding) sends its own name, and gets 403 instead of the study's data.

Hostile or broken clients cost it little: the study view (data and page) is computed once per
change of the study and shared by every request until the next change (a journal's size and
modification time; an RDB study is re-read at most every :data:`RDB_TTL_S` seconds); a request
line and headers must arrive within :data:`HEADER_DEADLINE_S` seconds and
:data:`HEADER_MAX_BYTES` bytes (else the connection is closed, or answered 431), every socket
operation times out after :data:`CLIENT_TIMEOUT_S`; a client that goes away mid-answer, a journal
that turns corrupt while served, or any other failure of one request is one log line and (where
the client still listens) a 503 / 500 answer, never a traceback.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import optuna

from pikenas.results.dashboard.build import dashboard_data, render_html
from pikenas.results.storage import display_name, open_study
from pikenas.space._text import printable
from pikenas.space.errors import PikeNASError, RunDirError

__all__ = [
    "CLIENT_TIMEOUT_S",
    "HEADER_DEADLINE_S",
    "HEADER_MAX_BYTES",
    "RDB_TTL_S",
    "DashboardServer",
    "allowed_hosts",
    "host_allowed",
    "is_loopback",
    "serve",
]

logger = logging.getLogger(__name__)

#: seconds one socket read or write of a client may take
CLIENT_TIMEOUT_S = 5.0
#: seconds the request line and all headers may take to arrive, in all
HEADER_DEADLINE_S = 10.0
#: bytes of the request line and headers together
HEADER_MAX_BYTES = 16 * 1024
#: seconds a study view read from an RDB server (no file to watch) is served before a re-read
RDB_TTL_S = 2.0

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) reaches this machine only."""
    if host.lower() in _LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str) -> set[str]:
    """The host names a request may name when the server is bound to ``bind_host``."""
    names = {*_LOOPBACK_NAMES, bind_host.lower()}
    if not is_loopback(bind_host):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names


def _header_host(header: str) -> str:
    """The host part of a ``Host`` header (``name:port``, ``[v6]:port``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(header: str | None, bind_host: str) -> bool:
    """Whether a request with this ``Host`` header may be answered (see the module docstring)."""
    if not header:
        return False
    host = _header_host(header)
    if host in allowed_hosts(bind_host):
        return True
    if is_loopback(bind_host):
        return False
    try:  # bound to the network: a literal address cannot be a rebound DNS name
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _HeadersTooLargeError(Exception):
    """The request line and headers exceed :data:`HEADER_MAX_BYTES`."""


class _HeaderReader:
    """The ``rfile`` of one request: lines read straight from the socket, at most
    :data:`HEADER_MAX_BYTES` bytes in all, the last by :data:`HEADER_DEADLINE_S` seconds after
    the connection opened (a client that drips one byte at a time is cut off too)."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = b""
        self._read = 0
        self._deadline = time.monotonic() + HEADER_DEADLINE_S

    def readline(self, limit: int = -1) -> bytes:
        while b"\n" not in self._buffer and (limit < 0 or len(self._buffer) < limit):
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("request headers did not arrive in time")
            self._connection.settimeout(min(remaining, CLIENT_TIMEOUT_S))
            try:
                chunk = self._connection.recv(4096)
            finally:
                self._connection.settimeout(CLIENT_TIMEOUT_S)
            if not chunk:
                break
            self._read += len(chunk)
            if self._read > HEADER_MAX_BYTES:
                raise _HeadersTooLargeError
            self._buffer += chunk
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if limit >= 0:
            end = min(end, limit)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def read(self, size: int = -1) -> bytes:  # a GET has no body; nothing more is read
        data, self._buffer = self._buffer[: max(size, 0)], self._buffer[max(size, 0) :]
        return data

    def close(self) -> None:
        self._buffer = b""


def _journal_path(study: optuna.Study) -> str | None:
    """The journal file of a study on a journal storage (None: an RDB)."""
    backend = getattr(study._storage, "_backend", None)
    path = getattr(backend, "_file_path", None)
    return path if isinstance(path, str) else None


def _one_line(exc: BaseException) -> str:
    return " ".join(printable(str(exc) or type(exc).__name__).split())


class DashboardServer:
    """A live dashboard served from a background thread; :meth:`shutdown` stops it."""

    def __init__(
        self,
        study: optuna.Study,
        *,
        host: str = "127.0.0.1",
        port: int = 8050,
        refresh_s: float = 5.0,
        zoo_ace: dict[str, float] | None = None,
        breakdowns: bool = True,
        run_label: str = "",
    ) -> None:
        self._study = study
        self._options = {"zoo_ace": zoo_ace, "breakdowns": breakdowns, "run_label": run_label}
        self._refresh_s = refresh_s
        self._lock = threading.Lock()  # one data computation at a time
        self._journal = _journal_path(study)
        #: the study view: (version, data, {"json" | "html": body}); see :meth:`_view`
        self._cached: tuple[object, dict[str, Any], dict[str, str]] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = CLIENT_TIMEOUT_S  # every socket operation of a client

            def setup(self) -> None:
                super().setup()
                self.rfile.close()
                self.rfile = _HeaderReader(self.connection)  # type: ignore[assignment]

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except _HeadersTooLargeError:
                    self.close_connection = True
                    self._answer(431, f"request headers over {HEADER_MAX_BYTES} bytes\n")
                except (ConnectionError, TimeoutError) as exc:
                    self.close_connection = True
                    logger.debug("dashboard: client %s went away: %s", self.client_address, exc)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if not host_allowed(self.headers.get("Host"), host):
                    self._answer(403, "host not allowed\n")
                    return
                if path == "/data.json":
                    kind, content_type = "json", "application/json"
                elif path in ("/", "/index.html"):
                    kind, content_type = "html", "text/html; charset=utf-8"
                else:
                    self._answer(404, "not found\n")
                    return
                try:
                    body = server.body(kind)
                except PikeNASError as exc:  # the study cannot be read now (a corrupt journal)
                    logger.error("dashboard: cannot read the study: %s", _one_line(exc))
                    self._answer(503, f"error: {_one_line(exc)}\n")
                    return
                except Exception as exc:  # noqa: BLE001 - one request's bug; keep serving
                    logger.error("dashboard: %s failed: %s: %s", printable(path),
                                 type(exc).__name__, _one_line(exc))
                    logger.debug("dashboard: %s failed", printable(path), exc_info=True)
                    self._answer(500, f"error: {type(exc).__name__}: {_one_line(exc)}\n")
                    return
                self._answer(200, body, content_type)

            def _answer(
                self, status: int, body: str, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                """Send one answer; a client that went away is one debug line."""
                payload = body.encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Cache-Control", "no-store")
                    self.send_header("X-Content-Type-Options", "nosniff")
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                except (ConnectionError, TimeoutError) as exc:
                    self.close_connection = True
                    logger.debug("dashboard: client %s went away: %s", self.client_address, exc)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                logger.debug("dashboard: " + format, *args)

        def handle_error(_self: Any, request: Any, client_address: Any) -> None:
            """What escaped a request handler: one line, no traceback on stderr."""
            import sys

            exc = sys.exc_info()[1]
            log = logger.debug if isinstance(exc, (ConnectionError, TimeoutError)) else logger.error
            log("dashboard: request from %s failed: %s: %s", client_address,
                type(exc).__name__, _one_line(exc) if exc is not None else "")

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type(
            "_Server",
            (ThreadingHTTPServer,),
            {"address_family": family, "handle_error": handle_error},
        )
        self._httpd = server_class((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def _version(self) -> object:
        """What changes when the study does: the journal's (size, modification time, inode);
        an RDB study: the current :data:`RDB_TTL_S` time slot."""
        if self._journal is None:
            return ("rdb", int(time.monotonic() // RDB_TTL_S))
        status = os.stat(self._journal)
        return (status.st_size, status.st_mtime_ns, status.st_ino)

    def _view(self) -> tuple[object, dict[str, Any], dict[str, str]]:
        """The cached study view, recomputed (under the lock, once) when the study changed."""
        try:
            version = self._version()
        except OSError as exc:
            raise RunDirError(f"cannot read the study's journal: {exc.strerror or exc}") from None
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached
        with self._lock:
            cached = self._cached
            if cached is None or cached[0] != version:
                data = dashboard_data(self._study, **self._options)
                cached = self._cached = (version, data, {})
        return cached

    def data(self) -> dict[str, Any]:
        """The dashboard data of the study as it is now (computed once per change)."""
        return self._view()[1]

    def body(self, kind: str) -> str:
        """The ``json`` (``data.json``) or ``html`` (the page) answer of the current view."""
        _, data, bodies = self._view()
        if kind not in bodies:
            with self._lock:
                if kind not in bodies:
                    bodies[kind] = (
                        json.dumps(data, allow_nan=False)
                        if kind == "json"
                        else render_html(data, live=True, refresh_s=self._refresh_s)
                    )
        return bodies[kind]

    def start(self) -> DashboardServer:
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _bind_error(exc: OSError, host: str, port: int) -> PikeNASError:
    """One line with the fix that fits why ``host:port`` could not be bound."""
    where = f"cannot serve on {host}:{port}"
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return RunDirError(
            f"{where}: --host {host!r} is not an address of this machine ({exc.strerror or exc}); "
            "use 127.0.0.1 (this machine only) or one of its network addresses"
        )
    if exc.errno == errno.EADDRINUSE:
        return RunDirError(f"{where}: the port is in use; choose another --port (0: any free one)")
    if exc.errno == errno.EACCES:
        return RunDirError(
            f"{where}: ports below 1024 need administrator rights; choose --port 1024 or more"
        )
    return RunDirError(f"{where}: {exc.strerror or exc}; check --host and --port")


def serve(
    run: str | Path | optuna.Study,
    study: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8050,
    refresh_s: float = 5.0,
    zoo_ace: dict[str, float] | None = None,
    breakdowns: bool = True,
) -> DashboardServer:
    """Start a live dashboard of ``run`` on ``http://host:port/`` (port 0: any free port) in a
    background thread and return it (``.url``, ``.shutdown()``); a host that is not loopback
    is logged as a warning (every machine that reaches it may read the study)."""
    optuna_study = run if isinstance(run, optuna.Study) else open_study(run, study)
    label = "" if isinstance(run, optuna.Study) else display_name(run)
    host = host.strip().strip("[]")
    try:
        server = DashboardServer(
            optuna_study,
            host=host,
            port=port,
            refresh_s=refresh_s,
            zoo_ace=zoo_ace,
            breakdowns=breakdowns,
            run_label=label,
        )
    except OSError as exc:
        raise _bind_error(exc, host, port) from None
    except (OverflowError, UnicodeError, ValueError) as exc:
        raise RunDirError(f"cannot serve on {host}:{port}: {exc}; check --host") from None
    if not is_loopback(host):
        logger.warning(
            "the dashboard listens on %s: every machine that reaches it may read the study "
            "(there is no password); use --host 127.0.0.1 to keep it on this machine",
            host,
        )
    return server.start()
