"""Many sessions at once in real browsers: four Playwright contexts on one app server, each
doing six actions (reading a feature page, saving a label, running an ablation that goes to
the ledger; twice, each session starting at another point of the cycle, so saves overlap
other sessions' reads). Every write lands once, no page shows an error or a traceback, and
every result equals the same action done alone (the store's own answer for reads, the run
repeated in this process for the ledger's numbers).
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import suppress
from pathlib import Path

import pytest

from explorer.live.runs import rerun, same_metrics
from explorer.sources.source import load_source
from explorer.store.reader import Store
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS
from tests.stores import tiny_store

pytestmark = pytest.mark.e2e
SAE = "L2.resid_post"
SESSIONS = 4
ROUNDS = 2
CYCLE = ("read", "label", "ablate")
WAIT_MS = 120_000
SCALE = 6


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    return tiny_store(
        tiny_bundle_path, "bundled", tmp_path_factory.mktemp("e2e_sessions") / "sessions.duckdb"
    )


def plans(store: Store) -> list[list[dict]]:
    """Per session, its actions in order: each on its own firing feature."""
    stats = store.feature_stats(SAE)
    live = iter(stats[stats["n_active_tokens"] > 0]["feature"].astype(int).tolist())
    sessions = []
    for n in range(SESSIONS):
        kinds = [CYCLE[(n + step) % len(CYCLE)] for step in range(len(CYCLE) * ROUNDS)]
        sessions.append(
            [
                {"kind": kind, "feature": next(live), "text": f"session {n} action {step}"}
                for step, kind in enumerate(kinds)
            ]
        )
    return sessions


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


async def done_or_failed(page, done) -> list[str]:
    """Wait until `done` (a locator) shows, or an error or a traceback does; the errors."""
    failed = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
    await done.or_(failed).first.wait_for(timeout=WAIT_MS)
    await settle(page)
    return await failed.all_inner_texts()


async def act(page, url: str, action: dict) -> dict:
    """Do one action in `page`; what the page showed."""
    feature, kind = action["feature"], action["kind"]
    if kind in ("read", "label"):
        await page.goto(f"{url}/feature?sae={SAE}&feature={feature}")
        errors = await done_or_failed(page, page.get_by_text("Everything (JSON)"))
    if kind == "read":
        spans = page.locator("[data-testid='stHtml']").first.locator("span[title]")
        titles = await spans.evaluate_all("spans => spans.map(span => span.title)")
        values = [float(v) for t in titles for v in re.findall(rf"#{feature}: (\S+)", t)]
        return {**action, "errors": errors, "values": values}
    if kind == "label":
        await page.get_by_label("Label", exact=True).fill(action["text"])
        await page.get_by_label("Notes", exact=True).fill(f"note of {action['text']}")
        await page.get_by_role("button", name="Save label").click()
        errors += await done_or_failed(page, page.get_by_text("Saved the label"))
        shown = await page.get_by_text(f"Label: {action['text']}", exact=True).count()
        return {**action, "errors": errors, "shown": shown}
    await page.goto(f"{url}/ablation?sae={SAE}&features={feature}&mode=scale&value={SCALE}")
    run = page.get_by_role("button", name="Run on the text")
    errors = await done_or_failed(page, run)
    await run.click()
    errors += await done_or_failed(page, page.get_by_text("mean change in loss", exact=True))
    metric = await page.locator("[data-testid='stMetric']").first.inner_text()
    return {**action, "errors": errors, "metric": metric}


async def one_session(browser, url: str, actions: list[dict]) -> list[dict]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1200})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    try:
        return [{**await act(page, url, action), "dialogs": list(dialogs)} for action in actions]
    finally:
        await context.close()


async def all_sessions(url: str, sessions: list[list[dict]]) -> list[list[dict]]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(one_session(browser, url, s) for s in sessions))
        finally:
            await browser.close()


def test_sessions_at_once_save_every_label_and_run(server, store_path, tiny_bundle_path):
    with Store.open(store_path) as store:
        sessions = plans(store)
        labels_before = len(store.labels())
        runs_before = len(store.interventions())
        top_values = {
            action["feature"]: float(store.feature_topk(SAE, action["feature"])["value"].iloc[0])
            for actions in sessions
            for action in actions
        }

    done = [result for results in asyncio.run(all_sessions(server, sessions)) for result in results]

    assert len(done) == SESSIONS * ROUNDS * len(CYCLE)
    failed = [result for result in done if result["errors"] or result["dialogs"]]
    assert failed == []
    for result in done:
        if result["kind"] == "read":  # as the page shows it alone: the store's top value
            assert any(abs(v - top_values[result["feature"]]) < 1e-3 for v in result["values"])
        if result["kind"] == "label":
            assert result["shown"] == 1, result

    with Store.open(store_path) as store:
        labels = store.labels(SAE)
        runs = store.interventions(SAE)
    # every label landed once, on its feature, with its note
    saved = [result for result in done if result["kind"] == "label"]
    assert len(labels) == labels_before + len(saved)
    for result in saved:
        mine = labels[labels["label"] == result["text"]]
        assert mine["feature"].tolist() == [result["feature"]]
        assert mine["note"].tolist() == [f"note of {result['text']}"]
    # every run landed once; the page showed its numbers; alone it gives the same numbers
    ablated = {result["feature"]: result for result in done if result["kind"] == "ablate"}
    assert len(runs) == runs_before + len(ablated)
    assert runs["id"].is_unique
    loaded = load_source(f"demo:{tiny_bundle_path}")
    by_feature = {
        json.loads(row.settings)["intervention"]["features"][0]: row
        for row in runs.itertuples(index=False)
    }
    assert sorted(by_feature) == sorted(ablated)
    with Store.open(store_path) as store:
        for feature, result in ablated.items():
            recorded = json.loads(by_feature[feature].metrics)
            assert f"{recorded['mean_delta_loss']:+.4f}" in result["metric"], result
            alone = rerun(loaded, store, json.loads(by_feature[feature].settings))
            assert same_metrics(alone, recorded), (feature, alone, recorded)
