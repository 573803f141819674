"""The review app in a real browser: headless Chromium (Debian's, driven by Playwright) against the app
served by uvicorn on 127.0.0.1. One reviewer works from the keyboard, undoes, reloads and finds their
progress; two more review at once; then the SQLite rows and the export are checked. Saves the
README's screenshot (`review.png`, see tests/browser.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import review as review_job
from review.app import create_app
from review.store import read_labels

from .browser import save_screenshot, serving
from .test_review import allowing, make_run

QUEUE = 16  # 4 tiers x 2 bands x 2 pairs
TIMEOUT_MS = 15_000


@pytest.fixture
def served(tmp_path):
    """(base url, database path, run folder): the app over a small run, on a free port of 127.0.0.1."""
    run = make_run(tmp_path)
    db = tmp_path / "review.sqlite"
    with serving(create_app(run, db, allowing(tmp_path, per_stratum=2, bands=2))) as url:
        yield url, db, run


def version(page) -> int:
    return int(page.get_attribute("#app", "data-version"))


def shown(page) -> tuple[str, str]:
    """The pair key the page shows."""
    return page.get_attribute("#app", "data-garment-id"), page.get_attribute("#app", "data-crop-id")


def wait_render(page, after: int) -> None:
    """Wait for the render that follows render number `after` (selectors only: the page's CSP forbids
    the eval that Playwright's wait_for_function needs)."""
    page.wait_for_selector(f"#app[data-version='{after + 1}']", state="attached", timeout=TIMEOUT_MS)


def press(page, key: str) -> tuple[str, str]:
    """Press `key` on the page, wait for the app's answer; the pair shown before the key."""
    before, pair = version(page), shown(page)
    page.keyboard.press(key)
    wait_render(page, before)
    return pair


def progress(page) -> str:
    return page.inner_text("#progress-text")


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    wait_render(page, 0)
    return context, page


def wait_images(page) -> None:
    """Wait until both images of the pair shown are loaded and decoded."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    loaded = "img => img.complete && img.naturalWidth > 0"
    while not all(page.locator(f"#{name}-img").evaluate(loaded) for name in ("garment", "lookbook")):
        assert time.monotonic() < deadline, "the pair's images did not load"
        time.sleep(0.05)


def test_review_with_the_keyboard_reload_two_reviewers_then_rows_and_export(browser, served, tmp_path):
    url, db, run = served
    alice_ctx, alice = open_page(browser, f"{url}/?reviewer=alice")
    wait_images(alice)
    assert progress(alice).startswith(f"0 / {QUEUE} reviewed")

    decided = {"a": press(alice, "a"), "r": press(alice, "r")}
    skipped = press(alice, "s")
    undone = press(alice, "a")
    assert "3 / 16 reviewed · 1 skipped · alice: 4" in progress(alice)
    press(alice, "u")
    assert shown(alice) == undone and "2 / 16 reviewed" in progress(alice)
    assert "undid accept" in alice.inner_text("#status")
    assert press(alice, "a") == undone
    before_reload = shown(alice)
    assert len({decided["a"], decided["r"], skipped, undone, before_reload}) == 5

    alice.reload()  # progress is the server's: it comes back, with the same pair (alice's claim)
    wait_render(alice, 0)
    assert "3 / 16 reviewed · 1 skipped · alice: 4" in progress(alice) and shown(alice) == before_reload
    alice.goto(url + "/")  # no ?reviewer: the name comes from localStorage
    wait_render(alice, 0)
    assert alice.get_attribute("#app", "data-reviewer") == "alice" and shown(alice) == before_reload

    bob_ctx, bob = open_page(browser, f"{url}/?reviewer=bob")
    carol_ctx, carol = open_page(browser, f"{url}/?reviewer=carol")
    seen = {"bob": [], "carol": []}
    for step in range(4):
        pages = {"bob": bob, "carol": carol}
        showing = {name: shown(p) for name, p in pages.items()}
        assert len({*showing.values(), before_reload}) == 3  # no pair is on two screens
        befores = {name: version(p) for name, p in pages.items()}
        for name, p in pages.items():  # from step 2 on, both keys before either answer: concurrent requests
            seen[name].append(showing[name])
            p.keyboard.press("a" if step % 2 else "r")
            if step < 2:  # one after the other first, so that the screenshot below is always the same
                wait_render(p, befores[name])
        for name, p in pages.items():
            wait_render(p, befores[name])
        if step == 1:  # the README's picture: a high-tier pair, the estimates partly in
            wait_images(bob)
            save_screenshot(bob, "review", tmp_path)
    assert not set(seen["bob"]) & set(seen["carol"]) and before_reload not in seen["bob"] + seen["carol"]
    assert skipped in seen["bob"] + seen["carol"] + [shown(bob), shown(carol)]  # alice's skip went to others
    bob.reload()
    wait_render(bob, 0)
    assert "11 / 16 reviewed" in progress(bob)
    for context in (alice_ctx, bob_ctx, carol_ctx):
        context.close()

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM decisions ORDER BY id")]
    assert len(rows) == 5 + 8 and sum(r["undone_at"] is not None for r in rows) == 1
    assert {r["reviewer"] for r in rows} == {"alice", "bob", "carol"}
    assert all(r["decided_at"].endswith("+00:00") and r["queue"] == "stratified" for r in rows)
    assert all(r["stratum"].split("/")[0] == r["tier"] for r in rows)
    alice_rows = [(r["garment_id"], r["crop_id"], r["decision"]) for r in rows if r["reviewer"] == "alice"]
    assert alice_rows == [(*decided["a"], "accept"), (*decided["r"], "reject"), (*skipped, "skip"),
                          (*undone, "accept"), (*undone, "accept")]  # fmt: skip
    for name in ("bob", "carol"):
        assert [(r["garment_id"], r["crop_id"]) for r in rows if r["reviewer"] == name] == seen[name]
    labels = read_labels(db)
    assert (
        labels.num_rows == 11 and len(set(zip(labels["garment_id"].to_pylist(), labels["crop_id"].to_pylist()))) == 11
    )

    out = tmp_path / "export"
    summary = review_job.main([str(run), "--db", str(db), "--export", str(out)])
    table = pq.read_table(out / "pairs" / "part-00000.parquet")
    verified = {(r["garment_id"], r["crop_id"]): r["verified"] for r in table.to_pylist() if r["verified"] is not None}
    expected = dict(
        zip(zip(labels["garment_id"].to_pylist(), labels["crop_id"].to_pylist()), labels["verified"].to_pylist())
    )
    assert verified == expected and summary["accepted"] + summary["rejected"] == 11
    assert all(
        r["tier"] == ("high" if r["verified"] else "unmatched") for r in table.to_pylist() if r["verified"] is not None
    )
    assert Path(out / "export.json").is_file()
