"""SQL built from user input is always parameterised: SQL metacharacters (`'`, `"`, `;`, `--`,
`%`, `_`, `\\`, comments, UNION) typed into every text field that reaches the store (labels,
notes, the label and token search boxes, category names) are taken literally or refused with
a message, and the store is otherwise unchanged. A static check lists every value formatted
into SQL text in `explorer/`: each is written by the module itself, never typed by a user.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from explorer.analysis.descriptions import described_features, load_descriptions, load_scores
from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.build.single import build_store
from explorer.errors import InputError, StoreError
from explorer.store.queries.relations import category_contrast
from explorer.store.queries.search import search_labels, search_tokens
from explorer.store.reader import Store
from tests.reliability.helpers import ROOT, fingerprint

SAE = "L2.resid_post"
METACHARACTERS = [
    "'",
    '"',
    ";",
    "--",
    "%",
    "_",
    "\\",
    "/*",
    "*/",
    "'; DROP TABLE labels; --",
    "%' OR '1'='1",
    '" OR ""="',
    "\\%",
    "a_b%c\\",
    "' UNION SELECT sae, feature, label, note FROM labels --",
    "x'); DELETE FROM acts; SELECT ('",
]
CATEGORIES = ["it's", 'say "hi"', "50%", "snake_case", "back\\slash", "semi;colon -- note"]


@pytest.fixture(scope="module")
def store_path(tiny_bundle_path, tmp_path_factory) -> Path:
    """A store whose categories are made of metacharacters, with one label per metacharacter
    string (label `<i>[m]` with note `m`) plus plain labels a wildcard would also match."""
    folder = tmp_path_factory.mktemp("sql")
    corpus = folder / "metachar.jsonl"
    rows = [
        {"text": f"Text {n} of {category}: {'words ' * (n % 5)}end.", "category": category}
        for category in CATEGORIES
        for n in range(6)
    ]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = folder / "store.duckdb"
    build_store(f"demo:{tiny_bundle_path}", f"arithmetic:20+{corpus}", path)
    with Store.open(path) as store:
        for feature, text in enumerate(METACHARACTERS):
            store.save_label(SAE, feature, f"<{feature}>[{text}]", text)
        store.save_label(SAE, 100, "plain label")
        store.save_label(SAE, 101, "ab")
    return path


@pytest.fixture
def unchanged(store_path):
    before = fingerprint(store_path)
    yield store_path
    assert fingerprint(store_path) == before


def current_labels(store: Store) -> pd.DataFrame:
    """Each feature's newest label, from `Store.labels` (newest first)."""
    return store.labels().drop_duplicates(["sae", "feature"], keep="first")


def test_labels_and_notes_are_stored_literally(store_path) -> None:
    with Store.open(store_path) as store:
        labels = store.labels(SAE).set_index("feature")
    for feature, text in enumerate(METACHARACTERS):
        assert labels.loc[feature, "label"] == f"<{feature}>[{text}]"
        assert labels.loc[feature, "note"] == text
    assert len(labels) == len(METACHARACTERS) + 2


@pytest.mark.parametrize("text", METACHARACTERS)
def test_saving_a_label_changes_the_labels_table_only(store_path, tmp_path, text) -> None:
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(store_path.read_bytes())
    before = fingerprint(copy, user_data=False)
    with Store.open(copy) as store:
        n_labels = len(store.labels())
        store.save_label(SAE, 7, text + " label", text)
        assert store.labels(SAE, 7)["label"].iloc[0] == (text + " label").strip()
        assert store.labels(SAE, 7)["note"].iloc[0] == text
        assert len(store.labels()) == n_labels + 1
    assert fingerprint(copy, user_data=False) == before  # labels go beside the store file


@pytest.mark.parametrize("text", METACHARACTERS)
def test_label_search_is_literal(unchanged, text) -> None:
    with Store.open(unchanged) as store:
        found = search_labels(store, text)
        labels = current_labels(store)
    query = text.strip().lower()
    expected = labels[labels["label"].str.lower().str.contains(query, regex=False)]
    assert sorted(zip(found["sae"], found["feature"], strict=True)) == sorted(
        zip(expected["sae"], expected["feature"], strict=True)
    )
    assert len(found) < len(labels)  # no wildcard matched every label
    assert (found["label"].str.lower().str.contains(query, regex=False)).all()


@pytest.mark.parametrize("match", ["exact", "substring"])
@pytest.mark.parametrize("text", METACHARACTERS)
def test_token_search_is_literal(unchanged, text, match) -> None:
    with Store.open(unchanged) as store:
        found = search_tokens(store, text, match, max_rank=20, limit=1000)
        with store.cursor() as cursor:
            lens = cursor.execute(
                "SELECT s.sae, l.feature::BIGINT AS feature, l.rank, l.token FROM logit_lens l "
                "JOIN saes s USING (sae_idx) WHERE l.rank BETWEEN 1 AND 20"
            ).df()
    if match == "exact":
        hit = lens["token"].str.strip() == text.strip()
    else:
        hit = lens["token"].str.lower().str.contains(text.lower(), regex=False)
    expected = lens[hit]
    assert sorted(zip(found["sae"], found["feature"], found["rank"], strict=True)) == sorted(
        zip(expected["sae"], expected["feature"], expected["rank"], strict=True)
    )


def test_category_names_with_metacharacters_are_literal(unchanged) -> None:
    with Store.open(unchanged) as store:
        assert set(CATEGORIES) <= set(store.categories()["category"])
        for category in CATEGORIES:
            texts = store.texts(category)
            assert len(texts) == 6 and set(texts["category"]) == {category}
            contrast = category_contrast(store, SAE, category)
            assert (contrast["n_in"] == 6).all()
        for forged in ["%", "_", "' OR '1'='1", "it''s", "50\\%"]:
            assert store.texts(forged).empty
            with pytest.raises(InputError, match="Unknown category"):
                category_contrast(store, SAE, forged)
        table = load_specialists(store, SpecialistSettings()).table
        assert set(CATEGORIES) <= set(table["category"])


@pytest.mark.parametrize("text", [" ", "x" * 201])
def test_empty_or_long_searches_are_refused(unchanged, text) -> None:
    with Store.open(unchanged) as store:
        with pytest.raises(InputError):
            search_labels(store, text)
        with pytest.raises(InputError):
            search_tokens(store, text)
        with pytest.raises(StoreError):
            search_labels(store, "a", sae="' OR 1=1 --")


@pytest.fixture
def page(store_path, tiny_bundle_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    monkeypatch.chdir(ROOT)

    def run(name: str, params: dict[str, str]) -> AppTest:
        at = AppTest.from_file(str(ROOT / "app_pages" / f"{name}.py"), default_timeout=120)
        at.query_params.update(params)
        at = at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return run


@pytest.mark.parametrize("text", METACHARACTERS)
def test_the_search_page_takes_metacharacters_literally(page, unchanged, text) -> None:
    at = page("search", {"by": "label", "q": text})
    with Store.open(unchanged) as store:  # labels and descriptions holding the text, literally
        described = pd.concat(
            [
                described_features(load_descriptions(store, sae), load_scores(store, sae))
                .drop(columns="label")
                .merge(store.labels(sae).drop_duplicates("feature"), how="left")
                for sae in store.saes()["sae"]
            ]
        )
    needle = text.strip().lower()
    holds = described["label"].fillna("").str.lower().str.contains(needle, regex=False)
    holds |= described["description"].str.lower().str.contains(needle, regex=False)
    expected = set(zip(described.loc[holds, "sae"], described.loc[holds, "feature"], strict=True))
    if not expected:
        assert any("No feature matches" in info.value for info in at.info)
    else:
        shown = at.dataframe[0].value
        found = set(zip(shown["sae"], shown["feature"], strict=True))
        assert found <= expected and len(found) == min(len(expected), 200)
    at = page("search", {"by": "token", "match": "substring", "q": text})
    assert not at.error


@pytest.mark.parametrize("text", METACHARACTERS)
def test_the_feature_page_saves_metacharacter_labels_literally(page, store_path, text) -> None:
    before = fingerprint(store_path, user_data=False)
    with Store.open(store_path) as store:
        n_labels = len(store.labels())
    at = page("feature", {"sae": SAE, "feature": "120"})
    at.text_input[0].set_value(f"{text} label")
    at.text_area[0].set_value(text)
    at = next(b for b in at.button if b.label == "Save label").click().run()
    assert not at.exception and not at.error
    assert any("Saved the label" in success.value for success in at.success)
    with Store.open(store_path) as store:
        newest = store.labels(SAE, 120).iloc[0]
        assert len(store.labels()) == n_labels + 1
    assert (newest["label"], newest["note"]) == (f"{text} label".strip(), text)
    assert fingerprint(store_path, user_data=False) == before  # the store file is never written


# Every value formatted into SQL text in explorer/, and why a user never controls it.
REVIEWED_SQL_VALUES: dict[str, set[str]] = {
    # fragments and placeholders written in the module itself
    "explorer/store/queries/feature.py": {"own", "both", "size", "pick"},
    "explorer/store/queries/lens.py": {"CURRENT_LABELS_SQL"},
    "explorer/store/queries/search.py": {"CURRENT_LABELS_SQL", "LIKE_ESCAPE"},
    # the module's constants: the `=` positions subquery, the preview's character count and
    # the LIKE escape character
    "explorer/store/queries/specialists.py": {"_MARKS_SQL"},
    "explorer/store/queries/texts.py": {"PREVIEW_CHARS", "LIKE_ESCAPE"},
    # the one table of kept analyses, a module constant ("derived")
    "explorer/store/derived.py": {"TABLE"},
    # the module's own hash-split expression (its multiplier is a `$multiplier` parameter)
    "explorer/store/queries/descriptions.py": {
        "_HALF_SQL",
        "_HALF_SQL.replace('text_id', 'a.text_id')",
    },
    # table names of the schema (or checked against duckdb_tables() before use), column
    # lists of the schema, aggregate fragments and `?` placeholders written in the store;
    # the store's file path as an escaped string literal (ATTACH takes no parameters)
    "explorer/store/reader.py": {
        "table",
        "feature_filter",
        "t",
        "_RANKED_STATS_SQL.format(raw=_RAW_STATS_FROM_ACTS_SQL)",
        "sql_literal(str(self.path))",
    },
    # the same, plus the writer's row-group constant and the build's file path as an
    # escaped string literal (ATTACH takes no parameters; test_store builds under a folder
    # named with quotes)
    "explorer/store/writer.py": {
        "table",
        "columns",
        "count_sql",
        "ROW_GROUP_ROWS",
        "sql_literal(str(db))",
    },
}

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|DESCRIBE|WITH|ATTACH|COPY)\b")


def formatted_sql_values() -> dict[str, set[str]]:
    """file -> the expressions interpolated into f-strings that hold SQL keywords."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "explorer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.JoinedStr):
                continue
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if SQL_WORDS.search(literal):
                values = {
                    ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)
                }
                found.setdefault(str(path.relative_to(ROOT)), set()).update(values)
    return found


def test_no_sql_is_formatted_from_unreviewed_values() -> None:
    found = formatted_sql_values()
    assert "explorer/store/writer.py" in found  # the check sees the store's SQL
    assert all(path.startswith("explorer/store/") for path in found), "SQL outside store/"
    unreviewed = {
        path: values - REVIEWED_SQL_VALUES.get(path, set())
        for path, values in found.items()
        if values - REVIEWED_SQL_VALUES.get(path, set())
    }
    assert not unreviewed, (
        f"review these SQL f-string values (user input must be `?`): {unreviewed}"
    )
