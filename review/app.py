"""The review app over HTTP: one page and a small JSON API (FastAPI; `jobs.review` serves it).

  GET  /                         the page (review.page: one file, inline CSS and JS, nothing external)
  GET  /api/next?reviewer=R      {"pair": the pair R is to see (claimed for R) or null, "progress": ...}
  POST /api/decide               {"reviewer", "garment_id", "crop_id", "decision": accept|reject|skip}
                                 -> {"decision": the stored row, "pair": R's next pair, "progress"}
  POST /api/undo                 {"reviewer"} -> {"undone": the row undone or null, "pair", "progress"}
  GET  /api/progress?reviewer=R  progress and per-tier precision estimates (review.queue.ReviewQueue.progress)
  GET  /api/image?garment_id=G&role=garment|lookbook   JPEG of a queued pair's image, box drawn
  GET  /search                   the search page (review.search_page): sketch or picture, text, results
  POST /api/search               {"picture": data URL or null, "text", "k"} -> {"results": top-k crops, "kind"}
  GET  /api/search-image?crop_id=C&role=lookbook|garment   JPEG of a returned crop's image (box drawn)
                                 or of the garment paired with it

Images are named by a queued pair (or a crop a search returned) and a role, never by a uri or
path: the only files the app reads are the uris of the pairs and results it serves (404
otherwise), and those within the allow-list of `core.storage.forbidden` (403). Requests whose
Host header is not in `settings.allowed_hosts` are refused (a DNS-rebinding guard: the app has no
login and binds 127.0.0.1 by default). Search needs the run's config.yaml and index (404 without).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware

from quality.search import QueryError
from review.page import page_for
from review.queue import ROLES, ReviewQueue, ReviewSettings
from review.render import ImageRefused, render
from review.search import ROLES as SEARCH_ROLES
from review.search import SearchService, SearchUnavailable
from review.search_page import SEARCH_PAGE
from review.store import DECISIONS, ReviewStore

MAX_NAME = 64
MAX_PICTURE_CHARS = 16 << 20  # a search picture's data URL; its decoded size is limited by the run's decode limits
NO_STORE = {"Cache-Control": "no-store"}


def valid_reviewer(name: str) -> str:
    """`name` stripped; ValueError when empty, longer than MAX_NAME or holding a control character."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"a reviewer name is 1 to {MAX_NAME} printable characters")
    return name


class ReviewerBody(BaseModel):
    reviewer: str

    @field_validator("reviewer")
    @classmethod
    def _reviewer(cls, value: str) -> str:
        return valid_reviewer(value)


class SearchBody(BaseModel):
    picture: str | None = Field(default=None, max_length=MAX_PICTURE_CHARS)
    text: str = Field(default="", max_length=500)
    k: int = 12


class DecisionBody(ReviewerBody):
    garment_id: str = Field(max_length=1024)
    crop_id: str = Field(max_length=1024)
    decision: str

    @field_validator("decision")
    @classmethod
    def _decision(cls, value: str) -> str:
        if value not in DECISIONS:
            raise ValueError(f"decision is one of {DECISIONS}")
        return value


def _reviewer_query(reviewer: str) -> str:
    try:
        return valid_reviewer(reviewer)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


def create_app(run_dir: str | Path, db_path: str | Path, settings: ReviewSettings | None = None) -> FastAPI:
    """The app over the run at `run_dir` (see `review.pairs`) with decisions in the SQLite file `db_path`."""
    settings = settings or ReviewSettings()
    queue = ReviewQueue(run_dir, ReviewStore(db_path, settings.claim_ttl_s), settings)
    app = FastAPI(title="lookbook-miner review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.state.queue = queue

    @functools.lru_cache(maxsize=256)
    def image(garment_id: str, role: str) -> bytes:
        uri, box = queue.image_source(garment_id, role)
        return render(uri, queue.storage, queue.decode, settings.max_side, box)

    def turn(reviewer: str) -> dict:
        return {"pair": queue.next_for(reviewer), "progress": queue.progress(reviewer)}

    html = page_for(settings.reviewer)
    try:
        searcher: SearchService | None = SearchService(run_dir, queue.storage)
    except SearchUnavailable as exc:
        searcher, unavailable = None, str(exc)

    def search_service() -> SearchService:
        if searcher is None:
            raise HTTPException(404, f"search is unavailable: {unavailable}")
        return searcher

    @functools.lru_cache(maxsize=256)
    def result_image(crop_id: str, role: str) -> bytes:
        uri, box = search_service().image_source(crop_id, role)
        return render(uri, queue.storage, queue.decode, settings.max_side, box)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(html, headers={**NO_STORE, "Content-Security-Policy": PAGE_POLICY})

    @app.get("/api/next")
    def next_pair(reviewer: Annotated[str, Query()] = "") -> Response:
        return _json(turn(_reviewer_query(reviewer)))

    @app.post("/api/decide")
    def decide(body: DecisionBody) -> Response:
        try:
            stored = queue.decide(body.reviewer, (body.garment_id, body.crop_id), body.decision)
        except KeyError as exc:
            raise HTTPException(404, "not a pair of this review's queue") from exc
        return _json({"decision": asdict(stored), **turn(body.reviewer)})

    @app.post("/api/undo")
    def undo(body: ReviewerBody) -> Response:
        undone = queue.store.undo(body.reviewer)
        return _json({"undone": asdict(undone) if undone else None, **turn(body.reviewer)})

    @app.get("/api/progress")
    def progress(reviewer: Annotated[str, Query()] = "") -> Response:
        return _json(queue.progress(reviewer.strip()))

    @app.get("/search", response_class=HTMLResponse)
    def search_page() -> HTMLResponse:
        return HTMLResponse(SEARCH_PAGE, headers={**NO_STORE, "Content-Security-Policy": PAGE_POLICY})

    @app.post("/api/search")
    def search(body: SearchBody) -> Response:
        try:
            results = search_service().search(body.picture, body.text, body.k)
        except QueryError as exc:
            raise HTTPException(422, str(exc)) from exc
        kind = "+".join(name for name, given in (("picture", body.picture), ("text", body.text.strip())) if given)
        keep = ("rank", "crop_id", "image_id", "score", "s_vlm", "garment_id", "tier")
        return _json({"results": [{key: row[key] for key in keep} for row in results], "kind": kind})

    @app.get("/api/search-image")
    def search_image(crop_id: Annotated[str, Query(max_length=1024)], role: Annotated[str, Query()]) -> Response:
        return _jpeg(lambda: result_image(crop_id, role), role, SEARCH_ROLES, "not an image of a search result")

    @app.get("/api/image")
    def pair_image(garment_id: Annotated[str, Query(max_length=1024)], role: Annotated[str, Query()]) -> Response:
        return _jpeg(lambda: image(garment_id, role), role, ROLES, "not an image of this review's queue")

    return app


PAGE_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"
)


def _jpeg(rendered: Callable[[], bytes], role: str, roles: tuple[str, ...], missing: str) -> Response:
    """The JPEG `rendered()` returns; 404 for a role not in `roles` or a KeyError (`missing`),
    the ImageRefused status otherwise."""
    if role not in roles:
        raise HTTPException(404, f"role is one of {roles}")
    try:
        data = rendered()
    except KeyError as exc:
        raise HTTPException(404, missing) from exc
    except ImageRefused as exc:
        raise HTTPException(exc.status, exc.reason) from exc
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _json(payload: dict) -> Response:
    return JSONResponse(payload, headers=NO_STORE)
