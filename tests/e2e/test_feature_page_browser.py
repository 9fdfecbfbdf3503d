"""The feature page in a real browser (Playwright with Debian's chromium): opened from a URL,
it shows highlighted tokens with their values on hover, and a stored HTML/JS payload renders
as plain text without running.

The real entry runs as `streamlit run` in a subprocess on a free port.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from explorer.store.reader import Store
from tests.stores import build_payload_store

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    return build_payload_store(tiny_bundle_path, tmp_path_factory.mktemp("e2e"))


@pytest.fixture(scope="module")
def payload_example(store_path) -> dict:
    """A feature whose top example is in a payload text with a `<` token in its window."""
    with Store.open(store_path) as store, store.cursor() as cursor:
        sae, feature, text_id, pos = cursor.execute(
            """SELECT s.sae, k.feature::BIGINT, k.text_id::BIGINT, k.pos::BIGINT FROM feature_topk k
            JOIN saes s USING (sae_idx) JOIN texts x USING (text_id)
            JOIN tokens t ON t.text_id = k.text_id
                AND t.pos BETWEEN k.pos::INTEGER - 12 AND k.pos::INTEGER + 4
            WHERE x.category = 'payload' AND t.token LIKE '%<%'
            ORDER BY k.rank, s.sae_idx, k.feature LIMIT 1"""
        ).fetchone()
        top_value = float(store.feature_topk(sae, feature)["value"].iloc[0])
        tokens = store.text_tokens(text_id)
        window = tokens[(tokens["pos"] >= pos - 12) & (tokens["pos"] <= pos + 4)]["token"]
    return {"sae": sae, "feature": int(feature), "top_value": top_value, "window": "".join(window)}


def test_feature_page_from_a_url_highlights_tokens_and_keeps_payloads_inert(
    server, browser_page, payload_example
):
    page, dialogs = browser_page
    sae, feature = payload_example["sae"], payload_example["feature"]
    page.goto(f"{server}/feature?sae={sae}&feature={feature}")
    page.get_by_text(f"{sae} · feature {feature}").wait_for(timeout=120_000)
    page.get_by_text("Everything (JSON)").wait_for(timeout=120_000)  # the page has run to its end
    top = page.locator("[data-testid='stHtml']").first
    highlighted = top.locator("span[title][style*='background-color']")
    titles = highlighted.evaluate_all("spans => spans.map(span => span.title)")
    assert len(titles) > 0
    hover_values = [float(v) for t in titles for v in re.findall(rf"#{feature}: ([0-9.e-]+)", t)]
    assert any(abs(v - payload_example["top_value"]) < 1e-3 for v in hover_values)
    highlighted.first.hover()

    shown = " ".join(page.locator("[data-testid='stHtml']").all_inner_texts())
    assert "<" in payload_example["window"] and payload_example["window"] in shown
    assert page.locator("[data-testid='stHtml'] script").count() == 0
    assert page.locator("[data-testid='stHtml'] img").count() == 0
    assert page.locator("[data-testid='stHtml'] b").count() == 0
    page.wait_for_timeout(1000)
    assert dialogs == []
    assert f"feature={feature}" in page.url
