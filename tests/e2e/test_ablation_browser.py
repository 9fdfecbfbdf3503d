"""The ablation lab in a real browser: open it from a URL, run one ablation on a stored text,
see the numbers and the highlighted tokens, and find the run in the store's ledger."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from explorer.store.reader import Store
from tests.stores import tiny_store

pytestmark = pytest.mark.e2e
SAE = "L2.resid_post"


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    return tiny_store(
        tiny_bundle_path, "bundled", tmp_path_factory.mktemp("e2e_ablation") / "ablation.duckdb"
    )


def test_one_ablation_end_to_end(server, browser_page, store_path):
    page, dialogs = browser_page
    page.goto(f"{server}/ablation?sae={SAE}&features=4&mode=scale&value=6")
    page.get_by_text("scale by a factor #4 x 6").first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Run on the text").click()
    page.get_by_text("mean change in loss", exact=True).wait_for(timeout=120_000)

    with Store.open(store_path) as store:
        ledger = store.interventions()
    assert len(ledger) == 1
    recorded = json.loads(ledger.iloc[0]["metrics"])
    shown = page.locator("[data-testid='stMetric']").first.inner_text()
    assert f"{recorded['mean_delta_loss']:+.4f}" in shown
    tokens = page.locator("[data-testid='stHtml'] span[title]")
    titles = tokens.evaluate_all("spans => spans.map(span => span.title)")
    assert len(titles) == recorded["n_tokens"]
    assert all(re.search(r"loss up: [0-9.e+-]+\nloss down: [0-9.e+-]+", t) for t in titles)
    assert page.locator("[data-testid='stException']").count() == 0
    assert dialogs == []
