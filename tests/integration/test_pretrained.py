"""The pretrained path: GPT-2 small with SAELens's gpt2-small-res-jb release.

`saelens:RELEASE:ID,...` is read as the registry spec (always runs). The rest needs the real
weights, which cannot be downloaded on the machines that test this project: it runs when
GPT-2 small and the blocks.8.hook_resid_pre SAE are in the local Hugging Face cache and is
skipped otherwise, with a reason that says what to download. With them it loads the source
offline, checks the memory estimate against what loaded, builds a small store and checks one
text's stored activations against a direct forward and encode.
"""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache

from explorer.build.extract import BuildSettings
from explorer.build.single import build_store
from explorer.errors import SourceError
from explorer.sources.memory import estimate_source
from explorer.sources.source import Source, load_source
from explorer.store.reader import Store

RELEASE = "gpt2-small-res-jb"
SAE_ID = "blocks.8.hook_resid_pre"
SPEC = f"saelens:{RELEASE}:{SAE_ID}"
SAE_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
# (repo, file) pairs that `load_source(SPEC)` reads; TransformerLens names GPT-2 small "gpt2".
NEEDED = [
    ("gpt2", "config.json"),
    ("gpt2", "model.safetensors"),
    ("gpt2", "tokenizer.json"),
    (SAE_REPO, f"{SAE_ID}/cfg.json"),
    (SAE_REPO, f"{SAE_ID}/sae_weights.safetensors"),
]


def missing_files() -> list[str]:
    return [
        f"{repo}/{name}"
        for repo, name in NEEDED
        if not isinstance(try_to_load_from_cache(repo, name), str)
    ]


def test_saelens_spec_is_an_alias_of_the_registry_spec():
    alias = Source.parse(
        "saelens:gpt2-small-res-jb:blocks.8.hook_resid_pre, blocks.10.hook_resid_pre"
    )
    assert alias == Source(
        kind="registry",
        release="gpt2-small-res-jb",
        sae_ids=("blocks.8.hook_resid_pre", "blocks.10.hook_resid_pre"),
    )
    assert (
        alias.spec()
        == "registry:gpt2-small-res-jb:blocks.8.hook_resid_pre,blocks.10.hook_resid_pre"
    )
    assert Source.parse(alias.spec()) == alias
    with pytest.raises(SourceError, match="needs a release and at least one sae_id"):
        Source.parse("saelens:gpt2-small-res-jb")


@pytest.fixture(scope="module")
def gpt2_res_jb():
    missing = missing_files()
    if missing:
        pytest.skip(
            f"GPT-2 small and the {RELEASE} SAE {SAE_ID} are not in the local Hugging Face "
            f"cache ({hf_constants.HF_HUB_CACHE}; missing {', '.join(missing)}). Download them "
            'once (about 700 MB) on a machine with the network: python -c "from '
            f"explorer.sources import load_source; load_source('{SPEC}')\""
        )
    return load_source(SPEC)


def test_gpt2_small_loads_from_the_cache_with_its_sae(gpt2_res_jb):
    model, (handle,) = gpt2_res_jb.model, gpt2_res_jb.saes
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.d_vocab) == (12, 768, 50257)
    assert (handle.hook_name, handle.layer) == (SAE_ID, 8)
    assert (handle.sae.cfg.d_in, handle.sae.cfg.d_sae) == (768, 24576)
    assert handle.neuronpedia_id == "gpt2-small/8-res-jb"


def test_memory_estimate_matches_what_loaded(gpt2_res_jb):
    estimate = estimate_source(SPEC)
    model = gpt2_res_jb.model
    sae = gpt2_res_jb.saes[0].sae
    assert estimate.model_parameters == sum(p.numel() for p in model.parameters())
    assert estimate.sae_bytes == sum(p.numel() * p.element_size() for p in sae.parameters())


def test_a_small_store_holds_what_a_direct_encode_gives(gpt2_res_jb, tmp_path):
    out = tmp_path / "gpt2.duckdb"
    build_store(gpt2_res_jb, "bundled", out, BuildSettings(batch_size=8, max_texts=16))
    handle = gpt2_res_jb.saes[0]
    with Store.open(out) as store:
        assert store.saes()["d_sae"].tolist() == [24576]
        text = store.texts().iloc[0]
        stored = store.text_acts(int(text["text_id"]), handle.name)
    tokenizer = gpt2_res_jb.tokenizer
    ids = [tokenizer.bos_token_id, *tokenizer(text["text"], add_special_tokens=False)["input_ids"]]
    tokens = torch.tensor([ids[: gpt2_res_jb.model.cfg.n_ctx]])
    with torch.inference_mode():
        _, cache = gpt2_res_jb.model.run_with_cache(tokens, names_filter=[handle.hook_name])
        acts = handle.sae.encode(cache[handle.hook_name])[0, 1:]  # [pos, d_sae], BOS dropped
    pos, feature = acts.nonzero(as_tuple=True)
    assert len(stored) == len(pos)
    expected = acts[pos, feature].numpy()
    order = stored.sort_values(["pos", "feature"])
    assert (order["pos"].to_numpy() == pos.numpy() + 1).all()
    assert (order["feature"].to_numpy() == feature.numpy()).all()
    assert order["value"].to_numpy() == pytest.approx(expected, rel=1e-3, abs=1e-4)
