"""Serving the UI: the address, the token, uvicorn on a socket bound here (so port 0 works and the real port is
known before the first request)."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable

from maker.errors import UserError
from maker.ui._app import UiSettings, create_app

__all__ = ["serve", "is_loopback", "bind"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), or a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot serve on {host}:{port} ({exc.strerror}); choose another --port or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    store: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    actions: bool = False,
    token: str | None = None,
    poll_s: float = 1.0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the UI over ``store`` until interrupted. Off loopback a token is required: one is made when none is
    given, and the address printed carries it. ``on_ready`` is told the address to open."""
    import uvicorn

    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(18)
    app = create_app(UiSettings(store=store, actions=actions, token=token, poll_s=poll_s))
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(address)
    server.run(sockets=[sock])
