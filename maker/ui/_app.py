"""The UI's web app (Starlette): pages over a store, live updates as server-sent events, and the actions.

Pages are rendered on the server by Jinja2 with autoescaping on, so nothing read from the store reaches a page
unescaped; the page's script sets text, never HTML it builds from data. Each worker thread reads the store through
a read-only connection of its own (checked once, when the UI starts): readers never block the run that writes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import jinja2
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from maker.errors import MakerError, RunNotFoundError
from maker.store import Store
from maker.trace import failure_records, step_records, task_tree
from maker.trace.html import num
from maker.ui import _live
from maker.ui._actions import Actions

__all__ = ["UiSettings", "create_app"]

_HERE = Path(__file__).parent
_COOKIE = "maker_ui_token"
_EV_DEFAULTS = {"problem": None, "expected": None, "got": None, "score": None, "scorer": None, "error": None}
_EVAL_PAGE = 200  # problems a page of an evaluation's table


@dataclass(frozen=True, slots=True, kw_only=True)
class UiSettings:
    """How the UI serves a store."""

    store: str
    """The store's path."""
    actions: bool = False
    """Whether stop, resume and fork are offered (read-only without)."""
    token: str | None = None
    """Required of every request when set: ``?token=`` once (kept in a cookie), or ``Authorization: Bearer``."""
    poll_s: float = 1.0
    """How often a live page's server looks at the store for changes."""


def create_app(settings: UiSettings) -> Starlette:
    """The app over ``settings.store`` (checked now: a damaged or foreign file is refused before serving)."""
    with Store.open(settings.store) as st:
        first = st.reader()
    ui = _Ui(settings, first)
    routes = [
        Route("/", ui.runs_page),
        Route("/fragment/runs", ui.runs_fragment),
        Route("/run", ui.run_page),
        Route("/fragment/run", ui.run_fragment),
        Route("/api/series", ui.series),
        Route("/api/runs", ui.runs_json),
        Route("/step", ui.step_page),
        Route("/tree", ui.tree_page),
        Route("/eval", ui.eval_page),
        Route("/events", ui.events),
        Route("/action/{what}", ui.action, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Guard, ui=ui)
    app.state.ui = ui
    return app


class _Ui:
    def __init__(self, settings: UiSettings, first: Store) -> None:
        self.settings = settings
        self.path = settings.store
        self.csrf = secrets.token_urlsafe(24)
        self.actions = Actions(settings.store) if settings.actions else None
        self._checked = first
        self._lock = threading.Lock()
        self._series_cache: dict[str, tuple[tuple[str, float, int], dict[str, Any]]] = {}
        self._local = threading.local()
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=jinja2.ChainableUndefined
        )
        env.filters.update(num=_num, money=_money, pct=_pct, ago=_ago, dur=_dur, jsonish=_jsonish)
        self.templates = Jinja2Templates(env=env)

    # -- reading ---------------------------------------------------------------------------
    def store(self) -> Store:
        st: Store | None = getattr(self._local, "store", None)
        if st is None:  # first use in this thread: a read-only connection of its own (the store was checked once)
            st = self._local.store = self._checked.reader()
        return st

    def render(self, request: Request, template: str, code: int = 200, **ctx: Any) -> Response:
        base = {
            "store": _live.store_facts(self.path),
            "actions": self.actions is not None,
            "csrf": self.csrf,
            "message": request.query_params.get("msg"),
            "error": None,
        }
        return self.templates.TemplateResponse(request, template, {**base, **ctx}, status_code=code)

    # -- pages ------------------------------------------------------------------------------
    def _runs_ctx(self, request: Request) -> dict[str, Any]:
        q = request.query_params.get("q", "")
        status = request.query_params.get("status", "")
        page = _int(request.query_params.get("page"), 1)
        listing = _live.list_runs(self.store(), q=q, status=status, page=page)
        return {"listing": listing, "q": q, "status": status, "query": {"q": q, "status": status}}

    def runs_page(self, request: Request) -> Response:
        return self.render(request, "runs.html", **self._runs_ctx(request))

    def runs_fragment(self, request: Request) -> Response:
        return self.render(request, "_runs_table.html", **self._runs_ctx(request))

    def runs_json(self, request: Request) -> Response:
        st = self.store()
        return JSONResponse([_live.run_row(r).__dict__ | {"children": []} for r in st.run_lines()])

    def _record(self, request: Request, key: str = "id") -> Any:
        run_id = request.query_params.get(key) or ""
        return self.store().run(run_id)

    def _run_ctx(self, request: Request) -> dict[str, Any]:
        st = self.store()
        record = self._record(request)
        row = _live.run_row(record)
        membership = _live.eval_membership(st).get(record.id)
        started = self.actions.started(record.run_id) if self.actions is not None else None
        return {
            "r": record,
            "row": row,
            "stats": record.stats or {},
            "hardest": _live.hardest(st, record),
            "branches": _live.branches(st, record),
            "failures": failure_records(st, record)[-20:],
            "evaluation": membership,
            "has_tree": any(
                row.tag is not None for row in st.steps(record.id, record.first_step, record.first_step + 1)
            ),
            "stop_asked": st.stop_request(record.id),
            "started": started,
            "log_tail": self.actions.log_tail(record.run_id) if started is not None and self.actions else "",
        }

    def run_page(self, request: Request) -> Response:
        try:
            ctx = self._run_ctx(request)
        except RunNotFoundError:
            return self._missing_run(request)
        return self.render(request, "run.html", **ctx)

    def _missing_run(self, request: Request) -> Response:
        run_id = request.query_params.get("id") or ""
        started = self.actions.started(run_id) if self.actions is not None else None
        if started is not None:  # a fork the UI started, not in the store yet (or that failed before it was)
            tail = self.actions.log_tail(run_id) if self.actions is not None else ""
            return self.render(request, "starting.html", run_id=run_id, started=started, log_tail=tail)
        return self.render(request, "error.html", 404, error=f"no run {run_id!r} in this store")

    def run_fragment(self, request: Request) -> Response:
        try:
            return self.render(request, "_run_panel.html", **self._run_ctx(request))
        except RunNotFoundError:
            return PlainTextResponse("no such run", status_code=404)

    def series(self, request: Request) -> Response:
        st = self.store()
        try:
            record = self._record(request)
        except RunNotFoundError:
            return JSONResponse({"error": "no such run"}, status_code=404)
        return JSONResponse(self._series(st, record))

    def _series(self, st: Store, record: Any) -> dict[str, Any]:
        """A run's plots; those read from the steps of a run recorded without points are kept until it changes."""
        if (record.stats or {}).get("points"):
            return _live.series(st, record)
        key = (record.run_id, record.updated, record.steps)
        with self._lock:
            got = self._series_cache.get(record.run_id)
        if got is not None and got[0] == key:
            return got[1]
        out = _live.series(st, record)
        with self._lock:
            self._series_cache[record.run_id] = (key, out)
        return out

    def step_page(self, request: Request) -> Response:
        st = self.store()
        try:
            record = self._record(request, "run")
        except RunNotFoundError:
            return self.render(request, "error.html", 404, error="no such run")
        n = _int(request.query_params.get("n"), -1)
        recs = list(step_records(st, record, n, n + 1, samples=True)) if n >= 0 else []
        failed = failure_records(st, record, n, n + 1) if n >= 0 else []
        if not recs and not failed:
            return self.render(
                request,
                "error.html",
                404,
                error=f"run {record.run_id} has no step {n} (committed: {record.first_step}..{record.steps - 1})",
            )
        return self.render(request, "step.html", r=record, rec=recs[0] if recs else None, failed=failed, n=n)

    def tree_page(self, request: Request) -> Response:
        st = self.store()
        try:
            record = self._record(request, "run")
        except RunNotFoundError:
            return self.render(request, "error.html", 404, error="no such run")
        nodes = task_tree(st, record)
        return self.render(request, "tree.html", r=record, roots=_nest(nodes or []), flat=nodes)

    def eval_page(self, request: Request) -> Response:
        name = request.query_params.get("name") or ""
        st = self.store()
        membership = _live.eval_membership(st)
        rows = []
        for r in st.run_lines():
            ev = membership.get(r.id)
            if ev is not None and ev["name"] == name:
                rows.append((_live.run_row(r), _EV_DEFAULTS | ev))
        if not rows:
            return self.render(request, "error.html", 404, error=f"no evaluation {name!r} in this store")
        rows.sort(key=lambda x: str(x[1].get("problem")))
        scores = [ev.get("score") for _, ev in rows]
        scored = [s for s in scores if s is not None]
        costs = [row.cost for row, _ in rows]
        summary = {
            "problems": len(rows),
            "scored": len(scored),
            "accuracy": sum(scored) / len(rows) if rows else None,
            "correct": sum(s == 1.0 for s in scored),
            "running": sum(row.status == "running" for row, _ in rows),
            "cost": None if None in costs else sum(c for c in costs if c is not None),
            "scorer": next((ev.get("scorer") for _, ev in rows if ev.get("scorer")), None),
        }
        show = request.query_params.get("show", "")
        if show == "wrong":  # every problem not scored right: wrong, failed, not scored yet
            rows = [(row, ev) for row, ev in rows if ev.get("score") != 1.0]
        pages = max(1, -(-len(rows) // _EVAL_PAGE))
        page = min(max(1, _int(request.query_params.get("page"), 1)), pages)
        shown = rows[(page - 1) * _EVAL_PAGE : page * _EVAL_PAGE]
        return self.render(
            request,
            "eval.html",
            name=name,
            rows=shown,
            matching=len(rows),
            summary=summary,
            show=show,
            page=page,
            pages=pages,
        )

    # -- live ------------------------------------------------------------------------------
    async def events(self, request: Request) -> Response:
        """Server-sent events: ``change`` whenever the store (or, with ``?run=``, that run) changed."""
        run_id = request.query_params.get("run")
        poll = self.settings.poll_s

        def look() -> Any:
            st = self.store()
            return st.run_change(run_id) if run_id else st.changes()

        async def stream() -> AsyncIterator[dict[str, str]]:
            last: Any = None
            while True:
                now = await anyio.to_thread.run_sync(look)
                if now != last:
                    last = now
                    yield {"event": "change", "data": json.dumps(now)}
                await asyncio.sleep(poll)

        return EventSourceResponse(stream(), ping=15)

    # -- actions ---------------------------------------------------------------------------
    async def action(self, request: Request) -> Response:
        what = request.path_params["what"]
        if self.actions is None:
            return self.render(
                request,
                "error.html",
                403,
                error="this UI is read-only: start it with `maker ui --actions` to stop, resume and fork runs",
            )
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self.csrf):
            return self.render(request, "error.html", 403, error="the form is stale: reload the page and try again")
        run_id = str(form.get("run", ""))
        actions = self.actions
        try:
            if what == "stop":
                msg = await anyio.to_thread.run_sync(actions.stop, run_id)
                target = run_id
            elif what == "resume":
                started = await anyio.to_thread.run_sync(actions.resume, run_id)
                msg, target = f"started `maker resume {run_id}` (pid {started.pid}; log {started.log})", run_id
            elif what == "fork":
                step = _int(str(form.get("step", "")), -1)
                new_id = str(form.get("new_id", ""))
                started = await anyio.to_thread.run_sync(lambda: actions.fork(run_id, step, new_id=new_id))
                msg, target = f"started a fork of {run_id} from step {step} (pid {started.pid})", started.run_id
            else:
                return self.render(request, "error.html", 404, error=f"no action {what!r}")
        except MakerError as exc:
            return self.render(request, "error.html", 409, error=str(exc), back=run_id)
        return RedirectResponse("/run?" + urlencode({"id": target, "msg": msg}), status_code=303)


class _Guard:
    """Every request needs the token, when one is set; pages are not framed, and scripts come only from here."""

    def __init__(self, app: Callable[..., Awaitable[None]], ui: _Ui) -> None:
        self.app = app
        self.token = ui.settings.token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if self.token is None and not _loopback_host(request.headers.get("host", "")):
            # Served on loopback without a token: a page elsewhere that points a name of its own at 127.0.0.1 (DNS
            # rebinding) would be same-origin with the UI; its requests carry that name, so they are refused.
            await PlainTextResponse(
                "this maker ui answers only at 127.0.0.1, localhost or [::1]; serve it with a token to use other names",
                status_code=403,
            )(scope, receive, send)
            return
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given, self.token):
                # Keep it in a cookie and take it out of the address (so it is not in the history or a referrer).
                query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response: Response = RedirectResponse(request.url.path + ("?" + query if query else ""), 303)
                response.set_cookie(_COOKIE, self.token, httponly=True, samesite="strict")
                await response(scope, receive, send)
                return
            bearer = request.headers.get("authorization", "")
            sent = request.cookies.get(_COOKIE) or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
            if not hmac.compare_digest(sent, self.token):
                await PlainTextResponse(
                    "this maker ui needs its token: open the address it printed (…/?token=…)", status_code=401
                )(scope, receive, send)
                return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (with any port)."""
    name = host[1 : host.find("]")] if host.startswith("[") else host.split(":")[0]
    return name.lower() in ("localhost", "::1") or name.startswith("127.")


def _nest(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The depth-first node list as a tree: each node with its ``children``."""
    roots: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    for n in nodes:
        node = {**n, "children": []}
        while stack and stack[-1]["depth"] >= n["depth"]:
            stack.pop()
        (stack[-1]["children"] if stack else roots).append(node)
        stack.append(node)
    return roots


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None and text.strip() else default
    except ValueError:
        return default


def _num(x: Any) -> str:
    """A number as the reports show it (:func:`maker.trace.html.num`); anything else as text, which the template
    escapes (``num`` escapes it itself, for reports built without one)."""
    if x is not None and (isinstance(x, bool) or not isinstance(x, int | float)):
        return str(x)
    return num(x)


def _money(x: float | None) -> str:
    from maker.agents.prices import usd

    return "unknown" if x is None else usd(x)


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _ago(t: float | None) -> str:
    if not t:
        return "–"
    return _dur(max(0.0, time.time() - t)) + " ago"


def _dur(s: float | None) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _jsonish(x: Any) -> str:
    return x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
