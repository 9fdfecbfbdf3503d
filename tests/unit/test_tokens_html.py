"""Token highlighting HTML: escaping, colour intensity, hover values, windows and newlines."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from explorer.charts.tokens_html import (
    GREY,
    TARGET_COLOR,
    Highlight,
    context_window,
    display_token,
    examples_html,
    feature_highlights,
    highlight_html,
    legend_html,
    visible_text,
    window_html,
)

ALPHA = re.compile(r"background-color:rgba\((\d+),(\d+),(\d+),([0-9.]+)\)")


class Spans(HTMLParser):
    """Collects every tag with its attributes, and each token span's text and style."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.tokens: list[dict] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "span" and "title" in attributes:
            self._open = {"title": attributes["title"], "style": attributes["style"], "text": ""}
            self.tokens.append(self._open)

    def handle_endtag(self, tag):
        if tag == "span":
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data


def parse(html: str) -> Spans:
    parser = Spans()
    parser.feed(html)
    parser.close()
    return parser


def alpha(style: str) -> float:
    match = ALPHA.search(style)
    return float(match.group(4)) if match else 0.0


def colour(style: str) -> tuple[int, int, int] | None:
    match = ALPHA.search(style)
    return tuple(int(match.group(i)) for i in (1, 2, 3)) if match else None


def test_script_tokens_are_escaped_and_come_back_as_text():
    tokens = ["<script>", "alert(1)", "</script>"]
    html = highlight_html(tokens, [1.0, 0.5, 0.0], [Highlight("f", 1.0)])
    assert "<script" not in html and "</script" not in html
    assert ">&lt;script&gt;</span>" in html and ">&lt;/script&gt;</span>" in html
    parsed = parse(html)
    assert [token["text"] for token in parsed.tokens] == tokens
    assert {tag for tag, _ in parsed.tags} == {"div", "span"}


@pytest.mark.parametrize(
    "token",
    ['" onmouseover="alert(1)', "' onmouseover='alert(1)", '"><img src=x onerror=alert(1)>'],
)
def test_quotes_cannot_break_out_of_attributes(token):
    html = highlight_html([token], [0.7], [Highlight('f "1"', 1.0)])
    parsed = parse(html)
    assert [tag for tag, _ in parsed.tags] == ["div", "span"]
    (span,) = parsed.tokens
    assert set(parsed.tags[1][1]) == {"style", "title"}
    assert span["text"] == token
    assert span["title"] == f'token {token!r}\nf "1": 0.7'
    assert "&quot;" in html or "&#x27;" in html


def test_intensity_is_proportional_to_the_value_and_capped_at_full_colour():
    values = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 3.0]
    parsed = parse(highlight_html(list("abcdefg"), values, [Highlight("f", 2.0)]))
    alphas = [alpha(token["style"]) for token in parsed.tokens]
    np.testing.assert_allclose(alphas, [0.0, 0.05, 0.125, 0.25, 0.375, 0.5, 1.0], atol=1e-3)
    assert "background-color" not in parsed.tokens[0]["style"]
    assert all(colour(t["style"]) == TARGET_COLOR for t in parsed.tokens[1:])


def test_hover_shows_the_exact_value_of_every_feature():
    highlights = feature_highlights(["L1 #3", "L1 #40"], [1.0, 0.5])
    parsed = parse(highlight_html([" the", "\n"], [[0.12345, 0.0], [0.2, 0.4]], highlights))
    assert parsed.tokens[0]["title"] == "token ' the'\nL1 #3: 0.1235\nL1 #40: 0"
    assert parsed.tokens[1]["title"] == "token '\\n'\nL1 #3: 0.2\nL1 #40: 0.4"


def test_each_token_takes_the_colour_of_its_strongest_feature_relative_to_its_scale():
    highlights = feature_highlights(["a", "b"], [1.0, 0.1])
    parsed = parse(highlight_html(["x", "y", "z"], [[0.5, 0.02], [0.5, 0.08], [0, 0]], highlights))
    first, second, third = parsed.tokens
    assert colour(first["style"]) == highlights[0].color and alpha(first["style"]) == 0.5
    assert colour(second["style"]) == highlights[1].color
    assert alpha(second["style"]) == pytest.approx(0.8)
    assert colour(third["style"]) is None
    assert highlights[0].color != highlights[1].color


def test_whitespace_and_control_characters_are_visible():
    assert visible_text("a\tb\r\n\x07\u200b") == "a⇥b␍↵\\x07\\u200b"
    assert display_token("x\ny") == "x↵<br>y"
    assert display_token("x\ny", "symbol") == "x↵y"
    assert display_token("<&>") == "&lt;&amp;&gt;"
    assert visible_text(" two spaces ") == " two spaces "


def test_context_window_cuts_around_the_centre_and_marks_the_cuts():
    assert context_window(10, 5, 2, 1) == slice(3, 7)
    assert context_window(10, 1, 4, 20) == slice(0, 10)
    with pytest.raises(ValueError):
        context_window(3, 3, 1, 1)
    tokens = [f"t{i}" for i in range(10)]
    values = np.arange(10) / 10
    html = window_html(tokens, values, 5, Highlight("f", 1.0), before=2, after=1)
    parsed = parse(html)
    assert [t["text"] for t in parsed.tokens] == ["t3", "t4", "t5", "t6"]
    assert html.count("…") == 2
    assert "outline" in parsed.tokens[2]["style"]
    assert sum("outline" in t["style"] for t in parsed.tokens) == 1
    whole = window_html(tokens, values, 0, Highlight("f", 1.0), before=3, after=20)
    assert "…" not in whole


def test_examples_table_escapes_captions_and_colours_each_example():
    windows = pd.DataFrame(
        {
            "example": [0, 0, 1],
            "token": ["a", "\n", "<b>"],
            "value": [0.5, 0.0, 1.0],
            "center": [True, False, True],
            "cut_before": [True, True, False],
            "cut_after": [False, False, False],
        }
    )
    html = examples_html(
        windows, {1: "second <i>", 0: "first & one"}, Highlight("f", 1.0), {1: GREY}
    )
    parsed = parse(html)
    assert "<i>" not in html and "second &lt;i&gt;" in html and "first &amp; one" in html
    assert html.index("second") < html.index("first")
    assert [t["text"] for t in parsed.tokens] == ["<b>", "a", "↵"]
    assert colour(parsed.tokens[0]["style"]) == GREY
    assert colour(parsed.tokens[1]["style"]) == TARGET_COLOR
    assert "<br>" not in html
    assert "<br>" in examples_html(windows, {0: "x"}, Highlight("f", 1.0), newlines="break")


def test_legend_names_each_feature_escaped():
    html = legend_html(feature_highlights(["<f1>", "f2"], [1.5, 0.25]))
    assert "&lt;f1&gt;" in html and "full colour at 1.5" in html and "0.25" in html
