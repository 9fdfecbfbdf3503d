"""Bad input matrix: every kind of bad input a user can give, through the pages (AppTest)
and the CLI (`explorer.cli.main`) where it applies, gets a clear message and never a
traceback, and none changes the stored data (the store file's bytes are compared before
and after each case; runs that are meant to record something are checked row by row).

Kinds: empty, whitespace-only, too long and over-context text; control characters, bytes
that were not UTF-8, lone surrogates, emoji and right-to-left text; feature ids negative,
>= d_sae, not numbers or beyond any integer; unknown SAEs; unknown, damaged, folder and
older-schema stores; malformed corpus files; and forged query parameters on every page.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import sys
import threading
import unicodedata
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.cli import main
from explorer.corpus import label_by_rules, load_corpus_file
from explorer.errors import CorpusError, InputError, StoreError, quoted
from explorer.live.interventions import DOSE_SCALES, MAX_FEATURES, Intervention, text_effect
from explorer.live.runs import run_corpus
from explorer.live.text import MAX_TEXT_CHARS, encode_text
from explorer.settings import PUBLIC_LIVE_LIMITS, LiveLimits, Settings
from explorer.sources.source import load_source
from explorer.store.reader import Store
from tests.reliability.helpers import (
    PAGE_PARAMS,
    ROOT,
    SPECIALIST_PARAMS,
    file_digest,
    fingerprint,
)
from tests.stores import TINY, tiny_store

PAGES = ROOT / "app_pages"
SAE = "L1.resid_post"
D_SAE = TINY.d_sae
N_CTX_MESSAGE = f"reads at most {TINY.n_ctx - 1} after its BOS token"
NO_SOURCE = "local:/nonexistent/sae-folder"  # a source that is never loaded on these pages


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad_input") / "store.duckdb"
    tiny_store(tiny_bundle_path, "bundled+arithmetic:40", path)
    with Store.open(path) as store:
        store.save_label(SAE, 5, "a label already there")
    return path


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture
def unchanged(store_path):
    """The store file's bytes and every table's content stay as they were."""
    before = file_digest(store_path), fingerprint(store_path)
    yield store_path
    assert (file_digest(store_path), fingerprint(store_path)) == before


@pytest.fixture
def app(store_path, tiny_bundle_path, monkeypatch):
    """`app(page, params)`: the page run by AppTest on the tiny bundle and the store."""
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(ROOT)

    def run(page: str, params: dict[str, str] | None = None) -> AppTest:
        at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120)
        at.query_params.update(params or {})
        at.run()
        assert_no_traceback(at)
        return at

    return run


def assert_no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(elements) -> list[str]:
    return [element.value for element in elements]


def widget(elements, label: str):
    return next(element for element in elements if element.label == label)


def assert_message(at: AppTest, kind: str, pattern: str) -> None:
    shown = texts(getattr(at, kind))
    assert any(re.search(pattern, message) for message in shown), (kind, pattern, shown)


# -- typed text -------------------------------------------------------------------------

TOO_LONG = "(a too long text) "  # repeated past MAX_TEXT_CHARS below
TYPED = {
    "empty": ("", "the text is empty"),
    "whitespace only": (" \n\t  \r\n", "the text is empty"),
    "longer than the limit": (TOO_LONG * (MAX_TEXT_CHARS // len(TOO_LONG) + 1), "at most"),
    "more tokens than the context": (" ".join(map(str, range(120))), N_CTX_MESSAGE),
    "control characters": ("tab\there\x00nul \x1b[31mred\x7f\u200b\x08", None),
    "bytes that were not UTF-8": (b"caf\xe9 \xff\xfe na\xefve".decode("utf-8", "replace"), None),
    "emoji and right-to-left": ("😀🚀 مرحبا بالعالم \u202eevil\u202c שלום", None),
}


@pytest.mark.parametrize("case", TYPED)
def test_typed_text_on_the_token_page(app, unchanged, case) -> None:
    text, message = TYPED[case]
    at = app("tokens")
    widget(at.radio, "Show").set_value("Typed text").run()
    widget(at.selectbox, "SAE").set_value(SAE)
    widget(at.text_area, "Text").set_value(text)
    at = widget(at.button, "Run").click().run()
    assert_no_traceback(at)
    if message is None:
        assert not at.error, texts(at.error)
        html = at.get("html")[0].value
        assert html.count("<span") > 1 and "\x1b[" not in html.replace("&#x27;", "'")
    else:
        assert_message(at, "error", message)
        assert not at.get("html")


@pytest.mark.parametrize("case", TYPED)
def test_typed_text_on_the_search_page(app, unchanged, case) -> None:
    text, message = TYPED[case]
    at = app("search", {"by": "text", "sae": SAE})
    at = at.text_area(key="search_page.text").set_value(text).run()
    assert_no_traceback(at)
    if case in ("empty", "whitespace only"):
        assert_message(at, "info", "Type a text")
    elif message is None:
        assert not at.error and at.dataframe, texts(at.error)
    else:
        assert_message(at, "error", message)


@pytest.mark.parametrize("case", TYPED)
def test_typed_text_in_the_ablation_lab(app, store_path, loaded, case) -> None:
    text, message = TYPED[case]
    before = fingerprint(store_path)
    at = app("ablation", {"sae": SAE, "features": "3"})
    widget(at.radio, "Text").set_value("Typed text")
    widget(at.checkbox, "Generate").uncheck()
    widget(at.text_area, "Typed text").set_value(text)
    at = widget(at.button, "Run on the text").click().run()
    assert_no_traceback(at)
    after = fingerprint(store_path)
    with Store.open(store_path) as store:
        ledger = store.interventions()
    if message is None:  # a valid run is recorded, and nothing else changes
        assert not at.error, texts(at.error)
        assert after["interventions"][0] == before["interventions"][0] + 1
        n_tokens = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert json.loads(ledger.iloc[0]["metrics"])["n_tokens"] == n_tokens
    else:
        assert_message(at, "error", message)
        assert after["interventions"] == before["interventions"]
    assert {t: v for t, v in after.items() if t != "interventions"} == {
        t: v for t, v in before.items() if t != "interventions"
    }


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("", "Type at least one example"),
        ("\n \n\t", "Type at least one example"),
        ("\n".join(f"example {n}" for n in range(11)), "at most 10 examples"),
        ("x" * 501, "at most 500 per line"),
        (" ".join(map(str, range(120))), N_CTX_MESSAGE),
        ("😀🚀 مرحبا\n\x00\x1b[31m", None),
    ],
)
def test_typed_examples_on_the_rankings_page(app, unchanged, lines, message) -> None:
    at = app("rankings", {"sae": SAE, "tab": "Features of typed examples"})
    at.text_area(key="rankings_page.examples_text").set_value(lines)
    at = widget(at.button, "Find features").click().run()
    assert_no_traceback(at)
    if message is None:
        assert not at.error, texts(at.error)
    else:
        assert_message(at, "error", message)


@pytest.mark.parametrize(
    "text", ["a\udc80b", "\ud83d", "", " \t", "x" * (MAX_TEXT_CHARS + 1), "1 " * 80]
)
def test_the_live_model_refuses_text_it_cannot_read(loaded, text) -> None:
    """Straight through the library (a browser cannot send a lone surrogate)."""
    with pytest.raises(InputError):
        encode_text(loaded, SAE, text)
    with pytest.raises(InputError):
        text_effect(loaded, Intervention(SAE, (3,)), text)


# -- feature ids and SAEs -----------------------------------------------------------------

BAD_FEATURE_URL = {
    "-1": "out of range",
    str(D_SAE): "out of range",
    "9" * 30: "out of range",
    "9" * 5000: "out of range",
    "--5": "not an integer",
    "abc": "not an integer",
    "1.5": "not an integer",
    "1e3": "not an integer",
    "²": "not an integer",
    "": "not an integer",
}


@pytest.mark.parametrize("feature", BAD_FEATURE_URL)
def test_feature_ids_forged_in_the_feature_page_url(app, unchanged, feature) -> None:
    at = app("feature", {"sae": SAE, "feature": feature})
    assert_message(at, "warning", BAD_FEATURE_URL[feature])
    assert all(len(message) < 400 for message in texts(at.warning))
    assert at.title[0].value.startswith(f"{SAE} · feature ")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("-1", "A feature id must be an integer from 0 to"),
        (str(D_SAE), "out of range"),
        ("²", "'²' is not one"),
        ("9" * 199, "out of range"),
        ("0x10", "'0x10' is not one"),
        ("1;2", "'1;2' is not one"),
        ("0 1 2 3 4 5 6 7 8", "at most 8"),
    ],
)
def test_feature_ids_typed_on_the_token_page(app, unchanged, typed, message) -> None:
    at = app("tokens")
    at = widget(at.text_input, "Features").set_value(typed).run()
    assert_no_traceback(at)
    assert_message(at, "error", message)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"features": "-1"}, "'-1' is out of range"),
        ({"features": str(D_SAE)}, "out of range"),
        ({"features": "²"}, "'²' is not one"),
        ({"features": " ".join(map(str, range(33)))}, "at most 32"),
        ({"features": "9" * 5000}, "Ignored features="),
        ({"positions": "0"}, "A token position must be an integer from 1"),
        ({"positions": "²"}, "A token position must be an integer from 1"),
        ({"positions": "-3"}, "A token position must be an integer from 1"),
        ({"mode": "scale", "value": "nan"}, "value must be a number such as 0.5"),
        ({"mode": "clamp", "value": "1e400"}, "value must be a number such as 0.5"),
        ({"mode": "delete"}, "choose one of zero"),
        ({"sae": "L9.resid_post"}, "choose one of L0.resid_post"),
    ],
)
def test_forged_ablation_links(app, unchanged, params, message) -> None:
    at = app("ablation", params)
    assert_message(at, "warning", message)
    assert at.title[0].value == "Ablation lab" and at.button


@pytest.mark.parametrize("typed", ["²", "-1", "9" * 300, "1 2 x"])
def test_positions_typed_in_the_ablation_sidebar(app, unchanged, typed) -> None:
    at = app("ablation", {"sae": SAE})
    at = at.text_input(key="url_positions").set_value(typed).run()
    assert_no_traceback(at)
    assert_message(at, "warning", "is not a position|Using")


@pytest.mark.parametrize("feature", [D_SAE, 10_000_000])
def test_co_activation_feature_out_of_range(app, unchanged, feature) -> None:
    at = app("rankings", {"sae": SAE})
    at = at.number_input(key=f"rankings_page.feature.{SAE}").set_value(feature).run()
    assert_no_traceback(at)
    assert_message(at, "error", f"{feature} is out of range")


@pytest.mark.parametrize(
    "page", ["feature", "frequency", "rankings", "taxonomy", "logit_lens", "search", "ablation"]
)
def test_an_unknown_sae_in_the_url(app, unchanged, page) -> None:
    at = app(page, {"sae": "L9.resid_post"})
    assert_message(at, "warning", "L9.resid_post")
    assert at.title


def test_unknown_saes_and_features_in_the_library(store_path) -> None:
    with Store.open(store_path) as store:
        for bad in (-1, D_SAE, 2**70, 1.0, "3", True, None):
            with pytest.raises(InputError):
                store.check_feature(SAE, bad)
        with pytest.raises(StoreError, match="Unknown SAE"):
            store.feature_topk("L9.resid_post", 3)


# -- stores -------------------------------------------------------------------------------


def older_schema_copy(store_path: Path, folder: Path) -> Path:
    old = folder / "old.duckdb"
    shutil.copy(store_path, old)
    with duckdb.connect(str(old)) as con:
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    return old


UNUSABLE = "is not a store this app can open"  # the one message of Store.open's path checks


def bad_stores(store_path: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """Store paths a user may give, with the message each gets."""
    garbage = folder / "garbage.duckdb"
    garbage.write_bytes(bytes(range(256)) * 64)
    text = folder / "notes.txt"
    text.write_text("not a store\n")
    partial = folder / "partial.duckdb"
    with duckdb.connect(str(partial)) as con:
        con.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    folder_store = folder / "a_folder.duckdb"
    folder_store.mkdir()
    return {
        "missing": (folder / "missing.duckdb", UNUSABLE),
        "not a DuckDB file": (garbage, UNUSABLE),
        "a text file": (text, UNUSABLE),
        "missing tables": (partial, "not a complete feature store"),
        "a folder": (folder_store, UNUSABLE),
        "older schema version": (older_schema_copy(store_path, folder), "has schema version 2"),
    }


STORE_CASES = [
    "missing",
    "not a DuckDB file",
    "a text file",
    "missing tables",
    "a folder",
    "older schema version",
]
STORE_PAGES = ["feature", "specialists", "frequency", "tokens", "rankings", "taxonomy"]
STORE_PAGES += ["logit_lens", "search", "compare", "ablation"]


@pytest.mark.parametrize("case", STORE_CASES)
def test_bad_stores_on_every_page_and_the_cli(
    store_path, tmp_path, monkeypatch, capsys, case
) -> None:
    path, message = bad_stores(store_path, tmp_path)[case]
    before = file_digest(path) if path.is_file() else None
    monkeypatch.setenv("EXPLORER_SOURCE", NO_SOURCE)  # not the demo: no first-run build
    monkeypatch.setenv("EXPLORER_STORE", str(path))
    monkeypatch.chdir(ROOT)
    for page in STORE_PAGES:
        at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120).run()
        assert_no_traceback(at)
        assert_message(at, "error", re.escape(message))
        assert not at.dataframe and not at.get("arrow_vega_lite_chart")
    for command in (["info", str(path)], ["export", str(path), "--table", "texts"]):
        assert main(command) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err
    assert (file_digest(path) if path.is_file() else None) == before


SIDEBAR_SOURCES = {
    "warp:drive": "cannot read the source 'warp:drive'",
    "": "cannot read the source ''",
    "local:": "needs at least one path",
    "registry:": "needs a release",
    "demo:/nonexistent/bundle": "No complete demo bundle",
    "topk:/nonexistent.pt@model#hook": "does not exist",
    "x" * 400: "cannot read the source",
}


@pytest.mark.parametrize("spec", SIDEBAR_SOURCES)
def test_sources_typed_in_the_sidebar(app, unchanged, spec) -> None:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    at = at.text_input(key="source_spec").set_value(spec).run()
    assert_no_traceback(at)
    assert_message(at, "error", re.escape(SIDEBAR_SOURCES[spec]))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/proc/version", UNUSABLE),
        ("/dev/null", UNUSABLE),  # a device: never opened
        ("x" * 300, "too long"),
    ],
)
def test_stores_typed_in_the_sidebar(app, unchanged, path, message) -> None:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    at = at.text_input(key="store_path").set_value(path).run()
    assert_no_traceback(at)
    assert_message(at, "error", message)


def test_an_older_demo_store_is_rebuilt_keeping_its_labels(
    tiny_bundle_path, store_path, tmp_path, monkeypatch
) -> None:
    """With the demo source, the app rebuilds a store of an older schema on first run."""
    old = older_schema_copy(store_path, tmp_path)
    with duckdb.connect(str(old), read_only=True) as con:
        labels = con.execute("SELECT * FROM labels ORDER BY created_at").fetchall()
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(old))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(PAGES / "frequency.py"), default_timeout=240).run()
    assert_no_traceback(at)
    assert not at.error and at.metric
    with Store.open(old) as store:
        assert store.meta()["schema_version"] != "2"
        with store.cursor() as cursor:
            assert cursor.execute("SELECT * FROM labels ORDER BY created_at").fetchall() == labels


# -- corpus files (CLI) -------------------------------------------------------------------

CORPUS_FILES: dict[str, tuple[str, bytes, str]] = {
    "wrong columns": ("wrong.csv", b"foo,bar\n1,2\n", "missing columns 'text', 'category'"),
    "empty csv": ("empty.csv", b"", "the corpus is empty"),
    "empty jsonl": ("empty.jsonl", b"", "the corpus is empty"),
    "blank lines only": ("blank.jsonl", b"\n \n\n", "the corpus is empty"),
    "header only": ("header.csv", b"text,category\n", "the corpus is empty"),
    "binary csv": ("binary.csv", bytes(range(128, 256)) * 8, "not UTF-8 text"),
    "binary jsonl": ("binary.jsonl", b"\x00\x9f\x92\x96" * 64, "not UTF-8 text|invalid JSON"),
    "binary parquet": ("binary.parquet", bytes(range(256)) * 4, "cannot read the .parquet"),
    "latin-1 csv": ("latin1.csv", b"text,category\ncaf\xe9,x\n", "not UTF-8 text"),
    "not JSON": ("broken.jsonl", b'{"text": "a", "category": \n', "invalid JSON"),
    "not an object": ("list.jsonl", b"[1, 2]\n", "expected a JSON object"),
    "lone surrogate": ("surrogate.jsonl", b'{"text": "a\\udc80", "category": "x"}\n', "(?i)utf-8"),
    "empty text": ("blanks.csv", b"text,category\n,x\n", "the text is empty"),
    "text not a string": ("types.jsonl", b'{"text": 5, "category": "x"}\n', "must be a string"),
    "unterminated quote": ("quote.csv", b'text,category\n"open,x\n', "cannot parse the CSV"),
    "unknown type": ("corpus.xlsx", b"PK\x03\x04", "unsupported file type"),
}


@pytest.mark.parametrize("case", CORPUS_FILES)
def test_malformed_corpus_files_in_the_cli(
    tiny_bundle_path, unchanged, tmp_path, capsys, case
) -> None:
    name, data, message = CORPUS_FILES[case]
    corpus = tmp_path / name
    corpus.write_bytes(data)
    argv = ["build", f"--source=demo:{tiny_bundle_path}", f"--corpus={corpus}"]
    assert main([*argv, f"--out={unchanged}"]) == 2
    captured = capsys.readouterr()
    assert re.search(message, captured.err), captured.err
    assert str(corpus) in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hooks=L9.resid_post"], "L9.resid_post"),
        (["--corpus=arithmetic:²"], "whole number"),
        (["--corpus=arithmetic:x"], "whole number"),
        (["--corpus=no-such-corpus"], "Unknown corpus"),
        (["--batch-size=0"], "batch"),
        (["--max-texts=-5"], "max_texts|max-texts"),
        (["--source=demo:/nonexistent/bundle"], "/nonexistent/bundle"),
        (["--source=warp:drive"], "cannot read the source 'warp:drive'"),
    ],
)
def test_bad_build_arguments_in_the_cli(tiny_bundle_path, unchanged, capsys, argv, message) -> None:
    base = [f"--source=demo:{tiny_bundle_path}", "--corpus=arithmetic:10", f"--out={unchanged}"]
    assert main(["build", *base, *argv]) == 2
    captured = capsys.readouterr()
    assert re.search(message, captured.err), captured.err
    assert "Traceback" not in captured.err


# -- forged query parameters on every page ------------------------------------------------

FORGED = {
    "negative": "-1",
    "huge": "9" * 40,
    "not a number": "nan",
    "superscript digit": "²",
    "sql": "' OR 1=1; DROP TABLE labels; --",
    "html": "<script>window.__pwned=1</script><img src=x onerror=alert(1)>",
    "very long": "x" * 5000,
    "control and rtl": "\x00\x1b[2J\u202eevil",
}


@pytest.mark.parametrize("forged", FORGED)
@pytest.mark.parametrize("page", PAGE_PARAMS)
def test_forged_query_parameters(app, unchanged, page, forged) -> None:
    """Every parameter of the page (and one it does not know) forged at once."""
    value = FORGED[forged]
    params = {param: value for param in [*PAGE_PARAMS[page], "unknown_param"]}
    at = app(page, params)
    assert at.title, "the page stopped before its title"
    for message in texts(at.warning) + texts(at.error):
        assert len(message) < 1000, message[:200]
    echoed = [message for message in texts(at.warning) if value[:20] in message]
    assert len(echoed) <= len(PAGE_PARAMS[page])
    if PAGE_PARAMS[page]:  # each page has a parameter with fixed choices (sae, measure, by)
        assert at.warning, f"{page} took {forged} parameters without a word"
    else:
        assert not at.warning and not at.error


def page_parameters(page: str) -> set[str]:
    """The query parameters a page reads: `url_value(param)`, `url_*(label, param, ...)`,
    `st.query_params.get`, the specialist sidebar's fields, the family and replication
    choices of `explorer.ui.specialist_views` and the second store's picker."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((PAGES / f"{page}.py").read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        if name == "url_value" and node.args:  # the raw value of one parameter
            found.add(ast.literal_eval(node.args[0]))
        elif name.startswith("url_") and len(node.args) >= 2:
            found.add(ast.literal_eval(node.args[1]))
        elif name == "get" and "query_params" in ast.unparse(node.func):
            found.add(ast.literal_eval(node.args[0]))
        elif name == "specialist_settings_sidebar":
            found.update(SPECIALIST_PARAMS)
        elif name in ("family_choice", "choose_family", "family_specialists"):  # specialist_views
            found.add("family")
        elif name == "replication_choice":
            found.add("replicate_on")
        elif name in ("second_store", "second_store_path"):  # explorer.ui.second_store
            found.add("compare")
    return found


def test_the_forged_links_cover_every_parameter_of_every_page() -> None:
    pages = sorted(path.stem for path in PAGES.glob("*.py"))
    assert pages == sorted(PAGE_PARAMS)
    for page in pages:
        assert page_parameters(page) == set(PAGE_PARAMS[page]), page


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("nope", "'nope'"),
        ("<b>", r"'\<b\>'"),
        ("![p](https://x/p.png)", r"'\!\[p\]\(https\://x/p.png\)'"),
        ("`code` $x$", r"'\`code\` \$x\$'"),
        ("back\\slash", r"'back\\\\slash'"),  # repr's escape, escaped for Markdown
        ("x" * 500, "'" + "x" * 80 + "'"),
    ],
)
def test_messages_quote_user_values_without_markdown(value, shown) -> None:
    assert quoted(value) == shown


@pytest.mark.slow
def test_public_demo_limits_bound_a_corpus_run(store_path, loaded) -> None:
    """Within the public demo's limits a corpus run gives the same numbers as without them
    (smaller batches only); over them it is refused before any model run."""
    with Store.open(store_path) as store:
        texts = store.texts()
    limits = LiveLimits(max_features=2, max_dose_scales=1, corpus_batch_size=3)
    two = Intervention(SAE, (3, 5), "zero")
    free = run_corpus(loaded, texts, two, scales=(0.5,))
    bounded = run_corpus(loaded, texts, two, scales=(0.5,), limits=limits)
    pd.testing.assert_frame_equal(bounded.effects, free.effects, rtol=1e-3, atol=1e-5)
    with pytest.raises(InputError, match="at most 2 features"):
        run_corpus(loaded, texts, Intervention(SAE, (3, 5, 7), "zero"), limits=limits)
    with pytest.raises(InputError, match="at most 1 scales"):
        run_corpus(loaded, texts, two, scales=(0.5, 2.0), limits=limits)


def test_the_public_demo_settings_carry_the_limits() -> None:
    assert Settings(public_demo=True).live_limits == PUBLIC_LIVE_LIMITS
    assert Settings(public_demo=False).live_limits is None
    assert PUBLIC_LIVE_LIMITS.max_features <= MAX_FEATURES
    assert PUBLIC_LIVE_LIMITS.max_dose_scales <= len(DOSE_SCALES)


@pytest.mark.parametrize(
    ("category", "code_point"),
    [
        ("\u202eedoc", "U+202E"),  # shows as 'code'
        ("\u200b", "U+200B"),  # shows as nothing
        ("co\u2066de", "U+2066"),
        ("tab\there", "U+0009"),
    ],
)
def test_categories_that_would_look_like_others_are_refused(tmp_path, category, code_point):
    corpus = tmp_path / "confusable.csv"
    pd.DataFrame(
        {"text": ["def f(): pass", "x = 1", "print(2)"], "category": ["code", "code", category]}
    ).to_csv(corpus, index=False)
    with pytest.raises(CorpusError) as refused:
        load_corpus_file(corpus)
    message = str(refused.value)
    assert "row 3, column 'category'" in message
    assert code_point in message
    assert unicodedata.name(chr(int(code_point[2:], 16)), "a control character") in message
    with pytest.raises(CorpusError, match=rf"rule 2.*{re.escape(code_point)}"):
        label_by_rules(["a", "b"], [("code", "a"), (category, "b")])
    with pytest.raises(CorpusError, match=re.escape(code_point)):
        label_by_rules(["a", "b"], [("code", "a")], default=category)


def test_visible_categories_load_as_written(tmp_path) -> None:
    corpus = tmp_path / "visible.csv"
    names = ["code", "édoc", "日本語", "emoji 🙂", "a-b_c.d", "right\u05d0to"]
    pd.DataFrame({"text": [f"text {n}" for n in range(6)], "category": names}).to_csv(
        corpus, index=False
    )
    assert load_corpus_file(corpus).categories() == sorted(names)


# -- store paths ------------------------------------------------------------------------


def unusable_paths(folder: Path) -> dict[str, Path]:
    """One path of each kind a store path cannot be."""
    (folder / "texts.csv").write_text("text,category\nhello,greeting\n")
    (folder / "notes.txt").write_text("not a store")
    os.mkfifo(folder / "pipe.duckdb")
    (folder / "dangling.duckdb").symlink_to(folder / "gone.duckdb")
    (folder / "sub").mkdir()
    return {
        "missing": folder / "missing.duckdb",
        "folder": folder / "sub",
        "fifo": folder / "pipe.duckdb",
        "dangling symlink": folder / "dangling.duckdb",
        "too long": folder / ("x" * 5000),
        "csv": folder / "texts.csv",
        "text file": folder / "notes.txt",
    }


def test_every_unusable_store_path_gets_one_message(tmp_path) -> None:
    """Whatever is wrong with a store path, `Store.open` says the same thing (so a message
    cannot tell which files exist), with no OS or DuckDB wording, and never opens a FIFO
    (opening one would block until a writer comes)."""
    messages = {}
    for kind, path in unusable_paths(tmp_path).items():
        outcome: list[BaseException] = []

        def attempt(path=path, outcome=outcome) -> None:
            try:
                Store.open(path)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout=20)
        assert not thread.is_alive(), f"Store.open blocked on the {kind}"
        assert len(outcome) == 1 and isinstance(outcome[0], StoreError), (kind, outcome)
        messages[kind] = str(outcome[0]).replace(quoted(str(path.absolute()), 200), "PATH")
    assert len(set(messages.values())) == 1, messages
    message = messages["missing"]
    assert message.startswith("PATH is not a store this app can open.")
    for leak in ("Errno", "DuckDB", "read-only", "PID", sys.executable, "File name too long"):
        assert leak not in message


def test_a_link_names_a_known_store_never_a_path(
    store_path, tiny_bundle_path, tmp_path, monkeypatch
) -> None:
    """`taxonomy?compare=` takes the file name of a store in the cache folder; a path (even
    of that same store, or of a FIFO) or an unknown name gets the one link warning and no
    comparison."""
    cache = tmp_path / "cache"
    cache.mkdir()
    other = cache / "other.duckdb"
    shutil.copy(store_path, other)
    unusable_paths(tmp_path)
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(cache))
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(ROOT)

    def taxonomy(compare: str) -> AppTest:
        at = AppTest.from_file(str(PAGES / "taxonomy.py"), default_timeout=120)
        at.query_params["compare"] = compare
        at.run()
        assert_no_traceback(at)
        return at

    at = taxonomy("other.duckdb")
    assert not at.warning and not at.error, texts(at.warning) + texts(at.error)
    assert widget(at.selectbox, "Second store (optional)").value == "other.duckdb"
    for link in [str(other), str(tmp_path / "pipe.duckdb"), "/etc/passwd", "../other.duckdb"]:
        at = taxonomy(link)
        assert not at.error, texts(at.error)
        warnings = [w for w in texts(at.warning) if "compare" in w]
        assert len(warnings) == 1 and "choose one of none, other.duckdb" in warnings[0]
        assert widget(at.selectbox, "Second store (optional)").value == "none"


def test_a_missing_store_path_is_built_only_when_asked(
    store_path, tiny_bundle_path, tmp_path, monkeypatch
) -> None:
    """A store path typed in the sidebar that does not exist gets a message and a button;
    nothing is written there until the button is pressed. A dangling symlink gets the
    unusable-path message and no button."""
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    assert_no_traceback(at)
    missing = tmp_path / "typo.duckdb"
    at.sidebar.text_input(key="store_path").set_value(str(missing)).run()
    assert_no_traceback(at)
    assert_message(at, "warning", "does not exist")
    assert [b.label for b in at.button] == ["Build the demo store here"]
    assert not missing.exists() and list(tmp_path.iterdir()) == []

    (tmp_path / "dangling.duckdb").symlink_to(tmp_path / "gone.duckdb")
    at.sidebar.text_input(key="store_path").set_value(str(tmp_path / "dangling.duckdb")).run()
    assert_message(at, "error", "is not a store this app can open")
    assert not at.button and not (tmp_path / "gone.duckdb").exists()
