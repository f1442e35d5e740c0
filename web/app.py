"""The Starlette app: each handler parses, confines the path, calls one function, renders."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nordlys.daemon import models_store
from nordlys.daemon.config import Config
from nordlys.daemon.corrections import folder_key
from nordlys.daemon.journal import Journal
from nordlys.daemon.loader import ImageLoadError
from nordlys.daemon.mover import sha256_file
from nordlys.daemon.placement import AURORA, OTHER, REVIEW
from nordlys.web import actions, pages
from nordlys.web.metrics import JournalCollector
from nordlys.web.security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, Guard, confine, csrf_ok
from nordlys.web.thumbs import ThumbCache

log = structlog.get_logger(__name__)
SHOWN = (AURORA, OTHER, REVIEW)  # folders whose photos the app shows and moves


@dataclass
class Site:
    """Everything the handlers need, built once by `nordlys web` (or a test)."""

    config: Config
    journal_path: Path
    root: Path
    folders: dict[str, Path]  # folder key -> path, for every FOLDER_KEY
    threshold: float
    model_version: str
    thumbs: ThumbCache
    read_only: bool = False
    config_file: Path | None = None
    retrain: dict[str, Any] = field(default_factory=dict)  # the running or last retrain: state, exit code
    lock: threading.Lock = field(default_factory=threading.Lock)  # one action at a time

    def journal(self) -> Journal:
        return Journal.open(self.journal_path)

    @property
    def shown(self) -> dict[str, Path]:
        return {k: self.folders[k] for k in SHOWN}


def build_app(site: Site, *, token: str | None = None, allowed_hosts: frozenset[str] | None = None) -> Any:
    env = Environment(loader=PackageLoader("nordlys.web", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["score"] = lambda s: "–" if s is None else f"{s:.3f}"
    env.filters["when"] = lambda t: t[:19].replace("T", " ") if t else ""
    registry = CollectorRegistry()
    registry.register(JournalCollector(site.config, site.journal, lambda: site.model_version))

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        html = env.get_template(template).render(csrf=csrf, read_only=site.read_only, path=request.url.path,
                                             **context)
        response = HTMLResponse(html, status_code=status_code)
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def photo_path(request: Request) -> Path:
        found = confine(request.path_params["rel"], request.scope.get("raw_path", b""), site.root, site.shown.values())
        if found is None or not found.is_file():
            raise HTTPException(404)
        return found

    async def overview(request: Request) -> Response:
        with site.journal() as journal:
            data = pages.overview(site.config, journal, site.journal_path, site.folders, site.model_version)
        return render(request, "overview.html", o=data, retrain=site.retrain)

    async def review(request: Request) -> Response:
        with site.journal() as journal:
            queue = pages.review_queue(journal, site.root, site.folders, threshold=site.threshold,
                                       ignore=site.config.ignore)
        return render(request, "review.html", photos=queue)

    async def recent(request: Request) -> Response:
        q = request.query_params
        try:
            f = pages.RecentFilter(folder=q.get("folder", ""), date_from=q.get("from", ""), date_to=q.get("to", ""),
                                   min_score=float(q["min"]) if q.get("min") else None,
                                   max_score=float(q["max"]) if q.get("max") else None)
            with site.journal() as journal:
                entries = pages.recent(journal, site.root, site.folders, f)
        except ValueError:
            raise HTTPException(400, "filters: a date is YYYY-MM-DD, a score a number from 0 to 1") from None
        rows = [(e, pages.link_of(e.dest, site.root, site.shown)) for e in entries]
        return render(request, "recent.html", rows=rows, f=f)

    async def photo(request: Request) -> Response:
        path = photo_path(request)
        digest = sha256_file(path)[0]
        with site.journal() as journal:
            entries, corrections = pages.photo_history(journal, path, digest)
        score = next((e.score for e in reversed(entries) if e.score is not None), None)
        return render(request, "photo.html", rel=pages.rel(path, site.root), name=path.name,
                      folder=folder_key(path, site.folders), score=score, entries=entries,
                      corrections=corrections)

    async def thumb(request: Request) -> Response:
        path = photo_path(request)
        etag = f'"{site.thumbs.key(path)}"'
        headers = {"cache-control": "private, max-age=86400", "etag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        try:
            data = site.thumbs.get(path)
        except ImageLoadError as exc:
            log.info("no thumbnail", path=str(path), reason=exc.reason)
            raise HTTPException(404) from None
        return Response(data, media_type="image/jpeg", headers=headers)

    def check_action(request: Request, form: Any) -> None:
        if site.read_only:
            raise HTTPException(403, "read-only mode: nothing can be moved")
        if not csrf_ok(request, request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)):
            log.warning("request refused", reason="CSRF token missing or wrong", path=request.url.path)
            raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")

    def answer(request: Request, payload: dict, back: str, status_code: int = 200) -> Response:
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(payload, status_code=status_code)
        return RedirectResponse(back, status_code=303)

    async def move(request: Request) -> Response:
        form = await request.form()
        check_action(request, form)
        raw = str(form.get("rel", "")).encode()
        found = confine(str(form.get("rel", "")), raw, site.root, site.shown.values())
        if found is None or not found.is_file():
            raise HTTPException(404)
        try:
            with site.lock, site.journal() as journal:
                moved = actions.move_photo(journal, site.folders, found, str(form.get("to", "")))
        except actions.ActionError as exc:
            return answer(request, {"error": str(exc)}, "/review", 409)
        new_rel = pages.rel(moved.path, site.root)
        return answer(request, {"rel": new_rel, "folder": moved.new_label, "correction": moved.correction_id},
                      f"/photo/{new_rel}")

    async def undo(request: Request) -> Response:
        form = await request.form()
        check_action(request, form)
        try:
            with site.lock, site.journal() as journal:
                restored = actions.undo_last(journal, list(dataclasses.asdict(site.config.folders).values()))
        except actions.ActionError as exc:
            return answer(request, {"error": str(exc)}, "/review", 409)
        back = [pages.rel(b, site.root) for _, b in restored if folder_key(b, site.shown)]
        return answer(request, {"restored": back}, f"/photo/{back[0]}" if back else "/review")

    async def retrain(request: Request) -> Response:
        form = await request.form()
        check_action(request, form)
        with site.lock:
            if site.retrain.get("state") != "running":
                with site.journal() as journal:
                    before = len(journal.models())
                proc = models_store.spawn_retrain(site.config_file, site.config.watch.retrain_data)
                site.retrain.update(state="running", models_before=before, exit=None)
                threading.Thread(target=_wait_retrain, args=(site, proc), daemon=True).start()
        return answer(request, {"state": "running"}, "/")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", "") or "not found"
        return PlainTextResponse(f"{status}: {detail}\n", status_code=status)

    async def failed(request: Request, exc: Exception) -> Response:
        log.exception("request failed", path=request.url.path)
        return PlainTextResponse("500: something went wrong; the server log says what\n", status_code=500)

    static = StaticFiles(packages=[("nordlys.web", "static")])
    routes = [Route("/", overview), Route("/review", review), Route("/recent", recent),
              Route("/photo/{rel:path}", photo), Route("/thumb/{rel:path}", thumb),
              Route("/act/move", move, methods=["POST"]), Route("/act/undo", undo, methods=["POST"]),
              Route("/act/retrain", retrain, methods=["POST"]), Route("/metrics", metrics),
              Mount("/static", static, name="static")]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: failed})
    return Guard(app, token=token, allowed_hosts=allowed_hosts)


def _wait_retrain(site: Site, proc: Any) -> None:
    """When the retrain ends, keep its verdict: the gate's reason from the journal's model record
    (every gated model is recorded, installed or refused), or its exit code when it never got that far."""
    code = proc.wait()
    with site.journal() as journal:
        models = journal.models()
    new = models[site.retrain.get("models_before", 0):]
    verdict = (f"{new[-1].status}: {new[-1].version} ({new[-1].metrics.get('gate', '')})" if new else
               f"nothing was gated (exit {code}): fewer than 2 corrections, or data it could not read; "
               "the server log has the reason")
    site.retrain.update(state="done", exit=code, verdict=verdict)
    log.info("retrain finished", exit=code, verdict=verdict)
