"""Test stores built from the tiny bundle: the labelled corpus plus texts holding HTML/JS
payloads (category `payload`), so pages can be checked to show them as plain text."""

from __future__ import annotations

import json
from pathlib import Path

from explorer.build.extract import BuildSettings
from explorer.build.single import build_store
from explorer.sources.demo_bundle import PRESETS

CORPUS = "bundled+arithmetic:60"
TINY = PRESETS["tiny"]  # the bundle the test stores are built from (d_sae, n_ctx, layers)
PAYLOADS = (
    "<script>alert('xss')</script> said the comment, \"quoted\" & done.",
    '<img src=x onerror="alert(document.cookie)"> <b>bold</b> text here.',
)


def build_payload_store(bundle_path: Path, folder: Path) -> Path:
    """A store of the tiny bundle over the corpus plus the payload texts (the last texts)."""
    payloads = folder / "payloads.jsonl"
    payloads.write_text(
        "".join(json.dumps({"text": text, "category": "payload"}) + "\n" for text in PAYLOADS)
    )
    out = folder / "payload.duckdb"
    build_store(f"demo:{bundle_path}", f"{CORPUS}+{payloads}", out, BuildSettings(batch_size=32))
    return out
