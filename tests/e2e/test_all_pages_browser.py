"""Every page of the app's navigation in a real browser: it runs to its end without an
exception or an unexpected message, its main control works (a sidebar select or radio, a
button or a form), links from a chart and from a table open the feature they name, and a
screenshot of each page is kept in `tests/e2e/screenshots/` (the CI artefact folder).

The real entry runs as `streamlit run` on a free 127.0.0.1 port (see `tests.e2e.browser`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from explorer.store.queries.search import search_tokens
from explorer.store.reader import Store
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, settle

pytestmark = pytest.mark.e2e
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
VIEWPORT = {"width": 1400, "height": 2200}  # tall: Streamlit scrolls inside its main block
FEATURE_TITLE = re.compile(r"^(L\d\.resid_post) · feature (\d+)$")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser):
    """A fresh browser context (its own Streamlit sessions) that records JS dialogs."""
    context = browser.new_context(viewport=VIEWPORT)
    context.dialogs = []
    context.on("page", lambda page: watch_dialogs(page, context.dialogs))
    yield context
    context.close()


def watch_dialogs(page, dialogs: list[str]) -> None:
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))


def navigation_paths() -> list[str]:
    """The url_path of every `st.Page` in streamlit_app.py ("" for the default page)."""
    tree = ast.parse((ROOT / "streamlit_app.py").read_text())
    paths = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page":
            keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            paths.append("" if keywords.get("default") else keywords["url_path"])
    return paths


def assert_clean(page, name: str, expected: tuple[str, ...] = ()) -> None:
    """No exception and no error or warning except the `expected` ones (regexes)."""
    assert page.locator("[data-testid='stException']").count() == 0, (
        name,
        page.locator("[data-testid='stException']").all_inner_texts(),
    )
    messages = page.locator(
        "[data-testid='stAlertContentError'], [data-testid='stAlertContentWarning']"
    ).all_inner_texts()
    unexpected = [m for m in messages if not any(re.search(e, m) for e in expected)]
    assert not unexpected, (name, unexpected)


def open_page(page, url: str, heading: str | re.Pattern) -> None:
    page.goto(url)
    page.get_by_role("heading", name=heading).first.wait_for(timeout=120_000)
    settle(page)


def choose(page, label: str, option: str | None = None, index: int | None = None) -> str:
    """Pick an option of a select box by its text or position; returns the option's text."""
    page.get_by_role("combobox", name=label).first.click()
    options = page.get_by_role("option")
    chosen = options.nth(index) if index is not None else options.filter(has_text=option).first
    text = chosen.inner_text()
    chosen.click()
    settle(page)
    return text


def feature_title(page) -> tuple[str, int]:
    title = page.get_by_role("heading", level=1).filter(has_text=" · feature ").first
    title.wait_for(timeout=120_000)
    match = FEATURE_TITLE.match(title.inner_text().strip())
    assert match, title.inner_text()
    return match.group(1), int(match.group(2))


def grid_link(page, grid_index: int = 0) -> str:
    """The target of the first link cell of a feature table (from the grid's accessible
    copy; its first column is the row number)."""
    grid = page.locator("[data-testid='stDataFrame']").nth(grid_index)
    return grid.locator("td[aria-colindex='2']").first.inner_text().strip()


def click_first_link_cell(page, grid_index: int = 0):
    """Click the first row's link cell of a feature table once, as a person does (the pointer
    moves there, a 100 ms press), on its "open" text; the feature's page opens in this tab
    (the context keeps one tab). With Streamlit's LinkColumn a click on that text opened a
    new tab (the grid follows a hovered link); the cell is plain text now."""
    grid = page.locator("[data-testid='stDataFrame']").nth(grid_index)
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    x, y = box["x"] + 75, box["y"] + 35 + 17  # past the row number (#), on row 1's "open"
    page.mouse.move(x, y + 60)
    page.mouse.move(x, y, steps=5)
    page.mouse.click(x, y, delay=100)
    wait_for_feature_page(page)
    return page


def wait_for_feature_page(page) -> str:
    """Wait until this tab shows a feature page (the app changes its URL in place, so read
    `location`, not Playwright's `page.url`); returns the URL, asserting the context kept one
    tab."""
    page.wait_for_function("() => location.pathname.endsWith('/feature')", timeout=60_000)
    assert len(page.context.pages) == 1
    return page.evaluate("location.href")


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# -- what each page's main controls do ------------------------------------------------------


def home(page, server: str, store: Path) -> None:
    counts = read(store, lambda opened: opened.table_counts())
    open_page(page, f"{server}/", "SAE feature explorer")
    page.get_by_text("Texts per category").wait_for(timeout=120_000)
    page.get_by_text("activation rows", exact=True).wait_for(timeout=60_000)
    settle(page)
    metrics = dict(
        zip(
            page.locator("[data-testid='stMetricLabel']").all_inner_texts(),
            page.locator("[data-testid='stMetricValue']").all_inner_texts(),
            strict=True,
        )
    )
    assert metrics["texts"] == f"{counts['texts']:,}"
    assert metrics["activation rows"] == f"{counts['acts']:,}"


def feature(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/feature", re.compile(" · feature "))
    sae, first = feature_title(page)
    stats = read(store, lambda opened: opened.feature_stats(sae))
    live = stats[stats["n_active_tokens"] > 0]["feature"].tolist()
    page.get_by_role("button", name="Next").click()
    settle(page)
    assert feature_title(page) == (sae, next(f for f in live if f > first))
    assert f"feature={next(f for f in live if f > first)}" in page.url
    # the export is made when its button is clicked (deferred data): the file holds the
    # feature's stored examples
    with page.expect_download() as download:
        page.get_by_role("button", name="Examples (CSV)").click()
    shown = feature_title(page)
    assert download.value.suggested_filename == f"{shown[0]}_{shown[1]}_examples.csv"
    rows = Path(download.value.path()).read_text().splitlines()
    assert len(rows) > 1 and "text_id" in rows[0]
    # the page opens on the range's examples; the related features and the lineage are a
    # tab each, run when opened and named in the URL
    page.get_by_role("heading", name="Examples across the activation range").wait_for()
    page.get_by_role("tab", name="Related features").click()
    settle(page)
    page.get_by_text("Co-firing features").first.wait_for()
    assert "tab=Related" in page.url
    page.get_by_role("tab", name="Lineage across layers").click()
    settle(page)
    page.get_by_text("By activation correlation over tokens").first.wait_for()
    assert "tab=Lineage" in page.url and f"feature={shown[1]}" in page.url


def specialists(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/specialists", "Specialist heatmaps")
    choose(page, "Measure", "AUROC")
    assert "measure=auroc" in page.url
    page.get_by_text("Measure: AUROC").first.wait_for()
    # a hidden tab runs when opened, and its name goes into the URL for a shared link
    tables = page.locator("[data-testid='stDataFrame']")
    expect(tables).to_have_count(1, timeout=60_000)  # the top specialists (the details' tab)
    page.get_by_role("tab", name="numbers").click()
    settle(page)
    assert "tab=numbers" in page.url and "measure=auroc" in page.url
    expect(tables).to_have_count(3, timeout=60_000)


def frequency(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/frequency", "Frequency vs specialization")
    choose(page, "SAE", "L0.resid_post")
    assert "sae=L0.resid_post" in page.url
    saes = read(store, lambda opened: opened.saes()).set_index("sae")
    n_features = int(saes.loc["L0.resid_post", "d_sae"])
    features = page.locator("[data-testid='stMetricValue']").first.inner_text()
    assert features == f"{n_features:,}"
    # the density is a tab of its own, run when opened and named in the URL
    page.get_by_role("tab", name="Frequency density").click()
    settle(page)
    page.get_by_text("dead features (never fire on this corpus)").first.wait_for()
    assert "tab=Frequency" in page.url and "sae=L0.resid_post" in page.url


def tokens(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/tokens", "Token highlighting")
    page.get_by_text("Typed text", exact=True).click()
    settle(page)
    page.get_by_label("Text", exact=True).fill("def add(a, b): return a + b")
    page.get_by_role("button", name="Run").click()
    settle(page)
    spans = page.locator("[data-testid='stHtml'] span[title]")
    spans.first.wait_for()
    shown = "".join(page.locator("[data-testid='stHtml']").last.all_inner_texts())
    assert "add" in shown and spans.count() > 5


def rankings(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/rankings?measure=auroc", "Rankings and relations")
    choose(page, "Ranking", "most frequent")
    assert "ranking=most+frequent" in page.url or "ranking=most%20frequent" in page.url
    page.get_by_role("heading", name="Most frequent features").wait_for()
    # a table link (one click, this tab)
    target = grid_link(page)
    sae, feature_id = re.search(r"sae=([^&]+)&feature=(\d+)", target).groups()
    opened = click_first_link_cell(page)
    assert feature_title(opened) == (sae, int(feature_id))
    assert "measure=auroc" in page.evaluate("location.search")  # the sidebar's setting stays
    assert_clean(opened, "feature page from a table link")
    open_page(page, f"{server}/rankings?measure=auroc", "Rankings and relations")
    # a chart link (the co-firing bars; one click, this tab)
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    bar = chart.locator("svg .mark-rect path").first
    bar.wait_for()
    bar.click()
    linked = re.search(r"sae=([^&]+)&feature=(\d+)", wait_for_feature_page(page)).groups()
    assert feature_title(page) == (linked[0], int(linked[1]))
    assert_clean(page, "feature page from a chart link")


def taxonomy(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/taxonomy", "Token taxonomy")
    choose(page, "Show label", index=1)
    assert "label=" in page.url


def logit_lens(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/logit-lens", "Logit lens")
    page.get_by_text("Reverse lookup: token → features").click()
    settle(page)
    page.get_by_role("heading", name=re.compile("most promote or suppress")).wait_for()
    assert "view=reverse" in page.url


def search(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/search", "Search features")
    page.get_by_text("promoted token", exact=True).click()
    settle(page)
    token, first = read(store, promoted_token)
    page.get_by_label("Token", exact=True).fill(token)
    page.keyboard.press("Enter")
    page.get_by_text(re.compile(r"results; 'open' goes to")).wait_for(timeout=60_000)
    settle(page)
    target = grid_link(page)
    assert target == f"feature?sae={first[0]}&feature={first[1]}"
    opened = click_first_link_cell(page)
    assert feature_title(opened) == first


def promoted_token(store: Store) -> tuple[str, tuple[str, int]]:
    """A word that some feature promotes, and the first feature the search lists for it."""
    lens = store.logit_lens("L2.resid_post", 0)
    for token in ["the", *(t.strip() for t in lens["token"])]:
        if token.isascii() and token.isalpha():
            found = search_tokens(store, token)
            if len(found):
                return token, (found["sae"].iloc[0], int(found["feature"].iloc[0]))
    raise AssertionError("no promoted word to search for")


def compare(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/compare", "Compare SAEs")
    choose(page, "Measure", "dominance")
    assert "measure=dominance" in page.url
    # one tab runs at a time; the open one is in the URL, so a shared link opens it
    page.get_by_role("tab", name="The field's metrics").click()
    settle(page)
    assert "tab=" in page.url and "measure=dominance" in page.url
    page.get_by_text("k-sparse probing of the categories").first.wait_for()
    shared = page.url
    page.goto(shared)
    settle(page)
    page.get_by_text("k-sparse probing of the categories").first.wait_for()


def ablation(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/ablation", "Ablation lab")
    before = len(read(store, lambda opened: opened.interventions()))
    page.get_by_role("button", name="Run on the text").click()
    page.get_by_text("mean change in loss", exact=True).wait_for(timeout=120_000)
    settle(page)
    assert len(read(store, lambda opened: opened.interventions())) == before + 1


def atlas(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/atlas", "Feature atlas")
    page.get_by_text("token frequency", exact=True).click()
    settle(page)
    assert "colour=frequency" in page.url


def methods(page, server: str, store: Path) -> None:
    open_page(page, f"{server}/methods#chance-baseline", "Methods")
    page.get_by_role("heading", name=re.compile("Chance baseline", re.I)).first.wait_for()


def read(path: Path, query: Callable[[Store], Any]) -> Any:
    """One read of the store, closed at once: the app's label and ledger saves need the file
    free of other processes' connections."""
    with Store.open(path) as store:
        return query(store)


VISITS: dict[str, Callable] = {
    "": home,
    "feature": feature,
    "specialists": specialists,
    "frequency": frequency,
    "tokens": tokens,
    "rankings": rankings,
    "taxonomy": taxonomy,
    "logit-lens": logit_lens,
    "search": search,
    "compare": compare,
    "ablation": ablation,
    "atlas": atlas,
    "methods": methods,
}


def test_every_page_of_the_navigation_is_covered() -> None:
    assert sorted(navigation_paths()) == sorted(VISITS)


@pytest.mark.parametrize("path", list(VISITS))
def test_page_in_a_browser(server, context, store_path, path) -> None:
    page = context.new_page()
    VISITS[path](page, server, store_path)
    assert_clean(page, path or "home")
    page.wait_for_timeout(300)
    screenshot(page, path or "home")
    assert context.dialogs == []
    sidebar_links = page.locator("[data-testid='stSidebarNav'] a")
    assert sidebar_links.count() == len(VISITS)
