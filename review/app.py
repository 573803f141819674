"""The review app over HTTP: one page and a small JSON API (FastAPI; `jobs.review` serves it).

  GET  /                         the page (review.page: one file, inline CSS and JS, nothing external)
  GET  /api/next?reviewer=R      {"pair": the pair R is to see (claimed for R) or null, "progress": ...}
  POST /api/decide               {"reviewer", "garment_id", "crop_id", "decision": accept|reject|skip}
                                 -> {"decision": the stored row, "pair": R's next pair, "progress"}
  POST /api/undo                 {"reviewer"} -> {"undone": the row undone or null, "pair", "progress"}
  GET  /api/progress?reviewer=R  progress and per-tier precision estimates (review.queue.ReviewQueue.progress)
  GET  /api/image?garment_id=G&role=garment|lookbook   JPEG of a queued pair's image, box drawn

Images are named by a queued pair and a role, never by a uri or path: the only files the app
reads are the uris of the pairs it serves (404 otherwise), and those within the allow-list of
`core.storage.forbidden` (403). Requests whose Host header is not in `settings.allowed_hosts` are
refused (a DNS-rebinding guard: the app has no login and binds 127.0.0.1 by default).
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware

from review.page import page_for
from review.queue import ROLES, ReviewQueue, ReviewSettings
from review.render import ImageRefused, render
from review.store import DECISIONS, ReviewStore

MAX_NAME = 64
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

    @app.get("/api/image")
    def pair_image(garment_id: Annotated[str, Query(max_length=1024)], role: Annotated[str, Query()]) -> Response:
        if role not in ROLES:
            raise HTTPException(404, f"role is one of {ROLES}")
        try:
            data = image(garment_id, role)
        except KeyError as exc:
            raise HTTPException(404, "not an image of this review's queue") from exc
        except ImageRefused as exc:
            raise HTTPException(exc.status, exc.reason) from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return app


PAGE_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"
)


def _json(payload: dict) -> Response:
    return JSONResponse(payload, headers=NO_STORE)
