"""The Methods page's sections and the links pages make to them: every anchor a page, the
sidebar or a help text links to is a section of docs/methods.md, and the links are real
Markdown links to the app's Methods page."""

from __future__ import annotations

import re
from pathlib import Path

from explorer.analysis.specialists import MEASURE_INFO
from explorer.methods_doc import (
    METHODS_PAGE,
    anchors,
    methods_link,
    methods_sections,
    slug,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*ROOT.glob("app_pages/*.py"), *ROOT.glob("explorer/**/*.py")]
LINKED = re.compile(r'methods_link\(\s*"([^"]+)"')


def test_every_linked_anchor_is_a_section() -> None:
    used = {anchor for path in SOURCES for anchor in LINKED.findall(path.read_text())}
    used |= {info.anchor for info in MEASURE_INFO.values()}
    assert {"selectivity", "families", "operation-position", "replication-store"} <= used
    assert used <= anchors(), sorted(used - anchors())


def test_sections_take_the_explicit_anchor_else_the_heading_slug(tmp_path: Path) -> None:
    doc = tmp_path / "methods.md"
    doc.write_text(
        "# Methods\n\nIntro.\n\n## Selectivity (the default)\n\n"
        '<a id="selectivity"></a>\nBody one.\n\n### SAE quality: L0\nBody two.\n'
    )
    sections = methods_sections(doc)
    assert [(s.level, s.anchor, s.title) for s in sections] == [
        (1, "methods", "Methods"),
        (2, "selectivity", "Selectivity (the default)"),
        (3, "sae-quality-l0", "SAE quality: L0"),
    ]
    assert sections[0].body == "Intro." and sections[1].body == "Body one."
    assert "<a id" not in "".join(s.body for s in sections)


def test_a_link_points_at_the_methods_page_section() -> None:
    assert methods_link("fdr") == f"[Methods: Benjamini-Hochberg FDR]({METHODS_PAGE}#fdr)"
    assert methods_link("fdr", "FDR") == "[FDR](methods#fdr)"
    assert slug("Frequency vs specialization") == "frequency-vs-specialization"
