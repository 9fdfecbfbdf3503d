"""Values from a link, read in the project's words: whole numbers and decimals refused with a
message naming the parameter and the allowed range (never Python's "invalid literal" or
"Exceeds the limit"), unicode digits refused like other non-ASCII input, and a parameter the
link repeats warned about instead of silently taking its last value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explorer.errors import InputError, bounded_int
from explorer.ui.params import parse_float

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "app_pages" / "rankings.py")  # url_int, url_selectbox, the specialist floats
FEATURE_PAGE = str(ROOT / "app_pages" / "feature.py")
PYTHON_WORDS = ("invalid literal", "Exceeds the limit", "could not convert", "base 10")
ARABIC_30 = "\u0663\u0660"  # '٣٠': int() and float() would read it as 30


@pytest.mark.parametrize(
    ("value", "expected"),
    [("30", 30), (" 30 ", 30), ("-4", -4), (np.int64(12), 12), (7, 7)],
)
def test_bounded_int_reads_ascii_whole_numbers(value, expected) -> None:
    assert bounded_int("n", value, -10, 100) == expected


@pytest.mark.parametrize(
    ("value", "ending"),
    [
        (ARABIC_30, "is not one."),
        ("\u00b2", "is not one."),  # superscript two
        ("3.0", "is not one."),
        ("1e3", "is not one."),
        ("+5", "is not one."),
        ("", "is not one."),
        ("9" * 5000, "is out of range."),
        ("101", "is out of range."),
        (True, "is not one."),
        (2.0, "is not one."),
    ],
)
def test_bounded_int_refuses_in_one_wording(value, ending) -> None:
    with pytest.raises(InputError) as caught:
        bounded_int("n", value, -10, 100)
    message = str(caught.value)
    assert message.startswith("n must be an integer from -10 to 100; ")
    assert message.endswith(ending)
    assert len(message) < 200  # a 5,000-digit value is quoted cut short
    assert not any(words in message for words in PYTHON_WORDS)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999", "\u0661.\u0665", "0,5", "x"])
def test_linked_decimals_must_be_finite_ascii_numbers(raw) -> None:
    with pytest.raises(InputError, match="must be a number such as 0.5") as caught:
        parse_float(raw, "share")
    assert not any(words in str(caught.value) for words in PYTHON_WORDS)


def test_linked_decimals_are_read_as_python_does_when_plain() -> None:
    assert [parse_float(raw) for raw in ["0.5", " -2 ", "1e-3", ".25"]] == [0.5, -2.0, 1e-3, 0.25]


def warnings_of(at) -> str:
    return " ".join(warning.value for warning in at.warning)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"n": ARABIC_30}, "n must be an integer from 10 to 500"),
        ({"n": "9" * 5000}, "is out of range"),
        ({"n": "abc"}, "is not one"),
        ({"n": "12.5"}, "is not one"),
        ({"share": "nan"}, "Ignored share='nan' from the link: share must be a number"),
        ({"min_auroc": "\u0660.\u0667"}, "must be a number such as 0.5"),
    ],
)
def test_bad_linked_values_get_the_projects_words_and_the_default(page, params, expected):
    page.query_params.update(params)
    at = page.run()
    assert not at.exception and not at.error
    shown = warnings_of(at).replace("\\", "")  # messages are Markdown-escaped
    assert expected in shown and "Using the default" in shown
    assert not any(words in shown for words in PYTHON_WORDS)
    ranked = next(df.value for df in at.dataframe if "link" in df.value.columns)
    assert len(ranked) == 25  # the default number of features


def test_a_repeated_parameter_is_warned_about_and_the_last_value_used(page) -> None:
    page.query_params.update({"n": ["30", "40"]})
    at = page.run()
    assert not at.exception and not at.error
    shown = warnings_of(at).replace("\\", "")
    assert "The link gives n 2 times ('30', '40'); using the last, '40'." in shown
    ranked = next(df.value for df in at.dataframe if "link" in df.value.columns)
    assert len(ranked) == 40


def test_one_value_per_parameter_gives_no_warning(page) -> None:
    page.query_params.update({"n": "30"})
    at = page.run()
    assert not at.warning and not at.exception
    assert len(next(df.value for df in at.dataframe if "link" in df.value.columns)) == 30


def test_the_feature_page_warns_about_repeated_and_unicode_feature_ids(
    store_path, tiny_bundle_path, monkeypatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("EXPLORER_SOURCE", f"demo:{tiny_bundle_path}")
    monkeypatch.setenv("EXPLORER_STORE", str(store_path))
    at = AppTest.from_file(FEATURE_PAGE, default_timeout=120)
    at.query_params.update({"sae": "L1.resid_post", "feature": ["3", "5"]})
    at.run()
    assert not at.exception
    assert "The link gives feature 2 times" in warnings_of(at).replace("\\", "")
    assert at.number_input[0].value == 5

    again = AppTest.from_file(FEATURE_PAGE, default_timeout=120)
    again.query_params.update({"sae": "L1.resid_post", "feature": "\u0663"})  # '٣'
    again.run()
    assert not again.exception
    shown = warnings_of(again)
    assert "is not an integer" in shown  # not read as 3
    assert f"showing feature {again.number_input[0].value}." in shown  # the first live one
