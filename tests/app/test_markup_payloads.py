"""A category named like Markdown, an image or maths reaches every message that echoes it as
literal text: each known sink (the rankings page's "no feature fires more on" message, the
specialization test's "need at least two texts" error, the ablation verdict) shows the
escaped source, so Streamlit renders no image, link, bold or KaTeX. (What the browser
renders and fetches: tests/e2e/test_injection_browser.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.build.single import build_store
from explorer.errors import markdown_escaped
from explorer.ui import relation_views

ROOT = Path(__file__).resolve().parents[2]
CATEGORY = "![x](http://127.0.0.1:9/t.png) $x^2$ **b**"
LONE = "`tick` ![y](http://127.0.0.1:9/u.png) _em_"  # one text only: too few to test
SAE = "L2.resid_post"
# What would render as markup: an image or link, maths, bold/emphasis or a code span.
ACTIVE = re.compile(r"(?<!\\)!\[|(?<!\\)\]\(|(?<!\\)\$|(?<!\\)\*\*|(?<![\\\w])_em|(?<!\\)`")


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("markup")
    corpus = folder / "markup.jsonl"
    rows = [{"text": f"def f{n}(x): return x * {n}", "category": CATEGORY} for n in range(4)]
    rows.append({"text": "print('alone')", "category": LONE})
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = folder / "markup.duckdb"
    build_store(f"demo:{tiny_bundle_path}", f"arithmetic:24+{corpus}", path)
    return path


@pytest.fixture
def run_page(store_path, tiny_bundle_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(ROOT)

    def run(page: str, params: dict[str, str] | None = None) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app_pages" / f"{page}.py"), default_timeout=180)
        at.query_params.update(params or {})
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return run


def shown_literally(message: str, category: str) -> None:
    """`message` holds `category` escaped, and no markup a category could start."""
    assert markdown_escaped(category) in message, message
    assert not ACTIVE.search(message.replace(markdown_escaped(category), "")), message
    assert not ACTIVE.search(markdown_escaped(category))


def corpus_run(at: AppTest, target: str) -> AppTest:
    """Run the ablation lab's corpus run with `target` as the category to test."""
    next(box for box in at.selectbox if box.label == "Category to test").set_value(target)
    return next(b for b in at.button if b.label == "Run over every text").click().run()


def test_the_rankings_message_shows_the_category_literally(run_page, monkeypatch) -> None:
    real = relation_views.category_contrast
    monkeypatch.setattr(
        relation_views, "category_contrast", lambda *args: real(*args).iloc[0:0]
    )  # no feature fires more on the category: the page says so
    at = run_page("rankings", {"sae": SAE, "tab": "Features of a category"})
    at.selectbox(key="rankings_page.category").set_value(CATEGORY).run()
    assert not at.exception
    messages = [m.value for m in at.info if "fires more on" in m.value]
    assert len(messages) == 1, [m.value for m in at.info]
    shown_literally(messages[0], CATEGORY)


def test_the_specialization_error_shows_the_category_literally(run_page) -> None:
    at = run_page("ablation", {"sae": SAE, "features": "3"})
    at = corpus_run(at, LONE)
    errors = [e.value for e in at.error if "at least two texts" in e.value]
    assert len(errors) == 1, [e.value for e in at.error]
    shown_literally(errors[0], LONE)


def test_the_ablation_verdict_shows_the_category_literally(run_page) -> None:
    at = run_page("ablation", {"sae": SAE, "features": "3"})
    at = corpus_run(at, CATEGORY)
    assert not at.error, [e.value for e in at.error]
    verdicts = [m.value for m in at.markdown if "texts more than the others" in m.value]
    assert len(verdicts) == 1, [m.value for m in at.markdown]
    shown_literally(verdicts[0].replace("**hurts**", "").replace("**does not hurt**", ""), CATEGORY)
