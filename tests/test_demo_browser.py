"""The real page in headless Chromium (Debian's `chromium`, driven by Playwright's Python package).

Ask a question whose top passage holds `<script>` and `<img onerror=...>`, see ranked passages
with both scores, check that the injected code did not run, grade a passage with the keyboard and
find the row in SQLite; then grade and undo a queued item in the Annotate tab with keys, and visit
every tab. Screenshots of each tab go to $SCREENSHOT_DIR (default: the test's tmp_path).

Needs: `apt-get install chromium` (/usr/bin/chromium) and `pip install playwright` (no browser
download: Playwright is pointed at the system Chromium). Skips with a reason when either is missing.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import test_demo_support as support
from test_demo_support import HOSTILE_ID, HOSTILE_QUESTION, free_port, make_config

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    ),
]

demo_data, demo_run, demo_ce = support.demo_data, support.demo_run, support.demo_ce  # shared session fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_data, demo_run, demo_ce, tiny_model_dir):
    from demo import build_app, launch
    from demo.services import IMPORT_JOB, load_services

    tmp = tmp_path_factory.mktemp("browser")
    config = make_config(tmp, demo_data, tiny_model_dir, run=str(demo_run), cross_encoder=str(demo_ce))
    services = load_services(config)
    assert services.jobs.wait(IMPORT_JOB, 60).status == "done"
    app = build_app(services)
    port = free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield services, f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def judgments(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT id, annotator_id, question_id, passage_id, action, grade, decision_id FROM judgments ORDER BY id"
        ).fetchall()


def text_field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def test_ask_grade_with_keyboard_and_no_script_runs(server, page, shots):
    services, url = server
    page.goto(url)
    text_field(page, "annotator").fill("browser-tester")
    text_field(page, "ask-question").fill(HOSTILE_QUESTION)
    page.locator("#ask-mode").get_by_text("hybrid").click()  # BM25 + dense: the hostile passage is surely in the top-k
    page.locator("#ask-button").click()
    page.locator("#hit-0 .hit").wait_for()
    first = page.locator("#hit-0 .hit")
    head = first.locator(".hit-head").inner_text()
    assert "dense" in head and "cross-encoder p =" in head  # both scores side by side
    cards = page.locator(".hit")
    assert cards.count() == services.config.default_k
    hostile = page.locator(f".hit[data-pid='{HOSTILE_ID}']")
    assert hostile.count() == 1
    shown = hostile.inner_text()
    assert "<script>window.__pwned=1</script>" in shown and "<img src=x" in shown  # shown as text
    assert hostile.locator("script, img").count() == 0
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    page.screenshot(path=str(shots / "1-ask.png"), full_page=True)

    selected = page.locator("#ask-select input:checked").get_attribute("value")
    before = judgments(services.store.path)
    page.locator("#header").click()  # focus out of the text field: keys now grade
    page.keyboard.press("2")
    page.locator("#ask-judged").get_by_text("Stored judgment").wait_for()
    after = judgments(services.store.path)
    assert len(after) == len(before) + 1
    assert after[-1][1:6] == ("browser-tester", after[-1][2], selected, "grade", 2)
    assert page.evaluate("() => typeof window.__pwned") == "undefined"


def test_answer_sentences_follow_the_ranking(server, page):
    """The Ask tab shows the ranking first; a second step marks each hit's best sentence."""
    from dataclasses import replace

    services, url = server
    saved = services.config
    services.config = replace(saved, highlight_min_prob=0.0)  # every hit then has a best sentence
    try:
        page.goto(url)
        text_field(page, "annotator").fill("browser-tester")  # the next tests annotate on this page
        text_field(page, "ask-question").fill("What are male honeybees called?")
        page.locator("#ask-button").click()
        page.locator("#hit-0 mark.answer").wait_for()
        assert page.locator(".hit mark.answer").count() == services.config.default_k
        title = page.locator("#hit-0 mark.answer").get_attribute("title")
        assert title.startswith("cross-encoder probability")
    finally:
        services.config = saved


def on_app(page, url: str) -> None:
    """Open the app with an annotator name unless an earlier test left the page there (each test
    also runs alone, e.g. under -k)."""
    if page.url != url:
        page.goto(url)
        text_field(page, "annotator").fill("browser-tester")


def test_annotate_with_keys_then_undo(server, page, shots):
    services, url = server
    on_app(page, url)
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#ann-item .item").wait_for()
    page.locator("#guidelines").wait_for(state="visible")
    assert page.locator("#ann-item .suggestion").count() == 0  # blind mode by default
    before = judgments(services.store.path)
    page.locator("#guidelines").click()
    page.keyboard.press("3")
    page.locator("#ann-status").get_by_text("Stored judgment").wait_for()
    rows = judgments(services.store.path)
    assert len(rows) == len(before) + 1 and rows[-1][4:6] == ("grade", 3) and rows[-1][6] is not None
    page.screenshot(path=str(shots / "3-annotate.png"), full_page=True)
    page.keyboard.press("u")
    page.locator("#ann-status").get_by_text("Undid judgment").wait_for()
    rows = judgments(services.store.path)
    assert rows[-1][4] == "retract"


def test_every_other_tab_renders(server, page, shots):
    on_app(page, server[1])
    page.get_by_role("tab", name="Hard negatives").click()
    page.locator("#neg-head .question").wait_for()
    page.locator("#neg-table").wait_for()
    page.screenshot(path=str(shots / "2-hard-negatives.png"), full_page=True)
    page.get_by_role("tab", name="Audit").click()
    page.locator("#audit-message").get_by_text("random sample").wait_for()
    page.screenshot(path=str(shots / "4-audit.png"), full_page=True)
    page.get_by_role("tab", name="Pipeline").click()
    page.locator("#pipeline-steps").get_by_text("step3_denoise").first.wait_for()
    page.screenshot(path=str(shots / "5-pipeline.png"), full_page=True)
    assert page.evaluate("() => typeof window.__pwned") == "undefined"


def test_fresh_start_says_no_cross_encoder_and_shows_no_probabilities(tmp_path, demo_data, tiny_model_dir, page, shots):
    from demo import build_app, launch
    from demo.services import load_services

    services = load_services(make_config(tmp_path, demo_data, tiny_model_dir))
    app = build_app(services)
    port = free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("#ce-status").get_by_text("No trained cross-encoder yet").wait_for()
        page.locator("#train-ce").wait_for(state="visible")  # renders with the status; a loaded machine is slower
        text_field(page, "ask-question").fill("What are male honeybees called?")
        page.locator("#ask-button").click()
        page.locator("#hit-0 .hit").wait_for()
        assert page.locator(".hit .score.ce").count() == 0  # no probability of an untrained head
        assert page.locator("mark.answer").count() == 0
        page.locator("#ask-summary").get_by_text("No trained cross-encoder yet").wait_for()
        page.screenshot(path=str(shots / "0-ask-fresh-start.png"), full_page=True)
    finally:
        app.close()
