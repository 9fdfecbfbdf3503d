"""Plain-data summaries of a loaded source for the home page and `info` commands.

Owns turning a `LoadedSource` into a dict of model facts and a table of its SAEs with
their quality numbers (from the demo bundle's manifest, where measured). No streamlit.
"""

from __future__ import annotations

import json

import pandas as pd

from explorer.sources.source import LoadedSource

QUALITY_COLUMNS = ["l0", "explained_variance", "ce_loss_recovered", "dead_fraction"]


def model_facts(loaded: LoadedSource) -> dict[str, object]:
    cfg = loaded.model.cfg
    n_parameters = sum(p.numel() for p in loaded.model.parameters())
    return {
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "heads": cfg.n_heads,
        "context (tokens)": cfg.n_ctx,
        "vocabulary": cfg.d_vocab,
        "parameters": f"{n_parameters / 1e6:.2f}M",
    }


def bundle_manifest(loaded: LoadedSource) -> dict | None:
    """The demo bundle's manifest when the source is a demo bundle, else None."""
    if loaded.source.kind != "demo":
        return None
    from explorer.sources.demo_bundle import bundle_path

    path = bundle_path(loaded.source.preset) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def sae_table(loaded: LoadedSource) -> pd.DataFrame:
    """One row per SAE: name, hook, layer, size, architecture, k and measured quality."""
    manifest = bundle_manifest(loaded) or {}
    quality = manifest.get("sae_quality", {})
    rows = []
    for handle in loaded.saes:
        cfg = handle.sae.cfg
        measured = quality.get(handle.hook_name, {})
        rows.append(
            {
                "sae": handle.name,
                "hook_name": handle.hook_name,
                "layer": handle.layer,
                "d_in": cfg.d_in,
                "d_sae": cfg.d_sae,
                "architecture": cfg.architecture(),
                "k": getattr(cfg, "k", None),
                **{column: measured.get(column) for column in QUALITY_COLUMNS},
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "sae",
            "hook_name",
            "layer",
            "d_in",
            "d_sae",
            "architecture",
            "k",
            *QUALITY_COLUMNS,
        ],
    )
