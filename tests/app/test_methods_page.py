"""Methods page: docs/methods.md served in the app, one header per section with the anchor
the pages' links name, and every section's text."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer.methods_doc import methods_sections

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "methods.py")


def test_every_section_is_shown_under_its_anchor() -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    sections = methods_sections()
    headers = [(h.value, h.proto.anchor) for h in [*at.header, *at.subheader]]
    expected = [(s.title, s.anchor) for s in sections if s.level > 1]
    assert sorted(headers) == sorted(expected)
    assert ("Selectivity (the default measure)", "selectivity") in headers
    assert ("Operations scored at the `=`", "operation-position") in headers
    shown = "\n".join(block.value for block in at.markdown)
    for section in sections:
        assert section.body.splitlines()[0] in shown
    assert "<a id=" not in shown
