"""The web page in a real headless browser: Chromium from the OS packages, driven by Playwright.
Fills the form, runs a mock-backend workflow, and checks that each node's output, the timing bars,
the final output and the trace link appear. Skips cleanly without Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium")

from test_serve import app_for, mock_flow  # noqa: E402

from ift_engine.serve.live import serving  # noqa: E402

SCREENSHOT = Path(__file__).parent.parent / "docs" / "images" / "serve-page.png"
# A fresh profile with Chromium's background traffic off: this machine has no outside network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_the_page_runs_a_workflow_and_shows_each_node(tmp_path: Path) -> None:
    long_line = "z" * 3000  # one unbroken line: it must wrap, not widen the page
    app = app_for(mock_flow(delay=0.2, answers={"Say": "- Bees dance\n- Bees smell", "Polish": long_line}))
    with serving(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            missing: list[str] = []
            page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
            page.goto(url)
            page.get_by_role("button", name="echo").click()
            page.wait_for_selector("#graph svg")
            page.fill("#input-text", "How honeybees communicate")
            page.click("#run")
            page.wait_for_selector("#node-final[data-seconds]", timeout=20_000)
            assert page.inner_text("#node-draft pre") == "- Bees dance\n- Bees smell"
            assert page.inner_text("#node-final pre") == long_line
            assert page.evaluate("document.documentElement.scrollWidth") <= 1100
            marked = page.eval_on_selector_all(
                "#graph g[id^='dag-']", "gs => gs.filter(g => g.classList.contains('done')).map(g => g.id)"
            )
            assert sorted(marked) == ["dag-draft", "dag-final"]  # the DAG shows which nodes ran
            assert page.inner_text("#status").startswith("Done in")
            assert page.inner_text("#outputs pre.output") == long_line
            assert page.get_attribute("#trace", "href").startswith("blob:")
            widths = page.eval_on_selector_all(".node .bar", "bars => bars.map(b => b.style.width)")
            assert len(widths) == 2 and all(w.endswith("%") for w in widths)
            assert errors == [] and missing == []  # no favicon 404 either
            if os.environ.get("IFT_ENGINE_SCREENSHOT"):  # refresh the README's picture
                page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()


def test_the_page_shows_an_ensembles_members_and_its_probabilities() -> None:
    members = {
        name: {"name": name, "backend": "mock", "options": {"default": answer}}
        for name, answer in (("a", "positive"), ("b", "negative"), ("c", "negative"))
    }
    doc = {
        "name": "vote",
        "inputs": {"text": {}},
        "models": members,
        "ensembles": {"vote": {"ensemble": "soft_vote", "members": ["a", "b", "c"], "weights": [2, 1, 0.5]}},
        "nodes": [
            {"id": "n", "template": "sentiment-en", "inputs": {"text": "$input.text"}, "model": "vote"}
        ],
    }
    with serving(app_for(doc)) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.get_by_role("button", name="vote").click()
            page.fill("#input-text", "The room was fine.")
            page.click("#run")
            page.wait_for_selector("#node-n .scores")
            rows = page.eval_on_selector_all(
                "#node-n .scores tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
            )
            assert rows == [
                ["a", "100.0%", "positive"],
                ["b", "100.0%", "negative"],
                ["c", "100.0%", "negative"],
                ["ensemble", "57.1%", "positive"],
                ["ensemble", "42.9%", "negative"],  # 2 : 1.5
            ]
        finally:
            browser.close()


def test_the_page_shows_skipped_nodes_and_rounds() -> None:
    from test_decisions import LOOP, ROUTER

    with serving(app_for(ROUTER, LOOP)) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.get_by_role("button", name="router").click()
            page.wait_for_selector("#graph svg")
            page.fill("#input-review", "A lovely stay")
            page.click("#run")
            page.wait_for_selector("#node-reply[data-seconds]", timeout=20_000)
            assert page.inner_text("#node-apology small") == "skipped"
            assert "sentiment = negative" in page.inner_text("#node-apology pre")
            skipped = page.eval_on_selector_all("#graph g.skipped", "gs => gs.map(g => g.id)")
            assert skipped == ["dag-apology"]
            page.get_by_role("button", name="loop").click()
            page.wait_for_selector("#input-topic")
            page.fill("#input-topic", "slow")
            page.click("#run")
            page.wait_for_selector("#node-final[data-seconds]", timeout=20_000)
            assert page.inner_text("#node-rewrite small").startswith("round 3 · ")
            assert page.inner_text("#node-rewrite pre") == "v3"
            assert errors == []
        finally:
            browser.close()
