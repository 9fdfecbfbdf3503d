"""Escaped per-token highlight HTML, in the style of Anthropic's and Neuronpedia's dashboards.

Owns turning tokens and activations into an HTML string: one `<span>` per token, its
background colour's intensity proportional to the activation (alpha = value / scale, capped
at 1), the exact value on hover (`title`), whitespace made visible (a newline shows as `↵`,
and breaks the line in whole texts, a tab as `⇥`; other unprintable characters as escapes),
context windows cut around a position with `…` at the cuts, one colour per feature when
several are shown (each token takes the colour of the feature strongest there, relative to
its scale), and a grey variant for texts outside a target category. Every token and caption
goes through `html.escape(text, quote=True)` before it becomes HTML; pages render the result
with `st.html`, which never runs scripts.

Pure functions over plain sequences and DataFrames: no streamlit, no store, no model.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Color = tuple[int, int, int]
Newlines = Literal["break", "symbol"]

TARGET_COLOR: Color = (217, 79, 4)  # the app theme's primary orange
GREY: Color = (107, 114, 128)
FEATURE_COLORS: tuple[Color, ...] = (
    TARGET_COLOR,
    (31, 119, 180),
    (44, 160, 44),
    (148, 103, 189),
    (214, 39, 40),
    (23, 190, 207),
    (140, 86, 75),
    (227, 119, 194),
)
VISIBLE_WHITESPACE = {"\n": "↵", "\t": "⇥", "\r": "␍"}
ELLIPSIS = '<span style="color:#888">…</span>'
BLOCK_STYLE = (
    "font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:0.95rem;"
    "line-height:1.9;white-space:pre-wrap;word-break:break-word;color:#1f2328"
)
TOKEN_STYLE = "border-radius:3px;padding:1px 0"
FOCUS_STYLE = "outline:1.5px solid #1f2328;outline-offset:0"


@dataclass(frozen=True)
class Highlight:
    """How one feature's activations are coloured: full colour at `scale`, named in hovers."""

    label: str
    scale: float
    color: Color = TARGET_COLOR


def escape(text: str) -> str:
    """`html.escape` with quotes, for text and attribute values alike."""
    return html.escape(text, quote=True)


def visible_text(token: str) -> str:
    """A token as plain text with whitespace and control characters made visible: `↵`, `⇥`,
    `␍`, and `\\xNN` / `\\uNNNN` escapes for other unprintable characters."""
    shown = []
    for char in token:
        if char in VISIBLE_WHITESPACE:
            shown.append(VISIBLE_WHITESPACE[char])
        elif char == " " or char.isprintable():
            shown.append(char)
        else:
            shown.append(f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
    return "".join(shown)


def display_token(token: str, newlines: Newlines = "break") -> str:
    """A token's escaped display HTML: `visible_text`, and with `newlines="break"` a line
    break after each `↵` (full texts); `"symbol"` keeps an example on one line."""
    shown = escape(visible_text(token))
    if newlines == "break":
        shown = shown.replace(VISIBLE_WHITESPACE["\n"], VISIBLE_WHITESPACE["\n"] + "<br>")
    return shown


def intensity(value: float, scale: float) -> float:
    """Background alpha of an activation: value / scale, clipped to [0, 1]; 0 when scale <= 0."""
    if scale <= 0 or not np.isfinite(value) or value <= 0:
        return 0.0
    return float(min(value / scale, 1.0))


def highlight_html(
    tokens: Sequence[str],
    values: Sequence[float] | np.ndarray,
    highlights: Sequence[Highlight],
    *,
    focus: int | None = None,
    cut_before: bool = False,
    cut_after: bool = False,
    newlines: Newlines = "break",
) -> str:
    """One block of highlighted tokens.

    `values` is [n_tokens] for one highlight or [n_tokens, n_highlights]; `focus` (an index
    into `tokens`) is outlined, as the max-activating token of an example; `cut_before` /
    `cut_after` add `…` where a context window cut the text; `newlines` as `display_token`.
    """
    matrix = np.asarray(values, dtype=np.float64).reshape(len(tokens), -1)  # [tokens, feats]
    if matrix.shape[1] != len(highlights):
        raise ValueError(f"{matrix.shape[1]} value columns for {len(highlights)} highlights.")
    scales = np.array([h.scale for h in highlights], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(scales > 0, matrix / scales, 0.0)  # [tokens, feats]
    strongest = relative.argmax(axis=1) if len(highlights) else np.zeros(len(tokens), int)
    spans = [ELLIPSIS] if cut_before else []
    for index, token in enumerate(tokens):
        style = [TOKEN_STYLE]
        if len(highlights):
            best = int(strongest[index])
            alpha = intensity(matrix[index, best], highlights[best].scale)
            if alpha > 0:
                r, g, b = highlights[best].color
                style.append(f"background-color:rgba({r},{g},{b},{alpha:.3f})")
        if index == focus:
            style.append(FOCUS_STYLE)
        title = escape(_title(token, matrix[index], highlights))
        shown = display_token(token, newlines)
        spans.append(f'<span style="{";".join(style)}" title="{title}">{shown}</span>')
    if cut_after:
        spans.append(ELLIPSIS)
    return f'<div style="{BLOCK_STYLE}">{"".join(spans)}</div>'


def _title(token: str, values: np.ndarray, highlights: Sequence[Highlight]) -> str:
    lines = [f"token {token!r}"]
    lines += [f"{h.label}: {value:.4g}" for h, value in zip(highlights, values, strict=True)]
    return "\n".join(lines)


def context_window(n_tokens: int, center: int, before: int, after: int) -> slice:
    """Indices of the tokens from `before` ahead of `center` to `after` past it, in range."""
    if not 0 <= center < n_tokens:
        raise ValueError(f"center {center} is outside 0..{n_tokens - 1}.")
    return slice(max(center - before, 0), min(center + after + 1, n_tokens))


def window_html(
    tokens: Sequence[str],
    values: Sequence[float] | np.ndarray,
    center: int,
    highlight: Highlight,
    *,
    before: int = 12,
    after: int = 4,
) -> str:
    """One feature on a context window around `center` (outlined), `…` where it was cut."""
    cut = context_window(len(tokens), center, before, after)
    return highlight_html(
        list(tokens)[cut],
        np.asarray(values)[cut],
        [highlight],
        focus=center - cut.start,
        cut_before=cut.start > 0,
        cut_after=cut.stop < len(tokens),
        newlines="symbol",
    )


def examples_html(
    windows: pd.DataFrame,
    captions: Mapping[int, str],
    highlight: Highlight,
    colors: Mapping[int, Color] | None = None,
    newlines: Newlines = "symbol",
) -> str:
    """A table of examples, one row each: an escaped caption, then its highlighted tokens.

    `windows` has one row per token: `example`, `token`, `value`, `center` (True on the
    example's own position) and `cut_before` / `cut_after` (the window does not reach the
    text's start / end). Rows follow the order of `captions`; `colors` overrides the colour
    per example (the category view: target category in colour, others in grey). Newlines
    show as `↵` without breaking the row unless `newlines="break"` (whole texts).
    """
    rows = []
    groups = dict(tuple(windows.groupby("example", sort=False)))
    for example, caption in captions.items():
        tokens = groups.get(example)
        if tokens is None:
            continue
        color = (colors or {}).get(example, highlight.color)
        centers = np.flatnonzero(tokens["center"].to_numpy())
        block = highlight_html(
            tokens["token"].tolist(),
            tokens["value"].to_numpy(),
            [Highlight(highlight.label, highlight.scale, color)],
            focus=int(centers[0]) if len(centers) else None,
            cut_before=bool(tokens["cut_before"].iloc[0]),
            cut_after=bool(tokens["cut_after"].iloc[0]),
            newlines=newlines,
        )
        rows.append(
            '<tr><td style="width:1%;padding:2px 12px 2px 0;white-space:nowrap;vertical-align:top;'
            f'color:#555;font-size:0.8rem">{escape(caption)}</td>'
            f'<td style="padding:2px 0">{block}</td></tr>'
        )
    return f'<table style="border-collapse:collapse;width:100%">{"".join(rows)}</table>'


def legend_html(highlights: Sequence[Highlight]) -> str:
    """Colour swatches naming each highlighted feature and its full-colour value."""
    items = []
    for h in highlights:
        r, g, b = h.color
        items.append(
            f'<span style="margin-right:14px"><span style="display:inline-block;width:0.9em;'
            f"height:0.9em;border-radius:2px;vertical-align:middle;margin-right:4px;"
            f'background-color:rgb({r},{g},{b})"></span>{escape(h.label)} '
            f'<span style="color:#777">(full colour at {h.scale:.3g})</span></span>'
        )
    return f'<div style="font-size:0.85rem;margin-bottom:4px">{"".join(items)}</div>'


def feature_highlights(
    labels: Sequence[str], scales: Sequence[float], colors: Sequence[Color] = FEATURE_COLORS
) -> list[Highlight]:
    """One `Highlight` per feature, colours taken in turn from `colors`."""
    return [
        Highlight(label, float(scale), colors[i % len(colors)])
        for i, (label, scale) in enumerate(zip(labels, scales, strict=True))
    ]
