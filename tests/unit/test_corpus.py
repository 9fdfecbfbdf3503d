"""Tests of explorer.corpus: the bundled and generated sets, file loaders, rule labelling,
CLI specs, and the error messages a user sees for malformed input."""

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from explorer.corpus import (
    COLUMNS,
    MAX_TEXT_CHARS,
    OPERATION_SYMBOLS,
    Corpus,
    arithmetic_corpus,
    bundled_corpus,
    label_by_rules,
    load_corpus_file,
    load_rules_file,
    resolve_corpus,
)
from explorer.errors import CorpusError

BUNDLED_CATEGORIES = [
    "conversational",
    "formal_writing",
    "math_notation",
    "non_english",
    "python_code",
    "social_emoji",
    "urls_web",
]
STEP = re.compile(r"^(\d+)([-+*/])(\d+)=(\d+)$")
SYMBOL_OPERATIONS = {symbol: operation for operation, symbol in OPERATION_SYMBOLS.items()}


@pytest.fixture(scope="module")
def arithmetic() -> Corpus:
    return arithmetic_corpus(400, seed=0)


def corpus_frame(**overrides: list) -> pd.DataFrame:
    """A small user corpus table; override any column, or add one."""
    columns = {
        "text": ["def f(x):\n    return x", "Bonjour à tous", "see https://example.com"],
        "category": ["code", "french", "url"],
    }
    return pd.DataFrame(columns | overrides)


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def assert_error_names(error: pytest.ExceptionInfo[CorpusError], *parts: str) -> None:
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def parse_steps(text: str) -> list[tuple[int, str, int, int]]:
    steps = []
    for chunk in text.split(" | "):
        match = STEP.match(chunk)
        assert match, f"cannot parse step {chunk!r} of {text!r}"
        left, symbol, right, result = match.groups()
        steps.append((int(left), symbol, int(right), int(result)))
    return steps


# --- the bundled labelled set -------------------------------------------------------------


def test_bundled_has_seven_categories_of_at_least_24_distinct_texts():
    corpus = bundled_corpus()

    assert corpus.name == "bundled"
    assert corpus.categories() == BUNDLED_CATEGORIES
    assert corpus.texts["category"].value_counts().min() >= 24
    assert not corpus.texts["text"].duplicated().any()
    assert (corpus.texts["source"] == "bundled").all()
    assert corpus.texts["labels"].map(len).eq(0).all()


def test_bundled_table_has_the_documented_columns_and_ids():
    corpus = bundled_corpus()

    assert tuple(corpus.texts.columns) == COLUMNS
    assert corpus.texts["text_id"].dtype == "int64"
    assert corpus.texts["text_id"].tolist() == list(range(len(corpus)))


def test_bundled_keeps_html_payloads_verbatim():
    texts = bundled_corpus().texts
    web_texts = texts.loc[texts["category"] == "urls_web", "text"]

    assert web_texts.str.contains("<script>alert(1)</script>", regex=False).any()


def test_bundled_texts_are_short_passages():
    lengths = bundled_corpus().texts["text"].str.len()

    assert lengths.min() >= 20
    assert lengths.max() <= 400


# --- the generated arithmetic set ---------------------------------------------------------


def test_arithmetic_steps_are_correct_chained_and_two_to_four_long(arithmetic: Corpus):
    compute = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a // b,
    }
    for text in arithmetic.texts["text"]:
        steps = parse_steps(text)
        assert 2 <= len(steps) <= 4, text
        for (left, symbol, right, result), previous in zip(steps, [None, *steps], strict=False):
            if symbol == "/":
                assert left % right == 0, text
            assert compute[symbol](left, right) == result, text
            if previous is not None:
                assert left == previous[3], text


def test_arithmetic_labels_match_the_numbers_and_operations_in_the_text(arithmetic: Corpus):
    for text, labels in zip(arithmetic.texts["text"], arithmetic.texts["labels"], strict=True):
        numbers = {int(n) for n in re.findall(r"\d+", text)}
        label_numbers = {int(label[4:]) for label in labels if label.startswith("num:")}
        operations = {SYMBOL_OPERATIONS[step[1]] for step in parse_steps(text)}
        label_operations = {label[3:] for label in labels if label.startswith("op:")}

        assert label_numbers == numbers, text
        assert label_operations == operations, text
        assert all(OPERATION_SYMBOLS[op] in text for op in label_operations)
        assert len(labels) == len(set(labels)) == len(numbers) + len(operations)


def test_arithmetic_category_is_the_dominant_operation(arithmetic: Corpus):
    for text, category in zip(arithmetic.texts["text"], arithmetic.texts["category"], strict=True):
        operations = [SYMBOL_OPERATIONS[step[1]] for step in parse_steps(text)]
        counts = Counter(operations)
        top = max(counts.values())
        assert counts[category] == top, text
        if counts[operations[0]] == top:
            assert category == operations[0], text


def test_arithmetic_covers_every_operation_as_a_category(arithmetic: Corpus):
    counts = arithmetic.texts["category"].value_counts()

    assert set(counts.index) == set(OPERATION_SYMBOLS)
    assert counts.min() >= 0.1 * len(arithmetic)


def test_arithmetic_is_deterministic_from_the_seed():
    first = arithmetic_corpus(50, seed=3).texts
    again = arithmetic_corpus(50, seed=3).texts
    other = arithmetic_corpus(50, seed=4).texts

    pd.testing.assert_frame_equal(first, again)
    assert first["text"].tolist() != other["text"].tolist()


def test_arithmetic_round_values_recur_often(arithmetic: Corpus):
    label_share = arithmetic.texts["labels"].explode().value_counts() / len(arithmetic)

    assert label_share["num:100"] >= 0.10
    assert label_share["num:50"] >= 0.10
    assert arithmetic.texts["labels"].map(lambda labels: "op:addition" in labels).any()


def test_arithmetic_texts_are_distinct_with_the_requested_count(arithmetic: Corpus):
    assert len(arithmetic) == 400
    assert arithmetic.texts["text"].is_unique
    assert (arithmetic.texts["source"] == "arithmetic").all()
    assert arithmetic.texts["text_id"].tolist() == list(range(400))


@pytest.mark.parametrize("n_texts", [0, -5, 100_001])
def test_arithmetic_rejects_out_of_range_sizes(n_texts: int):
    with pytest.raises(CorpusError, match="1 to 100,000"):
        arithmetic_corpus(n_texts)


# --- Corpus -------------------------------------------------------------------------------


def test_head_keeps_the_first_texts_with_ids_from_zero(arithmetic: Corpus):
    head = arithmetic.head(7)

    assert len(head) == 7
    assert head.texts["text_id"].tolist() == list(range(7))
    assert head.texts["text"].tolist() == arithmetic.texts["text"].head(7).tolist()
    assert len(arithmetic.head(10_000)) == len(arithmetic)


def test_head_rejects_fewer_than_one_text(arithmetic: Corpus):
    with pytest.raises(CorpusError, match="at least 1"):
        arithmetic.head(0)


# --- file round trips ---------------------------------------------------------------------


def test_csv_round_trip(tmp_path: Path):
    frame = corpus_frame()
    corpus = load_corpus_file(write_csv(tmp_path / "mine.csv", frame))

    assert corpus.name == "mine"
    assert tuple(corpus.texts.columns) == COLUMNS
    assert corpus.texts["text"].tolist() == frame["text"].tolist()
    assert corpus.texts["category"].tolist() == frame["category"].tolist()
    assert (corpus.texts["source"] == "mine").all()
    assert corpus.texts["labels"].tolist() == [[], [], []]


def test_jsonl_round_trip_keeps_labels_and_html(tmp_path: Path):
    records = [
        {"text": "<script>alert(1)</script>", "category": "web", "labels": ["html"]},
        {"text": "  padded text  ", "category": "plain", "labels": []},
    ]
    corpus = load_corpus_file(write_jsonl(tmp_path / "mine.jsonl", records))

    assert corpus.texts["text"].tolist() == ["<script>alert(1)</script>", "padded text"]
    assert corpus.texts["labels"].tolist() == [["html"], []]


def test_json_suffix_is_read_as_json_lines(tmp_path: Path):
    path = write_jsonl(tmp_path / "mine.json", [{"text": "hello there", "category": "a"}])

    assert load_corpus_file(path).texts["text"].tolist() == ["hello there"]


def test_parquet_round_trip_of_a_whole_corpus(tmp_path: Path, arithmetic: Corpus):
    path = tmp_path / "sums.parquet"
    arithmetic.texts.to_parquet(path)
    corpus = load_corpus_file(path)

    expected = arithmetic.texts.assign(source="sums")
    pd.testing.assert_frame_equal(corpus.texts, expected)


def test_csv_labels_are_semicolon_separated(tmp_path: Path):
    frame = corpus_frame(labels=["a;b", "", "c"])
    corpus = load_corpus_file(write_csv(tmp_path / "mine.csv", frame))

    assert corpus.texts["labels"].tolist() == [["a", "b"], [], ["c"]]


def test_custom_column_names(tmp_path: Path):
    frame = pd.DataFrame({"body": ["first text", "second text"], "kind": ["x", "y"]})
    path = write_csv(tmp_path / "custom.csv", frame)
    corpus = load_corpus_file(path, text_column="body", category_column="kind")

    assert corpus.texts["text"].tolist() == ["first text", "second text"]
    assert corpus.categories() == ["x", "y"]


# --- malformed files ----------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    with pytest.raises(CorpusError) as error:
        load_corpus_file(tmp_path / "absent.csv")
    assert_error_names(error, "absent.csv", "not found")


def test_unknown_extension_lists_supported_ones(tmp_path: Path):
    path = tmp_path / "texts.txt"
    path.write_text("hello\n")
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "texts.txt", ".csv", ".jsonl", ".parquet")


def test_invalid_json_names_the_line(tmp_path: Path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok text", "category": "a"}\n\n{"text": "oops",\n')
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "broken.jsonl", "line 3", "invalid JSON")


def test_json_line_that_is_not_an_object(tmp_path: Path):
    path = write_jsonl(tmp_path / "list.jsonl", [{"text": "ok text", "category": "a"}, [1, 2]])
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "list.jsonl", "line 2", "JSON object")


def test_missing_text_column_lists_columns_found(tmp_path: Path):
    path = write_csv(tmp_path / "cols.csv", pd.DataFrame({"body": ["hi"], "category": ["a"]}))
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "cols.csv", "'text'", "columns found: 'body', 'category'")


def test_missing_category_column_lists_columns_found(tmp_path: Path):
    path = tmp_path / "cols.parquet"
    pd.DataFrame({"text": ["hi there"], "label": ["a"]}).to_parquet(path)
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "cols.parquet", "'category'", "columns found: 'text', 'label'")


def test_empty_text_names_row_and_column(tmp_path: Path):
    path = write_csv(tmp_path / "blank.csv", corpus_frame(text=["fine text", "   ", "more"]))
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "blank.csv", "row 2", "column 'text'", "empty")


def test_non_string_text_names_line_and_column(tmp_path: Path):
    records = [{"text": "fine text", "category": "a"}, {"text": 42, "category": "b"}]
    path = write_jsonl(tmp_path / "numbers.jsonl", records)
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "numbers.jsonl", "line 2", "column 'text'", "string")


def test_text_missing_from_one_json_line(tmp_path: Path):
    records = [{"text": "fine text", "category": "a"}, {"category": "b"}]
    path = write_jsonl(tmp_path / "partial.jsonl", records)
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "partial.jsonl", "line 2", "column 'text'", "missing")


def test_non_string_text_in_parquet(tmp_path: Path):
    path = tmp_path / "ints.parquet"
    pd.DataFrame({"text": [1, 2], "category": ["a", "b"]}).to_parquet(path)
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "ints.parquet", "row 1", "column 'text'", "string")


def test_empty_category_names_row_and_column(tmp_path: Path):
    path = write_csv(tmp_path / "nocat.csv", corpus_frame(category=["code", "french", ""]))
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "nocat.csv", "row 3", "column 'category'", "empty")


def test_too_long_text_names_row_and_mentions_truncation(tmp_path: Path):
    long_text = "word " * (MAX_TEXT_CHARS // 5 + 10)
    path = write_csv(tmp_path / "long.csv", corpus_frame(text=["short", "fine", long_text]))
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "long.csv", "row 3", "column 'text'", "20,000", "truncate")


@pytest.mark.parametrize(
    ("file_name", "content"),
    [("empty.csv", ""), ("header.csv", "text,category\n"), ("empty.jsonl", "\n\n")],
)
def test_empty_corpus(tmp_path: Path, file_name: str, content: str):
    path = tmp_path / file_name
    path.write_text(content)
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, file_name, "empty")


def test_malformed_csv_is_a_corpus_error(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    path.write_text("text,category\nhello,a\nworld,b,extra\n")
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "ragged.csv", "line 3")
    assert error.value.__cause__ is not None


def test_corrupt_parquet_is_a_corpus_error(tmp_path: Path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "corrupt.parquet")
    assert error.value.__cause__ is not None


def test_non_utf8_file_is_a_corpus_error(tmp_path: Path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "café", "category": "a"}\n'.encode("latin-1"))
    with pytest.raises(CorpusError) as error:
        load_corpus_file(path)
    assert_error_names(error, "latin1.jsonl", "UTF-8")


# --- rule labelling -----------------------------------------------------------------------


def test_first_matching_rule_wins_and_default_applies():
    rules = [("code", r"\bdef\b|import "), ("url", r"https?://"), ("python_url", r"python")]
    texts = ["import os  # see https://python.org", "visit https://python.org", "nothing here"]
    corpus = label_by_rules(texts, rules, default="plain", name="mine")

    assert corpus.texts["category"].tolist() == ["code", "url", "plain"]
    assert corpus.name == "mine"
    assert (corpus.texts["source"] == "mine").all()


def test_rules_accept_a_series_and_validate_texts():
    with pytest.raises(CorpusError) as error:
        label_by_rules(pd.Series(["fine", ""]), [("a", "x")])
    assert_error_names(error, "row 2", "column 'text'", "empty")


def test_invalid_regex_names_the_rule():
    with pytest.raises(CorpusError) as error:
        label_by_rules(["some text"], [("good", "a+"), ("broken", "(unclosed")])
    assert_error_names(error, "rule 2", "'broken'", "(unclosed")


def test_rules_file_as_object_and_as_list(tmp_path: Path):
    as_object = tmp_path / "object.json"
    as_object.write_text(json.dumps({"url": "https?://", "code": "def "}))
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([["url", "https?://"], ["code", "def "], ["url", "www\\."]]))

    assert load_rules_file(as_object) == [("url", "https?://"), ("code", "def ")]
    assert load_rules_file(as_list) == [("url", "https?://"), ("code", "def "), ("url", "www\\.")]


def test_rules_file_with_invalid_regex_names_file_and_rule(tmp_path: Path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"ok": "a", "bad": "[z-a]"}))
    with pytest.raises(CorpusError) as error:
        load_rules_file(path)
    assert_error_names(error, "rules.json", "rule 2", "'bad'", r"\[z-a\]")  # Markdown-escaped


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"a": "x",\n "b": }', "line 2"),
        ('[["a", "x"], ["b"]]', "rule 2"),
        ('"just a string"', "got str"),
        ("{}", "no rules"),
    ],
)
def test_malformed_rules_file(tmp_path: Path, content: str, expected: str):
    path = tmp_path / "rules.json"
    path.write_text(content)
    with pytest.raises(CorpusError) as error:
        load_rules_file(path)
    assert_error_names(error, "rules.json", expected)


# --- CLI specs ----------------------------------------------------------------------------


def test_resolve_built_in_specs():
    assert resolve_corpus("bundled").categories() == BUNDLED_CATEGORIES
    assert len(resolve_corpus("arithmetic")) == 400
    assert len(resolve_corpus(" arithmetic:25 ")) == 25


def test_resolve_concatenation_renumbers_text_ids():
    corpus = resolve_corpus("bundled+arithmetic:30")
    n_bundled = len(bundled_corpus())

    assert corpus.name == "bundled+arithmetic:30"
    assert len(corpus) == n_bundled + 30
    assert corpus.texts["text_id"].tolist() == list(range(n_bundled + 30))
    assert corpus.texts["source"].value_counts().to_dict() == {
        "bundled": n_bundled,
        "arithmetic": 30,
    }


def test_resolve_file_path(tmp_path: Path):
    path = write_csv(tmp_path / "mine.csv", corpus_frame())

    assert resolve_corpus(str(path)).texts["category"].tolist() == ["code", "french", "url"]


def test_resolve_file_with_rules(tmp_path: Path):
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["def f(): pass", "https://example.com", "hello"]}).to_csv(
        texts, index=False
    )
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"code": r"\bdef\b", "url": "https?://"}))
    corpus = resolve_corpus(f"{texts}?rules={rules}")

    assert corpus.name == "texts"
    assert corpus.texts["category"].tolist() == ["code", "url", "other"]


@pytest.mark.parametrize("spec", ["bundeld", "bundled+nonsense", "no/such/file.csv"])
def test_resolve_unknown_spec_lists_valid_forms(spec: str):
    with pytest.raises(CorpusError) as error:
        resolve_corpus(spec)
    assert_error_names(error, "Unknown corpus", "bundled", "arithmetic:N", "?rules=")


def test_resolve_arithmetic_count_must_be_a_number():
    with pytest.raises(CorpusError, match="whole number"):
        resolve_corpus("arithmetic:many")
