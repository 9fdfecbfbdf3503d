"""Test stores built from the tiny bundle: the labelled corpus plus texts holding HTML/JS
payloads (category `payload`), so pages can be checked to show them as plain text.

Each store is built once per test session and copied for every module that asks for it
(`tiny_store`): a module may write into its copy (labels, ledger runs) without another
module seeing it, and the session pays for one build of each corpus (a build is 1.5 s of
CPU, and nine modules ask for a store another module already built)."""

from __future__ import annotations

import json
import shutil
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

_BUILT: dict[tuple[str, str, int], Path] = {}  # (bundle, corpus, batch size) -> built store


def tiny_store(bundle_path: Path, corpus: str, out: Path, batch_size: int | None = None) -> Path:
    """A copy at `out` of the tiny bundle's store over `corpus`, built once per session (into
    a folder beside the session's bundle) with `batch_size` (default BuildSettings')."""
    settings = BuildSettings() if batch_size is None else BuildSettings(batch_size=batch_size)
    key = (str(bundle_path), corpus, settings.batch_size)
    if key not in _BUILT:
        folder = Path(bundle_path).parent / "built_stores"
        folder.mkdir(exist_ok=True)
        built = folder / f"store_{len(_BUILT)}.duckdb"
        build_store(f"demo:{bundle_path}", corpus, built, settings)
        _BUILT[key] = built
    shutil.copyfile(_BUILT[key], out)
    return out


def build_payload_store(bundle_path: Path, folder: Path) -> Path:
    """A store of the tiny bundle over the corpus plus the payload texts (the last texts)."""
    payloads = Path(bundle_path).parent / "payloads.jsonl"
    if not payloads.exists():
        payloads.write_text(
            "".join(json.dumps({"text": text, "category": "payload"}) + "\n" for text in PAYLOADS)
        )
    return tiny_store(bundle_path, f"{CORPUS}+{payloads}", folder / "payload.duckdb", 32)
