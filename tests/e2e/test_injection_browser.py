"""Injection in a real browser: HTML, JS, style, form and markdown payloads stored as corpus
text, typed as text (token page, ablation lab), saved as a feature label and put in every
page's URL parameters never run script (no dialog, `window.__pwned` never set), never add
elements to the app's HTML blocks (script, iframe, form, img, style, event-handler
attributes, `javascript:` and disguised links, images, maths... counted against the same
page without the payload) and never change the layout (page width, sidebar, title style,
nothing fixed on top).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from explorer.build.extract import BuildSettings
from explorer.build.single import build_store
from explorer.store.reader import Store
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, settle, streamlit_server
from tests.reliability.helpers import PAGE_PARAMS

pytestmark = pytest.mark.e2e
SAE = "L1.resid_post"
PAYLOADS = [
    "<script>window.__pwned=1;alert(1)</script>",
    "<img src=x onerror=window.__pwned=2>",
    "<svg onload=window.__pwned=3><circle r=9>",
    '<a href="javascript:window.__pwned=4">go</a>',
    '<iframe srcdoc="<script>parent.__pwned=5</script>">',
    "<style>*{display:none!important;color:red}</style>",
    "<form action=//example.invalid><button>go</button></form>",
    '"><img src=x onerror=window.__pwned=8>',
    "' onmouseover='window.__pwned=9' x='",
    "[x](javascript:window.__pwned=10)",
    "![p](https://example.invalid/p.png)",
    "`code`<b onmouseover=window.__pwned=12>b</b>",
    "<details open ontoggle=window.__pwned=13>",
    "</span></div><script>window.__pwned=14</script>",
    "<input autofocus onfocus=window.__pwned=15>",
    '<meta http-equiv=refresh content="0;url=/x">',
    "<div style=position:fixed;inset:0;z-index:9>",
    "javascript:window.__pwned=18",
    "`![q](https://example.invalid/q.png)",
]
# One value that tries every way out of a quoted Markdown message: closing a code span, a new
# paragraph, an image (fetched on render), a link and maths.
MARKDOWN = "`x\n\n![m](https://example.invalid/m.png) [l](https://example.invalid/l) $x^2$"
BENIGN = "plain words here"
# What the app's HTML blocks must never gain from user or corpus text.
FORBIDDEN = (
    "script, iframe, frame, object, embed, form, img, style, link, meta, base, input, "
    "textarea, details, math, foreignObject, a[href^='javascript' i], [onerror], [onload], "
    "[onmouseover], [onfocus], [ontoggle], [onclick], [srcdoc], .katex"
)
BLOCKS = (
    "[data-testid='stHtml'], [data-testid='stMarkdownContainer'], [data-testid='stText'], "
    "[data-testid='stAlertContainer'], [data-testid='stCaptionContainer'], "
    "[data-testid='stHeading'], [data-testid='stCode']"
)
PROVOKE = """(blocks) => {
    for (const block of document.querySelectorAll(blocks))
        for (const element of block.querySelectorAll('*'))
            for (const type of ['mouseover', 'mouseenter', 'focus'])
                element.dispatchEvent(new MouseEvent(type, {bubbles: true}));
}"""
INSPECT = """([blocks, forbidden]) => {
    const inside = [...document.querySelectorAll(blocks)];
    // a link is disguised when its text is not its own address (a bare URL that Markdown
    // links by itself shows where it goes; [text](url) does not); the app's own links to a
    // section of its Methods page (explorer.methods_doc.methods_link) are not
    const disguised = inside.flatMap(b => [...b.querySelectorAll('a[href]')])
        .filter(a => !a.getAttribute('href').startsWith('#')
            && !/^methods#[a-z0-9-]+$/.test(a.getAttribute('href'))
            && a.textContent.trim() !== a.getAttribute('href'));
    const found = inside.flatMap(b => [...b.querySelectorAll(forbidden)]).concat(disguised)
        .map(e => e.outerHTML.slice(0, 80));
    const fixed = inside.flatMap(b => [...b.querySelectorAll('*')])
        .filter(e => getComputedStyle(e).position === 'fixed').length;
    const main = document.querySelector("[data-testid='stMain']").getBoundingClientRect();
    const side = document.querySelector("[data-testid='stSidebar']");
    const h1 = document.querySelector('h1');
    const body = getComputedStyle(document.body);
    return {
        found: [...new Set(found)],
        layout: {
            overflow: document.documentElement.scrollWidth > document.documentElement.clientWidth,
            fixed: fixed,
            main: [Math.round(main.x), Math.round(main.width)],
            sidebar: side ? Math.round(side.getBoundingClientRect().width) : 0,
            title: h1 ? [getComputedStyle(h1).color, getComputedStyle(h1).fontSize,
                getComputedStyle(h1).display] : null,
            body: [body.display, body.visibility, body.color],
        },
        pwned: window.__pwned === undefined ? null : String(window.__pwned),
    };
}"""


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    """The tiny corpus plus every payload as a text of category `payload` (and, for the
    benign baseline, plain texts of category `plain`)."""
    folder = tmp_path_factory.mktemp("injection")
    corpus = folder / "payloads.jsonl"
    rows = [
        {"text": f"{payload} said {n}", "category": "payload"} for n, payload in enumerate(PAYLOADS)
    ]
    rows += [{"text": f"{BENIGN} said {n}", "category": "plain"} for n in range(len(PAYLOADS))]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = folder / "store.duckdb"
    build_store(f"demo:{tiny_bundle_path}", f"bundled+{corpus}", path, BuildSettings(batch_size=32))
    return path


@pytest.fixture(scope="module")
def page():
    """One headless chromium tab for the module; JS dialogs are recorded on `page.dialogs`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1600})
        tab.dialogs = []
        tab.on("dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss()))
        yield tab
        browser.close()


def open_url(page, url: str) -> None:
    page.goto(url)
    page.locator("h1").first.wait_for(timeout=120_000)
    settle(page)


def radio(page, option: str) -> None:
    page.locator("[data-testid='stRadio']").get_by_text(option, exact=True).click()
    settle(page)


def provoke(page) -> None:
    """Give event handlers their chance: hover the first rendered token for real, send every
    element of the app's blocks mouseover / focus events, and tab through the page."""
    spans = page.locator("[data-testid='stHtml'] span")
    if spans.count():
        spans.first.hover(timeout=5_000)
    page.evaluate(PROVOKE, BLOCKS)
    for _ in range(3):
        page.keyboard.press("Tab")
    page.wait_for_timeout(150)


def inspect(page) -> dict:
    assert page.locator("[data-testid='stException']").count() == 0, page.locator(
        "[data-testid='stException']"
    ).all_inner_texts()
    return page.evaluate(INSPECT, [BLOCKS, FORBIDDEN])


def assert_inert(page, state: dict, baseline: dict, where: str) -> None:
    assert state["pwned"] is None, (where, state["pwned"])
    assert page.dialogs == [], (where, page.dialogs)
    assert state["found"] == baseline["found"], (where, state["found"])
    assert state["layout"] == baseline["layout"], where
    assert not state["layout"]["overflow"] and state["layout"]["fixed"] == 0, where


def feature_with_payloads(store_path: Path) -> int:
    """The feature of SAE whose top examples fall most often in payload texts."""
    with Store.open(store_path) as store, store.cursor() as cursor:
        return cursor.execute(
            """SELECT k.feature::BIGINT FROM feature_topk k JOIN saes s USING (sae_idx)
            JOIN texts t USING (text_id) WHERE s.sae = ? AND t.category = 'payload'
            GROUP BY k.feature ORDER BY count(*) DESC, k.feature LIMIT 1""",
            [SAE],
        ).fetchone()[0]


def test_corpus_payloads_render_as_text(server, page, store_path) -> None:
    feature = feature_with_payloads(store_path)
    open_url(page, f"{server}/feature?sae={SAE}&feature={feature}")
    page.get_by_text("Everything (JSON)").wait_for(timeout=120_000)
    provoke(page)
    shown = " ".join(page.locator("[data-testid='stHtml']").all_inner_texts())
    assert "<" in shown  # payload characters, shown as text
    baseline = inspect(page)  # the feature page holds no forbidden element at all
    assert baseline["found"] == [] and baseline["pwned"] is None

    def category_view(category: str) -> dict:
        open_url(page, f"{server}/tokens")
        radio(page, "One feature over a category")
        page.get_by_role("combobox", name="SAE").click()
        page.get_by_role("option", name=SAE, exact=True).click()
        settle(page)
        page.get_by_label("Feature", exact=True).fill(str(feature))
        page.keyboard.press("Enter")
        settle(page)
        page.get_by_role("combobox", name="Target category").click()
        page.get_by_role("option", name=category, exact=True).click()
        settle(page)
        provoke(page)
        return inspect(page)

    plain = category_view("plain")
    payload = category_view("payload")
    shown = " ".join(page.locator("[data-testid='stHtml']").all_inner_texts())
    assert "window.__pwned" in shown.replace("\u00a0", " ")
    assert_inert(page, payload, plain, "corpus texts of the category view")


def packed(payloads: list[str], tokenizer_path: Path, max_tokens: int = 60) -> list[str]:
    """The payloads joined by spaces into as few texts as fit the tiny model's context."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    texts: list[str] = []
    for payload in payloads:
        joined = f"{texts[-1]} {payload}" if texts else payload
        if texts and len(tokenizer.encode(joined, add_special_tokens=False).ids) <= max_tokens:
            texts[-1] = joined
        else:
            texts.append(payload)
    return texts


def test_typed_payloads_render_as_text(server, page, tiny_bundle_path) -> None:
    open_url(page, f"{server}/tokens")
    radio(page, "Typed text")

    def typed(text: str) -> dict:
        page.get_by_label("Text", exact=True).fill(text)
        page.get_by_role("button", name="Run").click()
        settle(page)
        page.locator("[data-testid='stHtml'] span[title]").first.wait_for(timeout=60_000)
        provoke(page)
        return inspect(page)

    baseline = typed(BENIGN)
    texts = packed(PAYLOADS, tiny_bundle_path / "tokenizer" / "tokenizer.json")
    assert len(texts) < len(PAYLOADS)
    for text in texts:
        state = typed(text)
        assert not page.locator("[data-testid='stAlertContentError']").count(), text
        visible = "".join(page.locator("[data-testid='stHtml']").last.all_inner_texts())
        visible = visible.replace("\u00a0", " ").replace("␣", " ")
        assert text.split(" ")[0][:6] in visible, (text, visible)
        assert_inert(page, state, baseline, f"typed on the token page: {text}")


def test_typed_payloads_in_the_ablation_lab(server, page) -> None:
    open_url(page, f"{server}/ablation?sae={SAE}&features=3")
    radio(page, "Typed text")

    def run(text: str) -> dict:
        page.get_by_role("textbox", name="Typed text").fill(text)
        page.get_by_role("button", name="Run on the text").click()
        settle(page)
        page.get_by_text("mean change in loss", exact=True).wait_for(timeout=120_000)
        provoke(page)
        return inspect(page)

    baseline = run(BENIGN)
    for payload in PAYLOADS[:3]:
        assert_inert(page, run(payload), baseline, f"typed in the ablation lab: {payload}")


def test_payload_labels_render_as_text(server, page, store_path) -> None:
    url = f"{server}/feature?sae={SAE}&feature=9"
    open_url(page, url)

    def save(label: str, note: str) -> dict:
        page.get_by_label("Label", exact=True).fill(label)
        page.get_by_label("Notes", exact=True).fill(note)
        page.get_by_role("button", name="Save label").click()
        page.get_by_text("Saved the label").wait_for(timeout=60_000)
        settle(page)
        table = page.locator("[data-testid='stDataFrame']").last  # the labels, newest first
        table.scroll_into_view_if_needed()
        cells = table.locator("td")  # the grid's accessible copy, hidden behind its canvas
        cells.first.wait_for(state="attached", timeout=30_000)
        # the previous save's message stays on screen while the new run finishes: wait for
        # the new label itself to reach the table
        deadline = time.monotonic() + 60
        shown: list[str] = []
        while label not in shown and time.monotonic() < deadline:
            shown = cells.evaluate_all("cells => cells.map(cell => cell.textContent)")
            page.wait_for_timeout(250)
        assert label in shown
        provoke(page)
        return inspect(page)

    baseline = save(BENIGN, BENIGN)
    labels = []
    for payload in PAYLOADS:  # labels of at most 200 characters, several payloads each
        if labels and len(labels[-1]) + 1 + len(payload) <= 200:
            labels[-1] += " " + payload
        else:
            labels.append(payload)
    for label in labels:
        assert_inert(page, save(label, "\n".join(PAYLOADS)), baseline, f"label {label}")
    open_url(page, url)  # the label line shows the newest label from the next run on
    page.get_by_text("Everything (JSON)").wait_for(timeout=120_000)
    assert page.locator("[data-testid='stText']").first.inner_text() == f"Label: {labels[-1]}"
    provoke(page)
    assert_inert(page, inspect(page), baseline, "the newest label on a fresh page")
    with Store.open(store_path) as store:
        assert store.labels(SAE, 9)["note"].iloc[0] == "\n".join(PAYLOADS)


URL_PATHS = {page: "" if page == "home" else page.replace("_", "-") for page in PAGE_PARAMS}


def forged_params(page_name: str) -> tuple[list[str], dict[str, str]]:
    """The page's parameters to forge, and those held fixed (the logit lens view whose
    parameters echo the most)."""
    params = PAGE_PARAMS[page_name] or [f"unknown{n}" for n in range(len(PAYLOADS))]
    fixed = {"view": "reverse"} if page_name == "logit_lens" else {}
    return [p for p in params if p not in fixed], fixed


@pytest.fixture(scope="module")
def baselines() -> dict[str, dict]:
    return {}


def baseline_of(page, server: str, page_name: str, baselines: dict[str, dict]) -> dict:
    """The page opened without forged parameters (once per module)."""
    if page_name not in baselines:
        baselines[page_name] = visit(page, server, page_name, {})
    return baselines[page_name]


def visit(page, server: str, page_name: str, values: dict[str, str]) -> dict:
    _, fixed = forged_params(page_name)
    open_url(page, f"{server}/{URL_PATHS[page_name]}?{urlencode({**values, **fixed})}")
    provoke(page)
    return inspect(page)


@pytest.mark.parametrize("page_name", list(PAGE_PARAMS))
def test_payloads_in_every_url_parameter(server, page, baselines, page_name) -> None:
    """Every parameter of the page gets payloads (round robin, so each payload reaches the
    page at least once), against the page opened without parameters."""
    forged, _ = forged_params(page_name)
    baseline = baseline_of(page, server, page_name, baselines)
    for round_index in range(-(-len(PAYLOADS) // len(forged))):
        values = {
            param: PAYLOADS[(round_index * len(forged) + n) % len(PAYLOADS)]
            for n, param in enumerate(forged)
        }
        state = visit(page, server, page_name, values)
        assert_inert(page, state, baseline, f"{page_name} with {values}")


@pytest.mark.parametrize("page_name", list(PAGE_PARAMS))
def test_markdown_in_every_url_parameter(server, page, baselines, page_name) -> None:
    """A value trying every way out of a message quoting it, in every parameter at once."""
    forged, _ = forged_params(page_name)
    baseline = baseline_of(page, server, page_name, baselines)
    state = visit(page, server, page_name, {param: MARKDOWN for param in forged})
    assert_inert(page, state, baseline, f"{page_name} with Markdown in every parameter")


# A category named like an image (fetched on render), maths and bold, and one that tries to
# close a code span; the second has one text, too few for the specialization test.
CATEGORY = "![x](http://127.0.0.1:9/t.png) $x^2$ **b**"
LONE = "`tick` ![y](http://127.0.0.1:9/u.png) _em_"


@pytest.fixture(scope="module")
def markup_server(tiny_bundle_path, tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("markup_categories")
    corpus = folder / "markup.jsonl"
    rows = [{"text": f"def f{n}(x): return x * {n}", "category": CATEGORY} for n in range(4)]
    rows.append({"text": "print('alone')", "category": LONE})
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = folder / "markup.duckdb"
    build_store(f"demo:{tiny_bundle_path}", f"arithmetic:24+{corpus}", path)
    with streamlit_server(path, tiny_bundle_path) as url:
        yield url


@pytest.mark.parametrize(
    ("category", "shows"),
    [(CATEGORY, "texts more than the others"), (LONE, "at least two texts")],
)
def test_markup_in_a_category_shows_as_typed(markup_server, page, category, shows) -> None:
    """The ablation verdict and the specialization test's error quote the category as
    typed: no image is fetched or shown, no maths, bold or code span comes from it."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_url(page, f"{markup_server}/ablation?sae={SAE}&features=3")
    page.get_by_role("tab", name="Over the corpus").click()
    settle(page)
    baseline = inspect(page)  # the page's own links to feature pages
    page.get_by_role("combobox", name="Category to test").click()
    page.get_by_role("option", name=category, exact=True).click()
    page.get_by_role("button", name="Run over every text").click()
    settle(page)
    message = page.get_by_text(shows).first
    message.wait_for(timeout=120_000)
    provoke(page)
    page.wait_for_timeout(500)
    assert category in message.inner_text()  # literally, markup characters included
    state = inspect(page)
    assert state["found"] == baseline["found"] and state["pwned"] is None, state["found"]
    rendered = message.evaluate_all(
        "els => els.map(e => (e.closest(\"[data-testid='stMarkdownContainer']\") || e)"
        ".querySelectorAll('img, .katex, code, em').length)"
    )
    assert rendered == [0]
    assert not [url for url in requested if "127.0.0.1:9" in url]
