"""docs/methods.md as the app serves it: its sections and the links pages make to them.

Owns the one way a page cites a definition: `methods_link(anchor)`, a Markdown link to the
app's own Methods page (`url_path` "methods") at that section, which works wherever the app
runs (a local server, Streamlit Community Cloud, offline) and shows the doc of the running
code; and `methods_sections()`, the doc cut at its `##` / `###` headings, each with the anchor
the links use: the section's `<a id="...">` when it has one, else the GitHub-style slug of its
title. It reads the doc file only; the page that renders it is `app_pages/methods.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

METHODS_PATH = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
METHODS_PAGE = "methods"  # the Methods page's url_path (streamlit_app.py)
_HEADING = re.compile(r"^(#{2,3}) (.+)$")
_ANCHOR = re.compile(r'^<a id="([a-z0-9-]+)"></a>$')


@dataclass(frozen=True)
class Section:
    """One section of the doc: its heading level (1 for the intro before the first heading,
    2 or 3), title, anchor and Markdown body (the anchor tag left out)."""

    level: int
    title: str
    anchor: str
    body: str


def slug(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    kept = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return kept.replace(" ", "-")


@cache
def methods_sections(path: Path = METHODS_PATH) -> tuple[Section, ...]:
    """The sections of the doc at `path`, in order (read once per process)."""
    sections: list[Section] = []
    level, title, anchor, body = 1, "Methods", "methods", []

    def close() -> None:
        sections.append(Section(level, title, anchor, "\n".join(body).strip()))

    for line in path.read_text(encoding="utf-8").splitlines():
        heading = _HEADING.match(line)
        tag = _ANCHOR.match(line.strip())
        if heading:
            close()
            level, title, body = len(heading.group(1)), heading.group(2).strip(), []
            anchor = slug(title)
        elif tag:
            anchor = tag.group(1)
        elif not (level == 1 and line.startswith("# ")):
            body.append(line)
    close()
    return tuple(sections)


def anchors() -> set[str]:
    """Every anchor a link may name."""
    return {section.anchor for section in methods_sections()}


def methods_link(anchor: str, label: str | None = None) -> str:
    """A Markdown link to the Methods page's section `anchor`, labelled with the section's
    title ("Methods: Selectivity (the default measure)") unless `label` is given. Opens in
    a new tab, as Streamlit opens every link; the page scrolls to the section."""
    titles = {section.anchor: section.title for section in methods_sections()}
    text = label or f"Methods: {titles.get(anchor, anchor)}"
    return f"[{text}]({METHODS_PAGE}#{anchor})"
