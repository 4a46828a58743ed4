"""The live dashboard: the page of :mod:`results.dashboard`, served by a
:class:`ThreadingHTTPServer` in a thread, re-reading the study on every ``data.json`` request.

It binds 127.0.0.1 unless told otherwise. It answers only requests whose ``Host`` header names
the address it serves (``localhost`` and the bound address; bound to a network address also the
machine's names and any IP literal): a web page on another site that rebinds its DNS name to
127.0.0.1 (DNS rebinding) sends its own name, and gets 403 instead of the study's data.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import optuna

from pikenas.results.dashboard.build import dashboard_data, render_html
from pikenas.results.storage import display_name, open_study
from pikenas.space._text import redact
from pikenas.space.errors import PikeNASError, RunDirError

__all__ = ["DashboardServer", "allowed_hosts", "host_allowed", "is_loopback", "serve"]

logger = logging.getLogger(__name__)

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
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if not host_allowed(self.headers.get("Host"), host):
                    self._send(403, "text/plain; charset=utf-8", "host not allowed\n")
                    return
                try:
                    if path in ("/", "/index.html"):
                        body = render_html(server.data(), live=True, refresh_s=refresh_s)
                        self._send(200, "text/html; charset=utf-8", body)
                    elif path == "/data.json":
                        body = json.dumps(server.data(), allow_nan=False)
                        self._send(200, "application/json", body)
                    else:
                        self._send(404, "text/plain; charset=utf-8", "not found\n")
                except Exception as exc:  # keep serving; the page shows the error
                    logger.exception("dashboard request %s failed", path)
                    self._send(500, "text/plain; charset=utf-8", f"error: {redact(str(exc))}\n")

            def _send(self, status: int, content_type: str, body: str) -> None:
                payload = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                logger.debug("dashboard: " + format, *args)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Server", (ThreadingHTTPServer,), {"address_family": family})
        self._httpd = server_class((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def data(self) -> dict[str, Any]:
        """Fresh dashboard data (re-reads the study)."""
        with self._lock:
            return dashboard_data(self._study, **self._options)

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
