"""The offline demo bundle: a small causal LM, its tokenizer and TopK SAEs, trained here.

Owns the bundle format and its loading: the presets, where a bundle lives, the model built
from its config and `load_bundle`. Training the bundle is `explorer.build.demo_training`.

Bundle layout: `tokenizer/`, `model/config.json` + `model/model.safetensors`,
`saes/<hook_name>/` (SAELens folders) and `manifest.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from sae_lens import SAE
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from explorer.errors import SourceError, markdown_escaped

PresetName = Literal["demo", "tiny"]
MODEL_NAME = "sae-explorer-demo"
SPECIAL_TOKEN = "<|endoftext|>"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # explorer/
COMMITTED_BUNDLES = PACKAGE_DIR / "bundles"
# Packages whose README metadata joins the training corpus (prose, URLs, markdown, code).
CORPUS_PACKAGES = (
    "altair", "duckdb", "numpy", "pandas", "pyarrow", "requests", "rich", "sae-lens",
    "streamlit", "tokenizers", "torch", "transformer-lens", "transformers", "jinja2",
    "click", "pydantic", "scipy", "datasets", "huggingface-hub", "tqdm",
)  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPreset:
    """Everything that determines a bundle; the same preset and seed give the same bundle."""

    name: PresetName
    vocab_size: int
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    corpus_chars: int
    lm_steps: int
    lm_batch_size: int
    lm_lr: float
    d_sae: int
    k: int
    sae_training_tokens: int
    sae_batch_tokens: int
    sae_lr: float
    sae_dead_window: int  # steps without firing before TopK's auxiliary loss revives a feature
    seed: int = 0

    def lm_fields(self) -> dict:
        """The fields that determine the tokenizer and the LM (not the SAEs)."""
        sae_fields = {"d_sae", "k", "sae_training_tokens", "sae_batch_tokens", "sae_lr"}
        return {k: v for k, v in asdict(self).items() if k not in sae_fields | {"sae_dead_window"}}

    def hook_names(self) -> list[str]:
        return [f"blocks.{layer}.hook_resid_post" for layer in range(self.n_layers)]


PRESETS: dict[str, DemoPreset] = {
    "demo": DemoPreset(
        name="demo", vocab_size=4096, n_layers=4, d_model=128, n_heads=4, d_mlp=512,
        n_ctx=128, corpus_chars=8_000_000, lm_steps=2500, lm_batch_size=32, lm_lr=2e-3,
        d_sae=1024, k=32, sae_training_tokens=6_000_000, sae_batch_tokens=4096,
        sae_lr=1e-3, sae_dead_window=50,
    ),
    "tiny": DemoPreset(
        name="tiny", vocab_size=512, n_layers=3, d_model=32, n_heads=2, d_mlp=64,
        n_ctx=64, corpus_chars=300_000, lm_steps=150, lm_batch_size=16, lm_lr=3e-3,
        d_sae=128, k=8, sae_training_tokens=120_000, sae_batch_tokens=1024, sae_lr=1e-3,
        sae_dead_window=20,
    ),
}  # fmt: skip


def bundle_path(preset: str) -> Path:
    """Where a preset's bundle lives: `demo` is committed, `tiny` is built into the cache
    folder (`EXPLORER_CACHE_DIR`, default cache/).

    Any other string is taken as a bundle folder path.
    """
    if preset == "demo":
        return COMMITTED_BUNDLES / "demo"
    if preset == "tiny":
        from explorer.settings import from_environ

        return from_environ().cache_dir / "bundles" / "tiny"
    return Path(preset)


def build_model(config: dict, tokenizer: PreTrainedTokenizerFast) -> HookedTransformer:
    model = HookedTransformer(HookedTransformerConfig(**config), tokenizer=tokenizer)
    model.tokenizer.padding_side = "right"
    return model.eval()


# --------------------------------------------------------------------------- bundle


@dataclass
class DemoBundle:
    path: Path
    model: HookedTransformer
    saes: dict[str, SAE]  # hook_name -> SAE, sorted by layer
    manifest: dict


def load_bundle(path: str | Path) -> DemoBundle:
    """Load a bundle folder; a missing or incomplete bundle raises SourceError."""
    path = Path(path)
    required = [
        "manifest.json",
        "tokenizer/tokenizer.json",
        "model/config.json",
        "model/model.safetensors",
    ]
    missing = [name for name in required if not (path / name).exists()]
    if missing:
        raise SourceError(
            f"No complete demo bundle at {markdown_escaped(path)} (missing: "
            f"{markdown_escaped(', '.join(missing))}). "
            "Train one with `python -m explorer demo train --preset tiny` (or `--preset demo`)."
        )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / "tokenizer")
    config = json.loads((path / "model" / "config.json").read_text())
    model = build_model(config, tokenizer)
    model.load_state_dict(load_file(path / "model" / "model.safetensors"), strict=True)
    manifest = json.loads((path / "manifest.json").read_text())
    saes = {}
    for hook in manifest["hook_names"]:
        sae = SAE.load_from_disk(str(path / "saes" / hook), device="cpu")
        saes[hook] = sae.eval()
    return DemoBundle(path=path, model=model, saes=saes, manifest=manifest)
