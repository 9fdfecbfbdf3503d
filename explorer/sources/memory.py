"""How much memory a source needs before it is loaded, against what the machine has.

Owns the estimate and the refusal. The estimate reads only small files that are already
on disk, never weights and never the network: the model's parameter count from its
TransformerLens config (a demo bundle's `config.json`, or a Hugging Face `config.json` in
the local cache converted by TransformerLens) times the bytes of its dtype, plus each SAE's
encoder and decoder (`2 x d_in x d_sae` of its dtype, from its `cfg.json`; a TopK
checkpoint counts its file size). Loading costs more than the weights (a state dict and the
module exist side by side for a moment, and the tokenizer and Python objects add a fixed
amount), so the weights are scaled by `LOAD_FACTOR` and `LOAD_OVERHEAD_BYTES` is added,
both measured as the peak RSS growth of `load_source` (numbers beside the constants). When
a config is not on disk (a registry model before its first download) the estimate says so
and the check is skipped: the loader then reports what it cannot find.

Available memory is the smaller of the system's (`psutil`, else `/proc/meminfo`
MemAvailable) and what the cgroup limit leaves (`memory.max - memory.current`, or cgroup v1's
`limit_in_bytes - usage_in_bytes`). No streamlit here; the app calls `check_fits` from
`explorer.ui.resources.loaded_source` before loading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from sae_lens.constants import SAE_CFG_FILENAME
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from transformer_lens import HookedTransformerConfig
from transformer_lens.loading_from_pretrained import (
    convert_hf_model_config,
    get_official_model_name,
)

from explorer.errors import SourceError, markdown_escaped
from explorer.sources.source import Source

GB = 1e9
MB = 1e6
# Peak RSS growth of `load_source` <= LOAD_FACTOR x weight bytes + LOAD_OVERHEAD_BYTES. Measured
# in a fresh process after the app's imports, sampling RSS every 2 ms (bench/README.md, "Memory
# estimate"): the demo bundle (11.7 MB of weights) peaks at +24 to +26 MB; a GPT-2-small-shaped
# bundle (1,257 MB) at +1,314 MB (x1.05); GPT-2 small from a Hugging Face cache through
# TransformerLens's `from_pretrained_no_processing` plus one res-jb SAE (803 MB) at +1,214 MB
# (x1.51: the Hugging Face model and the converted one coexist while it loads). The factor
# covers the worst path with some margin; the overhead covers the tokenizer and Python objects.
LOAD_FACTOR = 1.6
LOAD_OVERHEAD_BYTES = 50_000_000
# cgroup v1 reports "no limit" as a huge number (2^63 rounded down to a page).
NO_CGROUP_LIMIT = 2**60
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
MEMINFO = Path("/proc/meminfo")
DEMO_NAMES = ("demo", "sae-explorer-demo")


@dataclass(frozen=True)
class MemoryEstimate:
    """The weights a source would load and the memory that takes at peak (bytes)."""

    model_name: str
    model_parameters: int | None  # None: the model's config is not on disk
    model_bytes: int | None
    sae_bytes: int | None  # all SAEs together; None: an SAE's config is not on disk
    n_saes: int
    unknown: str = ""  # what could not be estimated, and why

    @property
    def weight_bytes(self) -> int | None:
        if self.model_bytes is None or self.sae_bytes is None:
            return None
        return self.model_bytes + self.sae_bytes

    @property
    def needed_bytes(self) -> int | None:
        """Peak memory of the load: weights x LOAD_FACTOR + LOAD_OVERHEAD_BYTES."""
        weights = self.weight_bytes
        return None if weights is None else round(weights * LOAD_FACTOR + LOAD_OVERHEAD_BYTES)

    def describe(self) -> str:
        """E.g. `about 1.8 GB (gpt2 0.50 GB + 4 SAEs 0.60 GB of weights)`."""
        if self.needed_bytes is None:
            return f"memory not estimated: {self.unknown}"
        saes = f"{self.n_saes} SAE{'s' if self.n_saes != 1 else ''}"
        return (
            f"about {_gb(self.needed_bytes)} ({self.model_name} {_gb(self.model_bytes)} + "
            f"{saes} {_gb(self.sae_bytes)} of weights)"
        )


@dataclass(frozen=True)
class AvailableMemory:
    bytes: int
    where: str  # which limit it is: the system's or the cgroup's


# --------------------------------------------------------------------------- parameter counts


def model_parameters(cfg: Mapping[str, Any]) -> int:
    """Parameters of a TransformerLens HookedTransformer with this config
    (`HookedTransformerConfig.to_dict()`): embeddings, blocks, final norm and unembed."""
    d_model, n_layers = cfg["d_model"], cfg["n_layers"]
    d_head, n_heads = cfg["d_head"], cfg["n_heads"]
    n_kv_heads = cfg.get("n_key_value_heads") or n_heads
    norm = {"LN": 2 * d_model, "LNPre": 0, "RMS": d_model, "RMSPre": 0}.get(
        cfg.get("normalization_type") or "", 0
    )
    embed = cfg["d_vocab"] * d_model
    if cfg.get("positional_embedding_type", "standard") == "standard":
        embed += cfg["n_ctx"] * d_model
    attention = 2 * n_heads * d_model * d_head + 2 * n_kv_heads * d_model * d_head
    attention += n_heads * d_head + 2 * n_kv_heads * d_head + d_model  # b_Q, b_K, b_V, b_O
    block = attention + norm
    if not cfg.get("attn_only"):
        d_mlp = cfg["d_mlp"]
        expert = (3 if cfg.get("gated_mlp") else 2) * d_model * d_mlp + d_mlp + d_model
        experts = cfg.get("num_experts")
        block += norm + (experts * expert + d_model * experts if experts else expert)
    d_vocab_out = cfg.get("d_vocab_out") or cfg["d_vocab"]
    unembed = d_model * d_vocab_out + d_vocab_out
    return embed + n_layers * block + norm + unembed


def sae_bytes(d_in: int, d_sae: int, dtype: str = "float32") -> int:
    """An SAE's encoder and decoder matrices plus its two biases."""
    return (2 * d_in * d_sae + d_sae + d_in) * _dtype_bytes(dtype)


def _dtype_bytes(dtype: str | torch.dtype) -> int:
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    found = getattr(torch, str(dtype).removeprefix("torch."), None)
    return found.itemsize if isinstance(found, torch.dtype) else 4


# --------------------------------------------------------------------------- estimates


def estimate_source(source: Source | str) -> MemoryEstimate:
    """The memory `load_source(source)` would need, from configs on disk only."""
    if isinstance(source, str):
        source = Source.parse(source)
    if source.kind == "demo":
        saes, model_name = _bundle_saes(source.preset), source.preset
        model = _bundle_model(source.preset)
    elif source.kind == "registry":
        saes, model_name = _registry_saes(source)
        model = _model_config(model_name)
    else:
        saes, metadata_name = _disk_saes(source)
        model_name = source.model_name or metadata_name or "the model"
        model = _model_config(model_name)
    model_config, model_unknown = model
    sae_sizes = [size for size, _ in saes]
    unknown = [why for _, why in saes if why]
    parameters = model_bytes = None
    if model_config is None:
        unknown.append(model_unknown)
    else:
        parameters = model_parameters(model_config)
        model_bytes = parameters * _dtype_bytes(model_config.get("dtype", "float32"))
    if model_config is not None:
        model_name = str(model_config.get("model_name") or model_name)
    return MemoryEstimate(
        model_name=model_name,
        model_parameters=parameters,
        model_bytes=model_bytes,
        sae_bytes=None if None in sae_sizes else sum(sae_sizes),
        n_saes=len(saes),
        unknown="; ".join(dict.fromkeys(unknown)),
    )


SaeSize = tuple[int | None, str]  # bytes (None: unknown) and why it is unknown


def _bundle_dir(preset: str) -> Path:
    from explorer.sources.demo_bundle import bundle_path

    return bundle_path(preset)


def _bundle_model(preset: str) -> tuple[dict[str, Any] | None, str]:
    path = _bundle_dir(preset) / "model" / "config.json"
    raw = _read_json(path)
    if raw is None:
        return None, f"no readable model config at {path}"
    return _lens_config(raw, path)


def _bundle_saes(preset: str) -> list[SaeSize]:
    bundle = _bundle_dir(preset)
    manifest = _read_json(bundle / "manifest.json")
    if manifest is None or not isinstance(manifest.get("hook_names"), list):
        return [(None, f"no readable manifest at {bundle / 'manifest.json'}")]
    hooks = [str(hook) for hook in manifest["hook_names"]]
    return [_sae_size(bundle / "saes" / hook / SAE_CFG_FILENAME)[0] for hook in hooks]


def _registry_saes(source: Source) -> tuple[list[SaeSize], str]:
    lookup = get_pretrained_saes_directory().get(source.release or "")
    if lookup is None:
        return [(None, f"{source.release!r} is not a SAELens release")], "the model"
    sizes, names = [], set()
    for sae_id in source.sae_ids:
        folder = lookup.saes_map.get(sae_id)
        cached = None
        if folder is not None and lookup.conversion_func is None:
            cached = try_to_load_from_cache(lookup.repo_id, f"{folder}/{SAE_CFG_FILENAME}")
        if not isinstance(cached, str):
            sizes.append((None, f"the SAE {sae_id}'s config is not in the local cache"))
            continue
        size, model_name = _sae_size(Path(cached))
        sizes.append(size)
        names.add(model_name)
    names.discard(None)
    return sizes, names.pop() if len(names) == 1 else lookup.model


def _disk_saes(source: Source) -> tuple[list[SaeSize], str | None]:
    sizes, names = [], set()
    for path in map(Path, source.paths):
        if source.kind == "topk":
            sizes.append(
                (path.stat().st_size, "") if path.is_file() else (None, f"no checkpoint {path}")
            )
            continue
        size, model_name = _sae_size(path / SAE_CFG_FILENAME)
        sizes.append(size)
        names.add(model_name)
    names.discard(None)
    return sizes, names.pop() if len(names) == 1 else None


def _sae_size(cfg_path: Path) -> tuple[SaeSize, str | None]:
    """The SAE's bytes from its cfg.json (SAELens 6 or older layout), and its model name."""
    cfg = _read_json(cfg_path)
    if cfg is None:
        return (None, f"no readable SAE config at {cfg_path}"), None
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    model_name = metadata.get("model_name") or cfg.get("model_name")
    if not (isinstance(cfg.get("d_in"), int) and isinstance(cfg.get("d_sae"), int)):
        return (None, f"{cfg_path} has no d_in and d_sae"), model_name
    return (sae_bytes(cfg["d_in"], cfg["d_sae"], cfg.get("dtype", "float32")), ""), model_name


def _model_config(model_name: str) -> tuple[dict[str, Any] | None, str]:
    """The TransformerLens config of a demo bundle or of a model whose Hugging Face config
    is in the local cache (never downloaded here)."""
    if model_name in DEMO_NAMES:
        return _bundle_model("demo")
    if model_name.startswith("demo:"):
        return _bundle_model(model_name.removeprefix("demo:"))
    if Path(model_name).is_dir():
        return _bundle_model(model_name)
    try:
        official = get_official_model_name(model_name)
    except ValueError:
        return None, f"{model_name!r} is not a TransformerLens model name"
    cached = try_to_load_from_cache(official, "config.json")
    if not isinstance(cached, str):
        return None, (
            f"{official}'s config.json is not in the local Hugging Face cache yet "
            "(it is downloaded with the model)"
        )
    try:
        converted = convert_hf_model_config(str(Path(cached).parent))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        return None, f"cannot read {official}'s cached config ({error})"
    return _lens_config({**converted, "model_name": official}, Path(cached))


def _lens_config(raw: Mapping[str, Any], where: Path) -> tuple[dict[str, Any] | None, str]:
    """A config filled in by TransformerLens (d_vocab_out, n_key_value_heads, ...)."""
    try:
        return HookedTransformerConfig.from_dict(dict(raw)).to_dict(), ""
    except (TypeError, ValueError, KeyError, AssertionError) as error:
        return None, f"{where} is not a TransformerLens config ({error})"


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file; None when the file is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- available memory


def available_memory() -> AvailableMemory | None:
    """The memory a new allocation can use: the system's and the cgroup's, the smaller
    (None when neither can be read)."""
    system, cgroup = _system_available(), _cgroup_available()
    if cgroup is not None and (system is None or cgroup < system):
        return AvailableMemory(cgroup, "left under this container's memory limit")
    return None if system is None else AvailableMemory(system, "available")


def _system_available() -> int | None:
    try:
        import psutil
    except ImportError:
        try:
            lines = MEMINFO.read_text().splitlines()
        except OSError:
            return None
        found = [line.split()[1] for line in lines if line.startswith("MemAvailable:")]
        return int(found[0]) * 1024 if found else None  # kB
    return int(psutil.virtual_memory().available)


def _cgroup_available() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1); None when unlimited."""
    for limit_file, usage_file in (
        (CGROUP_V2 / "memory.max", CGROUP_V2 / "memory.current"),
        (CGROUP_V1 / "memory.limit_in_bytes", CGROUP_V1 / "memory.usage_in_bytes"),
    ):
        try:
            limit = limit_file.read_text().strip()
            usage = int(usage_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= NO_CGROUP_LIMIT:
            return None
        return max(int(limit) - usage, 0)
    return None


def check_fits(estimate: MemoryEstimate, available: AvailableMemory | None = None) -> None:
    """Refuse with a SourceError a load that needs more memory than is available."""
    needed = estimate.needed_bytes
    available = available or available_memory()
    if needed is None or available is None:
        return
    if needed > available.bytes:
        raise SourceError(
            f"Loading {markdown_escaped(estimate.model_name)} with its {estimate.n_saes} SAE(s) "
            "needs "
            f"{markdown_escaped(estimate.describe())}; this machine has {_gb(available.bytes)} "
            f"{markdown_escaped(available.where)}. "
            "Load fewer SAEs, or a smaller model (the `demo` source needs about "
            f"{_gb(estimate_source('demo').needed_bytes)})."
        )


def _gb(n_bytes: int | None) -> str:
    """Bytes for people: `42 MB`, `1.71 GB`, `24 GB`."""
    if n_bytes is None:
        return "an unknown amount"
    if n_bytes < GB:
        return f"{n_bytes / MB:.0f} MB"
    return f"{n_bytes / GB:.2f} GB" if n_bytes < 10 * GB else f"{n_bytes / GB:.0f} GB"
