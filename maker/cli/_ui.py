"""``maker ui``: the live web UI over a store."""

from __future__ import annotations

import os

import click

from maker.cli._common import store_option, store_path

__all__ = ["ui"]


@click.command()
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (loopback unless you ask).")
@click.option("--port", type=int, default=8765, show_default=True, help="Port (0: any free one).")
@click.option(
    "--actions/--read-only",
    default=False,
    show_default=True,
    help="Offer stop, resume and fork on the pages (read-only by default).",
)
@click.option(
    "--token-env",
    default="MAKER_UI_TOKEN",
    show_default=True,
    help="Variable holding the token every request must carry; off loopback one is made when it is unset.",
)
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between looks at the store.")
def ui(store: str | None, host: str, port: int, actions: bool, token_env: str, poll: float) -> None:
    """Serve a live web UI over the store: every run, its progress, plots, steps, trees and evaluations, updated
    as runs commit. With --actions, stop, resume and fork runs from the pages. Ctrl-C stops the UI (never a run)."""
    from maker.cli._logging import configure_logging
    from maker.errors import UserError
    from maker.ui import serve

    configure_logging(level="warning")
    if poll <= 0:
        raise UserError(f"--poll must be more than 0 seconds, got {poll}")
    path = store_path(store)
    token = os.environ.get(token_env) or None

    def ready(address: str) -> None:
        mode = "actions enabled" if actions else "read-only"
        click.echo(f"maker ui: {address}  (store {path}; {mode}; Ctrl-C stops the UI, never a run)", err=True)

    try:
        serve(path, host=host, port=port, actions=actions, token=token, poll_s=poll, on_ready=ready)
    except KeyboardInterrupt:
        pass
