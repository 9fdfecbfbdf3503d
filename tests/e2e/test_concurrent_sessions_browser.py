"""Many sessions at once in real browsers: four Playwright contexts on one app server, each
reading a feature page, saving a label on another and running an ablation that goes to the
ledger, all at the same time. Every write lands once, no page shows a traceback, and every
result equals the same action done alone (the store's own answer for reads, the run repeated
in this process for the ledger's numbers).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from explorer.build.single import build_store
from explorer.live.runs import rerun, same_metrics
from explorer.sources.source import load_source
from explorer.store.reader import Store
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, streamlit_server

pytestmark = pytest.mark.e2e
SAE = "L2.resid_post"
SESSIONS = 4
WAIT_MS = 120_000
SCALE = 6


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e_sessions") / "sessions.duckdb"
    build_store(f"demo:{tiny_bundle_path}", "bundled", path)
    return path


@pytest.fixture(scope="module")
def server(store_path, tiny_bundle_path) -> Iterator[str]:
    with streamlit_server(store_path, tiny_bundle_path) as url:
        yield url


def plans(store: Store) -> list[dict]:
    """Per session: a feature to read, one to label and one to ablate (all firing)."""
    stats = store.feature_stats(SAE)
    live = stats[stats["n_active_tokens"] > 0]["feature"].astype(int).tolist()
    assert len(live) >= 3 * SESSIONS
    return [
        {
            "session": n,
            "read": live[n],
            "label": live[SESSIONS + n],
            "ablate": live[2 * SESSIONS + n],
            "text": f"session {n} label",
        }
        for n in range(SESSIONS)
    ]


async def settle(page) -> None:
    """Wait for the script run to end (see `tests.e2e.browser.settle`)."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    with suppress(PlaywrightTimeout):
        await page.wait_for_selector("[data-testid='stStatusWidget']", timeout=1_500)
    await page.wait_for_function(
        """() => !document.querySelector("[data-testid='stStatusWidget']")
            && !document.querySelector("[data-stale='true']")""",
        timeout=WAIT_MS,
    )


async def tracebacks(page) -> int:
    return await page.locator("[data-testid='stException']").count()


async def one_session(browser, url: str, plan: dict) -> dict:
    """Read a feature page, save a label, run an ablation; what the pages showed."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1200})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    shown: dict = {"dialogs": dialogs, "tracebacks": 0}
    try:
        feature = plan["read"]
        await page.goto(f"{url}/feature?sae={SAE}&feature={feature}")
        await page.get_by_text("Everything (JSON)").wait_for(timeout=WAIT_MS)
        spans = page.locator("[data-testid='stHtml']").first.locator("span[title]")
        titles = await spans.evaluate_all("spans => spans.map(span => span.title)")
        shown["read"] = [float(v) for t in titles for v in re.findall(rf"#{feature}: (\S+)", t)]
        shown["tracebacks"] += await tracebacks(page)

        await page.goto(f"{url}/feature?sae={SAE}&feature={plan['label']}")
        await page.get_by_text("Everything (JSON)").wait_for(timeout=WAIT_MS)
        await page.get_by_label("Label", exact=True).fill(plan["text"])
        await page.get_by_label("Notes", exact=True).fill(f"note of session {plan['session']}")
        await page.get_by_role("button", name="Save label").click()
        await page.get_by_text("Saved the label").wait_for(timeout=WAIT_MS)
        await settle(page)
        shown["label"] = await page.get_by_text(f"Label: {plan['text']}").count()
        shown["tracebacks"] += await tracebacks(page)

        ablation = f"ablation?sae={SAE}&features={plan['ablate']}&mode=scale&value={SCALE}"
        await page.goto(f"{url}/{ablation}")
        await page.get_by_role("button", name="Run on the text").wait_for(timeout=WAIT_MS)
        await settle(page)
        await page.get_by_role("button", name="Run on the text").click()
        await page.get_by_text("mean change in loss", exact=True).wait_for(timeout=WAIT_MS)
        await settle(page)
        shown["metric"] = await page.locator("[data-testid='stMetric']").first.inner_text()
        shown["tracebacks"] += await tracebacks(page)
    finally:
        await context.close()
    return shown


async def all_sessions(url: str, session_plans: list[dict]) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(
                *(one_session(browser, url, plan) for plan in session_plans)
            )
        finally:
            await browser.close()


def test_sessions_at_once_save_every_label_and_run(server, store_path, tiny_bundle_path):
    with Store.open(store_path) as store:
        session_plans = plans(store)
        labels_before = len(store.labels())
        runs_before = len(store.interventions())
        top_values = {
            plan["read"]: float(store.feature_topk(SAE, plan["read"])["value"].iloc[0])
            for plan in session_plans
        }

    results = asyncio.run(all_sessions(server, session_plans))

    for plan, shown in zip(session_plans, results, strict=True):
        assert shown["tracebacks"] == 0 and shown["dialogs"] == [], (plan, shown)
        assert any(abs(v - top_values[plan["read"]]) < 1e-3 for v in shown["read"]), shown
        assert shown["label"] >= 1, (plan, shown)

    with Store.open(store_path) as store:
        labels = store.labels(SAE)
        runs = store.interventions(SAE)
    # every label landed once, on its feature, with its note
    assert len(labels) == labels_before + SESSIONS
    for plan in session_plans:
        mine = labels[labels["label"] == plan["text"]]
        assert mine["feature"].tolist() == [plan["label"]]
        assert mine["note"].tolist() == [f"note of session {plan['session']}"]
    # every run landed once; the page showed its numbers; alone it gives the same numbers
    assert len(runs) == runs_before + SESSIONS
    assert runs["id"].is_unique
    loaded = load_source(f"demo:{tiny_bundle_path}")
    by_feature = {
        json.loads(row.settings)["intervention"]["features"][0]: row
        for row in runs.itertuples(index=False)
    }
    assert sorted(by_feature) == sorted(plan["ablate"] for plan in session_plans)
    with Store.open(store_path) as store:
        for plan, shown in zip(session_plans, results, strict=True):
            row = by_feature[plan["ablate"]]
            recorded = json.loads(row.metrics)
            assert f"{recorded['mean_delta_loss']:+.4f}" in shown["metric"], (plan, shown)
            alone = rerun(loaded, store, json.loads(row.settings))
            assert same_metrics(alone, recorded), (plan["ablate"], alone, recorded)
