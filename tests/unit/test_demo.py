"""The offline demo bundle: it trains, saves, reloads exactly, and is reproducible."""

from __future__ import annotations

import json

import pytest
import torch

from explorer.build.demo_training import token_windows, train_bundle
from explorer.errors import SourceError
from explorer.sources.demo_bundle import PRESETS, bundle_path, load_bundle


def test_tiny_bundle_has_an_sae_per_layer_boundary(tiny_bundle):
    preset = PRESETS["tiny"]
    assert list(tiny_bundle.saes) == [f"blocks.{i}.hook_resid_post" for i in range(preset.n_layers)]
    assert len(tiny_bundle.saes) >= 3
    for hook, sae in tiny_bundle.saes.items():
        assert sae.cfg.architecture() == "topk"
        assert sae.cfg.d_in == tiny_bundle.model.cfg.d_model
        assert sae.cfg.metadata.hook_name == hook
        assert sae.cfg.metadata.model_name == "sae-explorer-demo"


def test_bundle_round_trip_gives_equal_logits(tiny_bundle, tiny_bundle_path):
    reloaded = load_bundle(tiny_bundle_path)
    tokens = tiny_bundle.model.to_tokens(["def add(a, b):\n    return a + b", "20*3=60 | 60+5=65"])
    with torch.inference_mode():
        assert torch.equal(tiny_bundle.model(tokens), reloaded.model(tokens))
        hook = next(iter(tiny_bundle.saes))
        _, cache = reloaded.model.run_with_cache(tokens, names_filter=[hook])
        assert torch.equal(
            tiny_bundle.saes[hook].encode(cache[hook]), reloaded.saes[hook].encode(cache[hook])
        )


def test_tokenizer_prepends_bos_and_round_trips_text(tiny_bundle):
    tokenizer = tiny_bundle.model.tokenizer
    text = "Grüße 👋 <script>alert(1)</script> 12*5=60"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids[1:]) == text


def test_manifest_records_corpus_and_quality(tiny_bundle):
    manifest = tiny_bundle.manifest
    assert len(manifest["corpus"]["sha256"]) == 64
    assert manifest["corpus"]["package_versions"]["torch"] == torch.__version__
    assert set(manifest["sae_quality"]) == set(tiny_bundle.saes)
    for quality in manifest["sae_quality"].values():
        assert quality["l0"] == pytest.approx(PRESETS["tiny"].k, abs=0.01)
        assert 0 < quality["explained_variance"] <= 1
        assert 0 <= quality["dead_fraction"] < 1
    # the tiny LM learned something: better than a uniform guess over its vocabulary
    assert manifest["lm_held_out_loss"] < torch.log(torch.tensor(float(PRESETS["tiny"].vocab_size)))


def test_token_windows_start_with_bos(tiny_bundle):
    tokenizer = tiny_bundle.model.tokenizer
    windows = token_windows(tokenizer, ["abc def"] * 50, n_ctx=16)
    assert windows.shape[1] == 16
    assert (windows[:, 0] == tokenizer.bos_token_id).all()


@pytest.mark.slow
def test_tiny_bundle_is_reproducible(tiny_bundle, tmp_path):
    again = train_bundle(PRESETS["tiny"], tmp_path / "again")
    first, second = tiny_bundle.manifest, again.manifest
    assert first["corpus"]["sha256"] == second["corpus"]["sha256"]
    assert json.loads(
        (tmp_path / "again" / "tokenizer" / "tokenizer.json").read_text()
    ) == json.loads((tiny_bundle.path / "tokenizer" / "tokenizer.json").read_text())
    assert second["lm_held_out_loss"] == pytest.approx(first["lm_held_out_loss"], abs=0.05)
    for hook, quality in first["sae_quality"].items():
        assert second["sae_quality"][hook]["explained_variance"] == pytest.approx(
            quality["explained_variance"], abs=0.05
        )


def test_missing_bundle_gives_an_actionable_message(tmp_path):
    with pytest.raises(SourceError, match="python -m explorer demo train"):
        load_bundle(tmp_path / "nowhere")


def test_committed_demo_bundle_loads_and_meets_its_manifest():
    bundle = load_bundle(bundle_path("demo"))
    quality = bundle.manifest["sae_quality"]
    assert len(quality) >= 3
    total_bytes = sum(p.stat().st_size for p in bundle.path.rglob("*") if p.is_file())
    assert total_bytes <= 30 * 1024 * 1024
