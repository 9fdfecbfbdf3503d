"""Tests of explorer.sources: spec strings, the four source kinds, fast offline failure,
and the TopK checkpoint conversion. Nothing here touches the network: hub downloads and
model loads are patched, and the one real registry call runs against a closed local port.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.loading import pretrained_sae_loaders
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from explorer.errors import InputError, SourceError, plain_text
from explorer.sources import hub
from explorer.sources.hub import list_registry_releases
from explorer.sources.source import Source, load_source, neuronpedia_url
from explorer.sources.topk_checkpoint import reference_topk_encode, topk_sae_from_state_dict

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_HUB_REACHABLE = hub._hub_reachable
D_MODEL = 16
GPT2_RELEASE = "gpt2-small-res-jb"


# --------------------------------------------------------------------------- builders


def make_model(**overrides) -> HookedTransformer:
    """A tiny random TransformerLens model (no tokenizer, no download)."""
    cfg = dict(
        n_layers=3, d_model=D_MODEL, n_heads=2, d_head=8, d_mlp=32, d_vocab=64, n_ctx=16,
        act_fn="relu", model_name="tiny-test", seed=0,
    )  # fmt: skip
    return HookedTransformer(HookedTransformerConfig(**{**cfg, **overrides}))


def make_sae(
    hook_name: str = "blocks.1.hook_resid_post",
    *,
    d_in: int = D_MODEL,
    d_sae: int = 32,
    seed: int = 0,
    architecture: str = "standard",
    **metadata,
) -> SAE:
    """A small SAELens SAE with seeded random weights and the given metadata."""
    metadata = {"model_name": "gpt2-test", "hook_name": hook_name, **metadata}
    if architecture == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=4, metadata=SAEMetadata(**metadata)))
    else:
        sae = StandardSAE(
            StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(**metadata))
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return sae.eval()


def topk_checkpoint(layout: str, d_in: int = 2048, d_sae: int = 512, k: int = 100, seed: int = 0):
    """A random TopK checkpoint in one of the layouts research code saves."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    encoder = randn(d_sae, d_in, scale=d_in**-0.5)  # nn.Linear(d_in, d_sae).weight
    b_enc, b_dec = randn(d_sae, scale=0.5), randn(d_in, scale=0.1)
    rows = randn(d_sae, d_in, scale=d_sae**-0.5)  # decoder as [d_sae, d_in]
    if layout == "sparsify":
        return {
            "encoder.weight": encoder,
            "encoder.bias": b_enc,
            "W_dec": rows,
            "b_dec": b_dec,
            "k": k,
        }
    if layout == "linear_decoder":
        return {
            "encoder.weight": encoder, "encoder.bias": b_enc, "decoder.weight": rows.T.contiguous(),
            "decoder.bias": b_dec, "k": torch.tensor(k),
        }  # fmt: skip
    if layout == "openai":
        return {
            "encoder.weight": encoder, "latent_bias": b_enc, "decoder.weight": rows.T.contiguous(),
            "pre_bias": b_dec, "k": k, "stats_last_nonzero": torch.zeros(d_sae, dtype=torch.long),
        }  # fmt: skip
    saelens = {"W_enc": encoder.T.contiguous(), "b_enc": b_enc, "W_dec": rows, "b_dec": b_dec}
    if layout == "saelens":
        return {**saelens, "k": k}
    assert layout == "nested"
    return {
        "state_dict": saelens,
        "k": k,
        "hook_name": "blocks.8.hook_resid_post",
        "d_in": d_in,
        "d_sae": d_sae,
    }


def reference_decode(state: dict, acts: torch.Tensor) -> torch.Tensor:
    """Each layout's own decoder, written from its keys."""
    tensors = state.get("state_dict", state)
    if "decoder.weight" in tensors:  # nn.Linear(d_sae, d_in): weight [d_in, d_sae]
        bias = tensors["decoder.bias"] if "decoder.bias" in tensors else tensors["pre_bias"]
        return torch.nn.functional.linear(acts, tensors["decoder.weight"], bias)
    return acts @ tensors["W_dec"] + tensors["b_dec"]


def free_local_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """No test reaches the network: the hub probe says unreachable unless a test says otherwise,
    and the user's offline setting is restored after each test."""
    monkeypatch.setattr(hub, "_hub_reachable", lambda: False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def model_loader(monkeypatch):
    """Patch TransformerLens's hub loader; returns the list of calls it received."""
    calls: list[dict] = []

    def from_pretrained_no_processing(**kwargs):
        calls.append(kwargs)
        return make_model(model_name=kwargs["model_name"])

    monkeypatch.setattr(
        HookedTransformer, "from_pretrained_no_processing", from_pretrained_no_processing
    )
    return calls


@pytest.fixture
def fake_demo(monkeypatch):
    """Replace explorer.sources.demo_bundle with a module whose bundle is a tiny model and two
    SAEs."""
    bundle_model = make_model(model_name="sae-explorer-demo")
    bundle_saes = {
        hook: make_sae(hook, seed=layer, model_name="sae-explorer-demo")
        for layer, hook in ((1, "blocks.1.hook_resid_post"), (0, "blocks.0.hook_resid_post"))
    }
    module = types.ModuleType("explorer.sources.demo_bundle")
    module.MODEL_NAME = "sae-explorer-demo"
    module.requested = []

    def bundle_path(preset: str) -> Path:
        module.requested.append(preset)
        return Path("/bundles") / preset

    def load_bundle(path):
        return types.SimpleNamespace(model=bundle_model, saes=bundle_saes, manifest={})

    module.bundle_path, module.load_bundle = bundle_path, load_bundle
    module.model, module.saes = bundle_model, bundle_saes
    monkeypatch.setitem(sys.modules, "explorer.sources.demo_bundle", module)
    return module


def saelens_loader(
    monkeypatch, saes_by_folder: dict[str, SAE] | None = None, error: Exception | None = None
):
    """Patch the SAELens loader that downloads a pretrained SAE's config and weights.

    It records the hub's offline flag at call time, so tests see which mode the load ran in.
    """
    calls: list[dict] = []

    def loader(repo_id, folder_name, device, force_download, cfg_overrides):
        calls.append(
            {"repo_id": repo_id, "folder_name": folder_name, "offline": hf_constants.HF_HUB_OFFLINE}
        )
        if error is not None:
            raise error
        sae = saes_by_folder[folder_name]
        cfg_dict = {**sae.cfg.to_dict(), **(cfg_overrides or {})}  # as sae_lens_huggingface_loader
        return cfg_dict, {name: tensor.clone() for name, tensor in sae.state_dict().items()}, None

    monkeypatch.setitem(pretrained_sae_loaders.NAMED_PRETRAINED_SAE_LOADERS, "sae_lens", loader)
    return calls


def offline_error() -> LocalEntryNotFoundError:
    return LocalEntryNotFoundError(
        "An error happened while trying to locate the file on the Hub and we cannot find the "
        "requested files in the local cache."
    )


# --------------------------------------------------------------------------- spec strings


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("demo", Source(kind="demo")),
        ("demo:tiny", Source(kind="demo", preset="tiny")),
        ("demo:/data/bundle", Source(kind="demo", preset="/data/bundle")),
        (
            "registry:gpt2-small-res-jb:blocks.6.hook_resid_pre,blocks.8.hook_resid_pre",
            Source(
                kind="registry",
                release="gpt2-small-res-jb",
                sae_ids=("blocks.6.hook_resid_pre", "blocks.8.hook_resid_pre"),
            ),
        ),
        ("local:/saes/a,/saes/b", Source(kind="local", paths=("/saes/a", "/saes/b"))),
        (
            "local:/saes/a@gpt2-small",
            Source(kind="local", paths=("/saes/a",), model_name="gpt2-small"),
        ),
        (
            "local:/saes/a@demo:tiny",
            Source(kind="local", paths=("/saes/a",), model_name="demo:tiny"),
        ),
        (
            "topk:/ckpt/l8.pt@meta-llama/Llama-3.2-1B#blocks.8.hook_resid_post",
            Source(
                kind="topk",
                paths=("/ckpt/l8.pt",),
                model_name="meta-llama/Llama-3.2-1B",
                hook_name="blocks.8.hook_resid_post",
            ),
        ),
        ("topk:/ckpt/a.pt,/ckpt/b.pt", Source(kind="topk", paths=("/ckpt/a.pt", "/ckpt/b.pt"))),
    ],
)
def test_parse_reads_each_form_and_spec_writes_it_back(spec, expected):
    source = Source.parse(spec)
    assert source == expected
    assert source.spec() == spec
    assert Source.parse(source.spec()) == source


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "cannot read the source"),
        ("hub:gpt2", "cannot read the source"),
        ("demo:", "needs a preset"),
        ("registry:gpt2-small-res-jb", "needs a release and at least one sae_id"),
        ("registry::blocks.8.hook_resid_pre", "needs a release"),
        ("local:", "needs at least one path"),
        ("local:/a,/a", "/a more than once"),
        ("topk:@gpt2-small#blocks.0.hook_resid_pre", "needs at least one path"),
    ],
)
def test_bad_spec_names_the_problem_and_lists_the_forms(spec, problem):
    with pytest.raises(SourceError) as caught:
        Source.parse(spec)
    message = str(caught.value)
    assert problem in message
    for form in ("demo:tiny", "registry:RELEASE:SAE_ID", "local:FOLDER", "topk:CHECKPOINT"):
        assert form in message


def test_fields_of_another_kind_are_refused():
    with pytest.raises(SourceError, match="`release` does not apply to a demo source"):
        Source(kind="demo", release="gpt2-small-res-jb")


def test_lists_become_tuples_so_sources_stay_hashable():
    source = Source(kind="local", paths=[Path("/saes/a")])  # type: ignore[arg-type]
    assert source.paths == ("/saes/a",)
    assert hash(source) == hash(Source(kind="local", paths=("/saes/a",)))


# --------------------------------------------------------------------------- demo


def test_demo_source_wraps_the_bundle_model_and_saes_sorted_by_layer(fake_demo):
    loaded = load_source("demo:tiny")
    assert fake_demo.requested == ["tiny"]
    assert loaded.model is fake_demo.model
    assert not loaded.model.training
    assert [handle.name for handle in loaded.saes] == ["L0.resid_post", "L1.resid_post"]
    assert [handle.layer for handle in loaded.saes] == [0, 1]
    handle = loaded.sae("L1.resid_post")
    assert handle.hook_name == "blocks.1.hook_resid_post"
    assert handle.sae is fake_demo.saes["blocks.1.hook_resid_post"]
    assert handle.neuronpedia_id is None and handle.release is None
    assert loaded.tokenizer is loaded.model.tokenizer
    assert loaded.source == Source(kind="demo", preset="tiny")


def test_unknown_sae_name_lists_the_names(fake_demo):
    loaded = load_source("demo")
    with pytest.raises(SourceError, match="L0.resid_post, L1.resid_post"):
        loaded.sae("L7.resid_post")


# --------------------------------------------------------------------------- registry


def test_list_registry_releases_reads_the_local_directory():
    releases = list_registry_releases()
    assert GPT2_RELEASE in releases and releases == sorted(releases)
    gpt2 = list_registry_releases("gpt2-small")
    assert GPT2_RELEASE in gpt2 and len(gpt2) < len(releases)
    assert list_registry_releases("no-such-model") == []


def test_unknown_release_names_the_closest_releases():
    with pytest.raises(SourceError) as caught:
        load_source("registry:gpt2-small-res-j:blocks.8.hook_resid_pre")
    message = str(caught.value)
    assert "Unknown SAELens release 'gpt2-small-res-j'" in message
    assert "Closest: gpt2-small-res-jb" in message


def test_unknown_sae_id_names_the_closest_ids_and_some_valid_ones():
    with pytest.raises(SourceError) as caught:
        load_source("registry:gpt2-small-res-jb:blocks.8.hook_resid")
    message = str(caught.value)
    assert "Unknown sae_id 'blocks.8.hook_resid'" in message
    assert "Closest: blocks.8.hook_resid_pre" in message
    assert "blocks.0.hook_resid_pre" in message  # one of the listed valid ids


@pytest.mark.filterwarnings("ignore:(?s).*non-empty model_from_pretrained_kwargs:UserWarning")
@pytest.mark.parametrize("hub_reachable", [True, False])
def test_registry_loads_the_model_named_by_the_sae_metadata(
    monkeypatch, model_loader, hub_reachable
):
    monkeypatch.setattr(hub, "_hub_reachable", lambda: hub_reachable)
    model_kwargs = {"center_writing_weights": False, "fold_ln": True}
    published = {
        "blocks.1.hook_resid_pre": make_sae(
            "blocks.1.hook_resid_pre", seed=1, model_from_pretrained_kwargs=model_kwargs
        ),
        "blocks.2.hook_resid_pre": make_sae(
            "blocks.2.hook_resid_pre",
            seed=2,
            model_from_pretrained_kwargs=model_kwargs,
            neuronpedia_id="gpt2-small/2-res-custom",
        ),  # fmt: skip
    }
    downloads = saelens_loader(monkeypatch, published)

    loaded = load_source(f"registry:{GPT2_RELEASE}:blocks.2.hook_resid_pre,blocks.1.hook_resid_pre")

    # a warm cache serves the load in offline mode when the hub cannot be reached
    assert [call["offline"] for call in downloads] == [not hub_reachable] * 2
    assert hf_constants.HF_HUB_OFFLINE is False
    assert {call["repo_id"] for call in downloads} == {"jbloom/GPT2-Small-SAEs-Reformatted"}
    assert model_loader == [{"model_name": "gpt2-test", **model_kwargs, "device": "cpu"}]
    assert [handle.layer for handle in loaded.saes] == [1, 2]
    first, second = loaded.saes
    assert first.name == first.sae_id == first.hook_name == "blocks.1.hook_resid_pre"
    assert first.release == GPT2_RELEASE
    assert first.neuronpedia_id == "gpt2-small/1-res-jb"  # from the registry entry
    assert second.neuronpedia_id == "gpt2-small/2-res-custom"  # from the SAE's metadata
    assert neuronpedia_url(first, 5) == "https://www.neuronpedia.org/gpt2-small/1-res-jb/5"
    assert torch.equal(first.sae.W_enc, published["blocks.1.hook_resid_pre"].W_enc)
    assert not first.sae.training


@pytest.mark.parametrize(
    ("hub_reachable", "user_offline", "reason"),
    [
        (False, False, "cannot be reached and it is not in the local cache"),
        (True, False, "downloading it from the Hugging Face hub failed"),
        (False, True, "the hub is switched off (HF_HUB_OFFLINE)"),
    ],
)
def test_registry_without_hub_fails_fast_naming_offline_alternatives(
    monkeypatch, hub_reachable, user_offline, reason
):
    monkeypatch.setattr(hub, "_hub_reachable", lambda: hub_reachable)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", user_offline)
    downloads = saelens_loader(monkeypatch, error=offline_error())

    started = time.perf_counter()
    with pytest.raises(SourceError) as caught:
        load_source(f"registry:{GPT2_RELEASE}:blocks.8.hook_resid_pre")
    assert time.perf_counter() - started < 10

    message = plain_text(caught.value)  # as a terminal shows it
    assert f"Cannot load the SAE {GPT2_RELEASE}/blocks.8.hook_resid_pre" in message
    assert reason in message
    assert "the `demo` source" in message and "`local:PATH" in message
    assert isinstance(caught.value.__cause__, LocalEntryNotFoundError)
    # the download ran in offline mode unless the hub answered, and the flag is restored
    assert downloads[0]["offline"] is (not hub_reachable or user_offline)
    assert hf_constants.HF_HUB_OFFLINE is user_offline


@pytest.mark.slow  # a fresh interpreter imports sae-lens and transformer-lens (~30 s)
def test_real_hub_loads_without_hub_fail_within_seconds(tmp_path):
    """The real stack, unpatched, in a fresh interpreter: the hub endpoint is a closed local
    port and the cache is empty, so both an SAE download (registry) and a model download
    (a local SAE folder naming gpt2-small) must fail fast with the offline message."""
    make_sae("blocks.0.hook_resid_pre", d_in=768, d_sae=8, model_name="gpt2-small").save_model(
        tmp_path / "gpt2_sae"
    )
    script = textwrap.dedent(
        """
        import json, sys, time
        import sae_lens, transformer_lens  # imported by the loaders; not what is timed
        from explorer.errors import SourceError
        from explorer.sources.source import load_source
        outcomes = []
        for spec in sys.argv[1:]:
            started = time.perf_counter()
            try:
                load_source(spec)
                error = None
            except SourceError as caught:
                error = str(caught)
            outcomes.append({"error": error, "seconds": time.perf_counter() - started})
        print(json.dumps(outcomes))
        """
    )
    specs = ["registry:gpt2-small-res-jb:blocks.8.hook_resid_pre", f"local:{tmp_path / 'gpt2_sae'}"]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_local_port()}",
        "PYTHONPATH": str(REPO_ROOT),
    }
    finished = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script, *specs],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    sae_outcome, model_outcome = json.loads(finished.stdout.strip().splitlines()[-1])
    assert "Cannot load the SAE gpt2-small-res-jb/blocks.8.hook_resid_pre" in sae_outcome["error"]
    assert "Cannot load the model gpt2-small" in model_outcome["error"]
    for outcome in (sae_outcome, model_outcome):
        assert "cannot be reached" in outcome["error"] and "`demo`" in outcome["error"]
        assert outcome["seconds"] < 10


def test_hub_probe_says_unreachable_for_a_closed_port(monkeypatch):
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{free_local_port()}")
    started = time.perf_counter()
    assert REAL_HUB_REACHABLE(timeout_s=2.0) is False
    assert time.perf_counter() - started < 4


def test_hub_probe_gives_up_on_a_hanging_connection(monkeypatch):
    class HangingSession:
        def head(self, url, timeout):
            time.sleep(5)

    monkeypatch.setattr(hub, "get_session", HangingSession)
    started = time.perf_counter()
    assert REAL_HUB_REACHABLE(timeout_s=0.2) is False
    assert time.perf_counter() - started < 2


# --------------------------------------------------------------------------- local folders


def test_local_folders_load_with_the_model_from_their_metadata(tmp_path, model_loader):
    standard = make_sae("blocks.1.hook_resid_post", seed=3)
    topk = make_sae("blocks.0.hook_resid_pre", seed=4, architecture="topk")
    standard.save_model(tmp_path / "standard")
    topk.save_model(tmp_path / "topk")

    loaded = load_source(f"local:{tmp_path / 'standard'},{tmp_path / 'topk'}")

    assert model_loader == [{"model_name": "gpt2-test", "device": "cpu"}]
    assert [handle.name for handle in loaded.saes] == ["L0.resid_pre", "L1.resid_post"]
    first, second = loaded.saes
    assert isinstance(first.sae, TopKSAE) and first.sae.cfg.k == 4
    for handle, original in ((first, topk), (second, standard)):
        assert handle.sae.cfg.metadata.hook_name == handle.hook_name
        assert handle.release is None and handle.neuronpedia_id is None
        for name, tensor in original.state_dict().items():
            assert torch.equal(handle.sae.state_dict()[name], tensor), name
    x = torch.randn(3, D_MODEL, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(second.sae.encode(x), standard.encode(x))


@pytest.mark.parametrize(
    ("model_name", "preset"), [(None, "demo"), ("demo", "demo"), ("demo:tiny", "tiny")]
)
def test_local_folder_of_a_demo_sae_runs_on_the_demo_bundle(
    tmp_path, fake_demo, model_name, preset
):
    make_sae("blocks.2.hook_resid_post", model_name="sae-explorer-demo").save_model(
        tmp_path / "sae"
    )
    source = Source(kind="local", paths=(str(tmp_path / "sae"),), model_name=model_name)
    loaded = load_source(source)
    assert fake_demo.requested == [preset]
    assert loaded.model is fake_demo.model
    assert [handle.name for handle in loaded.saes] == ["L2.resid_post"]


def test_saes_on_the_same_hook_are_told_apart_by_folder(tmp_path, model_loader):
    for name, seed in (("width_a", 0), ("width_b", 1)):
        make_sae("blocks.1.hook_resid_post", seed=seed).save_model(tmp_path / name)
    loaded = load_source(f"local:{tmp_path / 'width_a'},{tmp_path / 'width_b'}")
    assert [handle.name for handle in loaded.saes] == [
        "L1.resid_post.width_a",
        "L1.resid_post.width_b",
    ]


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(SourceError, match=f"The SAE folder {tmp_path / 'absent'} does not exist"):
        load_source(f"local:{tmp_path / 'absent'}")


@pytest.mark.parametrize(
    ("remove", "missing"),
    [("cfg.json", "no cfg.json"), ("sae_weights.safetensors", "no sae_weights")],
)
def test_incomplete_local_folder_names_the_missing_file(tmp_path, remove, missing):
    make_sae().save_model(tmp_path / "sae")
    (tmp_path / "sae" / remove).unlink()
    with pytest.raises(SourceError) as caught:
        load_source(f"local:{tmp_path / 'sae'}")
    assert str(tmp_path / "sae") in str(caught.value)
    assert missing in str(caught.value)


def test_sae_width_must_match_the_hook(tmp_path, model_loader):
    make_sae(d_in=24).save_model(tmp_path / "sae")
    with pytest.raises(SourceError) as caught:
        load_source(f"local:{tmp_path / 'sae'}")
    assert "d_in 24" in str(caught.value) and "width 16" in str(caught.value)


def test_hook_missing_from_the_model_is_named(tmp_path, model_loader):
    make_sae("blocks.7.hook_resid_post").save_model(tmp_path / "sae")
    with pytest.raises(SourceError, match="reads blocks.7.hook_resid_post, which the model"):
        load_source(f"local:{tmp_path / 'sae'}")


def test_unknown_model_name_suggests_transformer_lens_names(tmp_path):
    make_sae("blocks.1.hook_resid_post", model_name="gpt2-smal").save_model(tmp_path / "sae")
    with pytest.raises(SourceError) as caught:
        load_source(f"local:{tmp_path / 'sae'}")
    assert "'gpt2-smal' is not a TransformerLens model name" in str(caught.value)
    assert "gpt2-small" in str(caught.value)


def test_sae_without_a_model_name_asks_for_one(tmp_path):
    make_sae(model_name=None).save_model(tmp_path / "sae")
    with pytest.raises(SourceError, match="local:FOLDER@gpt2-small"):
        load_source(f"local:{tmp_path / 'sae'}")


# --------------------------------------------------------------------------- TopK checkpoints


@pytest.mark.parametrize("layout", ["sparsify", "linear_decoder", "openai", "saelens", "nested"])
def test_topk_conversion_matches_the_checkpoint_formula(layout):
    state = topk_checkpoint(layout)
    sae = topk_sae_from_state_dict(state, hook_name="blocks.8.hook_resid_post", model_name="llama")
    x = torch.randn(64, 2048, generator=torch.Generator().manual_seed(1))

    acts = sae.encode(x)
    expected = reference_topk_encode(state, x)
    assert (acts - expected).abs().max() < 1e-5
    active = (acts != 0).sum(dim=-1)
    assert active.max() <= 100 and active.float().mean() > 50  # TopK, and not trivially empty
    assert (sae.decode(acts) - reference_decode(state, expected)).abs().max() < 1e-4

    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (2048, 512, 100)
    assert sae.cfg.apply_b_dec_to_input and not sae.cfg.rescale_acts_by_decoder_norm
    assert sae.cfg.metadata.hook_name == "blocks.8.hook_resid_post"
    assert sae.cfg.metadata.model_name == "llama"
    assert not sae.training


@pytest.mark.parametrize("decoder_key", ["decoder.weight", "W_dec"])
def test_square_decoder_follows_its_key_convention(decoder_key):
    state = topk_checkpoint("sparsify", d_in=64, d_sae=64, k=8)
    decoder = state.pop("W_dec")  # [d_sae, d_in]
    state[decoder_key] = decoder.T.contiguous() if decoder_key == "decoder.weight" else decoder
    sae = topk_sae_from_state_dict(state, hook_name="blocks.0.hook_resid_post")
    assert torch.equal(sae.W_dec, decoder)


def test_checkpoint_settings_fill_in_the_hook():
    sae = topk_sae_from_state_dict(topk_checkpoint("nested", d_in=32, d_sae=16, k=4))
    assert sae.cfg.metadata.hook_name == "blocks.8.hook_resid_post"


def small_checkpoint(**changes) -> dict:
    state = topk_checkpoint("saelens", d_in=32, d_sae=16, k=4)
    state.update(changes)
    return {key: value for key, value in state.items() if value is not None}


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (small_checkpoint(b_enc=None), "no the encoder bias (expected one of b_enc)"),
        (small_checkpoint(b_dec=None), "no the decoder bias"),
        (small_checkpoint(W_dec=torch.zeros(10, 32)), "W_dec has shape [10, 32]"),
        (small_checkpoint(b_enc=torch.zeros(15)), "b_enc has shape [15]"),
        (small_checkpoint(b_dec=torch.zeros(31)), "b_dec has shape [31]"),
        (small_checkpoint(k=17), "k = 17 must be a whole number from 1 to d_sae = 16"),
        (small_checkpoint(k=0), "k = 0"),
        (small_checkpoint(k=None), "no k"),
        (small_checkpoint(d_in=30), "says d_in = 30, but its weights have d_in = 32"),
        (small_checkpoint(W_skip=torch.zeros(32, 32)), "does not use: ['W_skip']"),
        ({"weight": torch.zeros(4, 4), "k": 1}, "Expected either (encoder.weight"),
        (small_checkpoint(pre_bias=torch.ones(32)), "b_dec and pre_bias differ"),
    ],
)
def test_wrong_checkpoint_names_the_problem(state, problem):
    with pytest.raises(SourceError) as caught:
        topk_sae_from_state_dict(state, hook_name="blocks.0.hook_resid_post")
    assert problem in plain_text(caught.value)


def test_checkpoint_without_a_hook_asks_for_one():
    with pytest.raises(SourceError, match="topk:CHECKPOINT@MODEL#HOOK"):
        topk_sae_from_state_dict(small_checkpoint())


def test_topk_source_loads_a_saved_checkpoint_on_the_demo_model(tmp_path, fake_demo):
    state = topk_checkpoint("sparsify", d_in=D_MODEL, d_sae=64, k=8)
    torch.save(state, tmp_path / "layer0.pt")
    loaded = load_source(f"topk:{tmp_path / 'layer0.pt'}@demo:tiny#blocks.0.hook_resid_post")
    assert fake_demo.requested == ["tiny"]
    (handle,) = loaded.saes
    assert (handle.name, handle.layer) == ("L0.resid_post", 0)
    x = torch.randn(5, D_MODEL, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(handle.sae.encode(x), reference_topk_encode(state, x), atol=1e-6)


def test_topk_source_reads_sparsify_safetensors_with_cfg_json(tmp_path, fake_demo):
    from safetensors.torch import save_file

    state = topk_checkpoint("sparsify", d_in=D_MODEL, d_sae=64, k=8)
    k = state.pop("k")
    save_file(state, tmp_path / "sae.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"k": k, "d_in": D_MODEL, "num_latents": 64}))
    loaded = load_source(f"topk:{tmp_path / 'sae.safetensors'}@demo#blocks.1.hook_resid_post")
    assert loaded.saes[0].sae.cfg.k == 8
    x = torch.randn(5, D_MODEL, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loaded.saes[0].sae.encode(x), reference_topk_encode({**state, "k": k}, x))


class NotATensor:
    pass


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"certainly not a checkpoint", "Cannot read the checkpoint"),
        (NotATensor(), "weights_only=True"),
        ([torch.zeros(3)], "holds a list, not a dict of tensors"),
    ],
)
def test_unreadable_checkpoint_is_named(tmp_path, content, problem):
    path = tmp_path / "broken.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(SourceError) as caught:
        load_source(f"topk:{path}@demo#blocks.0.hook_resid_post")
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(SourceError, match=f"The checkpoint {tmp_path / 'gone.pt'} does not exist"):
        load_source(f"topk:{tmp_path / 'gone.pt'}@demo#blocks.0.hook_resid_post")


# --------------------------------------------------------------------------- Neuronpedia


def test_neuronpedia_url_needs_an_id_and_a_feature_in_range(fake_demo):
    loaded = load_source("demo")
    handle = loaded.saes[0]
    assert neuronpedia_url(handle, 3) is None
    linked = replace(handle, neuronpedia_id="gpt2-small/8-res-jb")
    assert neuronpedia_url(linked, 31) == "https://www.neuronpedia.org/gpt2-small/8-res-jb/31"
    with pytest.raises(InputError, match="features 0 to 31"):
        neuronpedia_url(linked, 32)
