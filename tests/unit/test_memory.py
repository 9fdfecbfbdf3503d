"""Tests of explorer.sources.memory: parameter counts against the modules TransformerLens and
SAELens
build, estimates of each source kind from configs on disk (a fake Hugging Face cache for the
registry path), the available memory (cgroup and /proc/meminfo), the refusal, and that the
estimate bounds the peak RSS growth of a real load."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants
from sae_lens import TopKSAE, TopKSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

from explorer.errors import SourceError
from explorer.sources import memory
from explorer.sources.memory import (
    AvailableMemory,
    MemoryEstimate,
    check_fits,
    estimate_source,
    model_parameters,
    sae_bytes,
)
from explorer.sources.source import load_source

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0" * 40
RES_JB = "jbloom/GPT2-Small-SAEs-Reformatted"


def n_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def n_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def tiny_config(**overrides) -> HookedTransformerConfig:
    cfg = dict(
        n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=101, n_ctx=24,
        act_fn="gelu_new", normalization_type="LN", model_name="tiny", seed=0,
    )  # fmt: skip
    return HookedTransformerConfig(**{**cfg, **overrides})


def cache_snapshot(hub: Path, repo: str) -> Path:
    """The snapshot folder of `repo` in a Hugging Face cache laid out as huggingface_hub does."""
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty local Hugging Face cache that the estimate reads instead of the real one."""
    folder = tmp_path / "hub"
    folder.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(folder))
    return folder


# --------------------------------------------------------------------------- parameter counts


def test_model_parameters_equal_the_demo_models_actual_count():
    loaded = load_source("demo")
    assert model_parameters(loaded.model.cfg.to_dict()) == n_parameters(loaded.model) == 1_862_400


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"normalization_type": "RMS", "positional_embedding_type": "rotary", "rotary_dim": 8},
        {"gated_mlp": True, "act_fn": "silu", "normalization_type": "RMS"},
        {"n_key_value_heads": 2, "positional_embedding_type": "rotary", "rotary_dim": 8},
        {"attn_only": True, "normalization_type": None},
        {"d_vocab_out": 57},
    ],
    ids=["gpt2-like", "rms-rotary", "gated", "grouped-query", "attn-only", "own-unembed"],
)
def test_model_parameters_equal_what_transformer_lens_builds(overrides):
    config = tiny_config(**overrides)
    assert model_parameters(config.to_dict()) == n_parameters(HookedTransformer(config))


def test_sae_bytes_equal_the_demo_saes_parameters():
    loaded = load_source("demo")
    for handle in loaded.saes:
        cfg = handle.sae.cfg
        assert sae_bytes(cfg.d_in, cfg.d_sae, cfg.dtype) == n_bytes(handle.sae)
    assert sae_bytes(768, 24576, "float32") == (2 * 768 * 24576 + 24576 + 768) * 4
    assert sae_bytes(768, 24576, "torch.bfloat16") == (2 * 768 * 24576 + 24576 + 768) * 2


# --------------------------------------------------------------------------- estimates


def test_demo_estimate_is_the_weights_of_what_loads():
    loaded = load_source("demo")
    estimate = estimate_source("demo")
    assert estimate.model_parameters == n_parameters(loaded.model)
    assert estimate.model_bytes == n_bytes(loaded.model)
    assert estimate.sae_bytes == sum(n_bytes(handle.sae) for handle in loaded.saes)
    assert estimate.n_saes == 4 and not estimate.unknown
    weights = n_bytes(loaded.model) + sum(n_bytes(handle.sae) for handle in loaded.saes)
    assert estimate.needed_bytes == round(weights * memory.LOAD_FACTOR + memory.LOAD_OVERHEAD_BYTES)
    assert estimate.describe().startswith("about ")
    assert "sae-explorer-demo" in estimate.describe() and "4 SAEs" in estimate.describe()


def test_local_and_topk_estimates_read_the_files(tmp_path):
    demo = load_source("demo")
    folder = tmp_path / "sae"
    demo.saes[1].sae.save_model(str(folder))
    estimate = estimate_source(f"local:{folder}")
    assert estimate.sae_bytes == n_bytes(demo.saes[1].sae)
    assert estimate.model_bytes == n_bytes(demo.model)  # the model named in the SAE's metadata

    sae = TopKSAE(TopKSAEConfig(d_in=128, d_sae=256, k=4))
    checkpoint = tmp_path / "topk.pt"
    torch.save({name: tensor for name, tensor in sae.state_dict().items()} | {"k": 4}, checkpoint)
    estimate = estimate_source(f"topk:{checkpoint}@demo#blocks.1.hook_resid_post")
    assert estimate.sae_bytes == checkpoint.stat().st_size
    assert estimate.model_bytes == n_bytes(demo.model)


def test_registry_estimate_reads_the_local_hugging_face_cache(hub):
    spec = "saelens:gpt2-small-res-jb:blocks.8.hook_resid_pre,blocks.10.hook_resid_pre"
    cold = estimate_source(spec)
    assert cold.needed_bytes is None
    assert "not in the local cache" in cold.unknown and "gpt2's config.json" in cold.unknown
    assert cold.describe().startswith("memory not estimated")
    check_fits(cold, AvailableMemory(1, "available"))  # unknown: not refused

    for layer in (8, 10):
        folder = cache_snapshot(hub, RES_JB) / f"blocks.{layer}.hook_resid_pre"
        folder.mkdir()
        (folder / "cfg.json").write_text(
            json.dumps({"model_name": "gpt2-small", "d_in": 768, "d_sae": 24576,
                        "dtype": "torch.float32", "hook_point": f"blocks.{layer}.hook_resid_pre"})
        )  # fmt: skip
    gpt2 = cache_snapshot(hub, "gpt2")
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2, "n_embd": 48,
        "n_head": 4, "n_positions": 40, "n_ctx": 40, "vocab_size": 300,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
    }  # fmt: skip
    (gpt2 / "config.json").write_text(json.dumps(hf_config))
    warm = estimate_source(spec)
    built = HookedTransformer(
        tiny_config(n_layers=2, d_model=48, n_heads=4, d_head=12, d_mlp=192, d_vocab=300, n_ctx=40)
    )
    assert warm.model_name == "gpt2" and not warm.unknown
    assert warm.model_parameters == n_parameters(built)
    assert warm.sae_bytes == 2 * (2 * 768 * 24576 + 24576 + 768) * 4
    assert warm.n_saes == 2


def test_unreadable_configs_leave_the_estimate_unknown(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cfg.json").write_text("{not json")
    estimate = estimate_source(f"local:{broken}@demo")
    assert estimate.needed_bytes is None
    assert estimate.unknown == f"no readable SAE config at {broken / 'cfg.json'}"
    bundle = tmp_path / "bundle"
    (bundle / "model").mkdir(parents=True)
    (bundle / "model" / "config.json").write_text('{"d_model": "wide"}')
    estimate = estimate_source(f"demo:{bundle}")
    assert estimate.needed_bytes is None and "no readable manifest" in estimate.unknown
    assert "is not a TransformerLens config" in estimate.unknown


def test_unknown_release_is_left_to_the_loader(hub):
    estimate = estimate_source("registry:no-such-release:x")
    assert estimate.needed_bytes is None and "not a SAELens release" in estimate.unknown


# --------------------------------------------------------------------------- available memory


def test_cgroup_limit_wins_when_it_is_lower(tmp_path, monkeypatch):
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("1000000000\n")
    (cgroup / "memory.current").write_text("400000000\n")
    monkeypatch.setattr(memory, "CGROUP_V2", cgroup)
    monkeypatch.setattr(memory, "_system_available", lambda: 5_000_000_000)
    assert memory.available_memory() == AvailableMemory(
        600_000_000, "left under this container's memory limit"
    )
    (cgroup / "memory.max").write_text("max\n")
    assert memory.available_memory() == AvailableMemory(5_000_000_000, "available")


def test_meminfo_is_read_without_psutil(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 2048000 kB\nMemFree: 100 kB\nMemAvailable: 1536000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    assert memory._system_available() == 1536000 * 1024


# --------------------------------------------------------------------------- refusal


def test_a_load_that_does_not_fit_is_refused_with_both_numbers():
    estimate = MemoryEstimate(
        model_name="gpt2",
        model_parameters=163_087_441,
        model_bytes=652_349_764,
        sae_bytes=4 * 151_096_320,
        n_saes=4,
    )
    needed = (652_349_764 + 4 * 151_096_320) * memory.LOAD_FACTOR + memory.LOAD_OVERHEAD_BYTES
    assert estimate.needed_bytes == round(needed)
    with pytest.raises(SourceError) as refused:
        check_fits(estimate, AvailableMemory(900_000_000, "available"))
    message = str(refused.value)
    assert f"needs about {needed / 1e9:.2f} GB" in message
    assert "gpt2 652 MB + 4 SAEs 604 MB of weights" in message
    assert "this machine has 900 MB available" in message
    check_fits(estimate, AvailableMemory(round(needed) + 1, "available"))  # fits: no error


def test_loaded_source_refuses_before_loading(monkeypatch):
    """The app's loader checks first: with 10 MB available the demo source is refused."""
    from explorer.ui import resources

    monkeypatch.setattr(memory, "available_memory", lambda: AvailableMemory(10_000_000, "free"))
    resources._loaded_source.clear()
    calls = []
    monkeypatch.setattr(resources, "load_source", lambda source: calls.append(source))
    with pytest.raises(SourceError, match="this machine has 10 MB free"):
        resources.loaded_source("demo")
    assert calls == []
    resources._loaded_source.clear()


# --------------------------------------------------------------------------- the measured bound


@pytest.mark.slow  # a fresh interpreter imports torch and the model libraries (~27 s)
def test_the_estimate_bounds_the_peak_rss_growth_of_a_load(tiny_bundle_path):
    """Load the tiny bundle in a fresh process, sampling RSS every 2 ms: the peak growth over
    the RSS after the imports (torch, transformer-lens, sae-lens and transformers, which the
    app imports once before its first load) stays under the estimate."""
    pytest.importorskip("psutil")
    script = textwrap.dedent(
        f"""
        import json, threading, time
        import psutil
        import explorer.sources.demo_bundle  # the model libraries: imported before any load
        from explorer.sources.source import load_source
        process = psutil.Process()
        base = peak = process.memory_info().rss
        done = False
        def sample():
            global peak
            while not done:
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.002)
        thread = threading.Thread(target=sample)
        thread.start()
        load_source("demo:{tiny_bundle_path}")
        done = True
        thread.join()
        print(json.dumps({{"growth": peak - base}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    growth = json.loads(result.stdout.strip().splitlines()[-1])["growth"]
    estimate = estimate_source(f"demo:{tiny_bundle_path}")
    assert 0 < growth <= estimate.needed_bytes
