"""Headless Chromium for the browser tests: Debian's `chromium` (the Makefile installs it) driven by
Playwright's Python package, which never downloads a browser of its own here.

`page` fixture: a fresh page; the test skips, saying why, where Chromium or Playwright is missing.
`save_screenshot(page, name)`: a PNG under $LOOKBOOK_SCREENSHOTS (the README's pictures come from a
run with LOOKBOOK_SCREENSHOTS=docs/screenshots), else under the test's temporary folder.
`serving(app)`: the app on a free port of 127.0.0.1 for the browser, as `jobs.review` serves it.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = "LOOKBOOK_SCREENSHOTS"


def chromium_path() -> str:
    """The browser binary, or a skip that says what is missing and how to get it."""
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=/path/to/it)")
    pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed (make env)")
    return path


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A page in a fresh browser context (its own cookies and storage)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def save_screenshot(page, name: str, fallback: Path, selector: str | None = None, full_page: bool = True) -> Path:
    """A screenshot as NAME.png under $LOOKBOOK_SCREENSHOTS, else under `fallback`: of the element
    `selector`, else of the whole page (`full_page`) or of what the viewport shows."""
    folder = Path(os.environ.get(SCREENSHOTS) or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    if selector:
        page.locator(selector).screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=full_page)
    return path


@contextmanager
def serving(app) -> Iterator[str]:
    """The ASGI `app` served by uvicorn on a free port of 127.0.0.1, in a thread; yields its base url."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
