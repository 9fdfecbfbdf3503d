"""Where models and SAEs come from.

A `Source` names a TransformerLens model plus a set of SAELens SAEs, in one of four kinds:
the offline demo bundle (`demo`), SAELens's pretrained registry (`registry`), SAELens
folders on disk (`local`), and plain PyTorch TopK checkpoints as research code saves them
(`topk`), converted here into SAELens `TopKSAE`s. `load_source` turns a Source into a
`LoadedSource`: the model in eval mode with its tokenizer, and one `SaeHandle` per SAE with
the hook name, layer and Neuronpedia id taken from the SAE's own metadata. Hugging Face
downloads fail fast with a `SourceError` naming the offline alternatives when the hub
cannot be reached and the local cache is cold.

This module does not run the model or encode activations (`extract.py`), write stores
(`store.py`), train the demo bundle (`demo.py`) or render anything (`explorer/ui/`).
"""

from __future__ import annotations

import difflib
import json
import pickle
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import httpx2
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import get_session
from jaxtyping import Float
from sae_lens import SAE, TopKSAE, TopKSAEConfig
from sae_lens.constants import DTYPE_TO_STR, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
from sae_lens.loading.pretrained_saes_directory import (
    PretrainedSAELookup,
    get_pretrained_saes_directory,
)
from sae_lens.saes.sae import SAEMetadata
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformer_lens import HookedTransformer
from transformer_lens.loading_from_pretrained import make_model_alias_map

from explorer import request_hooks
from explorer.errors import InputError, SourceError
from explorer.hooks import block_of

if TYPE_CHECKING:  # demo.py is imported lazily: only demo-backed sources need it
    from explorer.demo import DemoBundle

SourceKind = Literal["demo", "registry", "local", "topk"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
SPEC_FORMS = (
    "demo | demo:tiny | demo:BUNDLE_FOLDER",
    "registry:RELEASE:SAE_ID[,SAE_ID...] (or saelens:RELEASE:SAE_ID[,SAE_ID...])",
    "local:FOLDER[,FOLDER...][@MODEL]",
    "topk:CHECKPOINT[,CHECKPOINT...][@MODEL][#HOOK]",
)
OFFLINE_ALTERNATIVES = (
    "the `demo` source (the bundled demo model and SAEs, always available), "
    "SAELens folders on disk (`local:PATH[,PATH...][@MODEL]`), or a TopK checkpoint "
    "(`topk:CHECKPOINT@MODEL#HOOK`); MODEL may be `demo` or `demo:tiny`"
)
HUB_PROBE_TIMEOUT_S = 3.0
NEURONPEDIA_URL = "https://www.neuronpedia.org"
# Which Source fields each kind uses; the others must keep their defaults.
KIND_FIELDS: dict[str, frozenset[str]] = {
    "demo": frozenset({"preset"}),
    "registry": frozenset({"release", "sae_ids"}),
    "local": frozenset({"paths", "model_name"}),
    "topk": frozenset({"paths", "model_name", "hook_name"}),
}
# Hook points whose activation width is the residual stream's (d_model).
D_MODEL_HOOKS = frozenset(
    {"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"}
)
# Keys of a TopK checkpoint: encoder weight, encoder bias, decoder weight, decoder bias.
TOPK_LAYOUTS = (
    "encoder.weight [d_sae, d_in], encoder.bias (or latent_bias) [d_sae], "
    "W_dec (or decoder.weight), b_dec (or decoder.bias or pre_bias) [d_in], k",
    "W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], k",
)
DECODER_KEYS = ("W_dec", "decoder.weight")
DECODER_BIAS_KEYS = ("b_dec", "decoder.bias", "pre_bias")
TOPK_SETTINGS = ("k", "d_in", "d_sae", "hook_name", "model_name")
# Training-time buffers some checkpoints carry; they play no part in encoding.
TOPK_IGNORED_TENSORS = frozenset({"stats_last_nonzero", "num_tokens_since_fired"})
HubState = Literal["online", "unreachable", "disabled"]
T = TypeVar("T")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Source:
    """A model plus a set of SAEs; `spec()` is the string form stored with a build."""

    kind: SourceKind
    preset: str = "demo"
    release: str | None = None
    sae_ids: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    model_name: str | None = None
    hook_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise _spec_error(f"unknown source kind {self.kind!r}")
        object.__setattr__(self, "sae_ids", tuple(self.sae_ids))
        object.__setattr__(self, "paths", tuple(str(path) for path in self.paths))
        for item in fields(self):
            used = item.name == "kind" or item.name in KIND_FIELDS[self.kind]
            if not used and getattr(self, item.name) != item.default:
                raise _spec_error(f"`{item.name}` does not apply to a {self.kind} source")
        if self.kind == "demo" and not self.preset:
            raise _spec_error("a demo source needs a preset or bundle folder")
        if self.kind == "registry" and not (self.release and self.sae_ids):
            raise _spec_error("a registry source needs a release and at least one sae_id")
        if self.kind in ("local", "topk") and not self.paths:
            raise _spec_error(f"a {self.kind} source needs at least one path")
        for name in ("sae_ids", "paths"):
            items = getattr(self, name)
            if any(not item or "," in item for item in items):
                raise _spec_error(f"each of {name} must be non-empty and free of commas")
            if len(set(items)) != len(items):
                raise _spec_error(f"{name} lists {_duplicates(items)} more than once")

    @classmethod
    def parse(cls, spec: str) -> Source:
        """Read a spec string such as `demo:tiny` or `registry:RELEASE:ID1,ID2`."""
        kind, has_rest, rest = spec.strip().partition(":")
        if kind == "demo":
            return cls(kind="demo", preset=rest if has_rest else "demo")
        if kind in ("registry", "saelens"):  # saelens: is an alias
            release, _, sae_ids = rest.partition(":")
            return cls(kind="registry", release=release or None, sae_ids=_split_list(sae_ids))
        if kind == "local":
            paths, model_name = _cut_last(rest, "@")
            return cls(kind="local", paths=_split_list(paths), model_name=model_name)
        if kind == "topk":
            rest, hook_name = _cut_last(rest, "#")
            paths, model_name = _cut_last(rest, "@")
            return cls(
                kind="topk", paths=_split_list(paths), model_name=model_name, hook_name=hook_name
            )
        raise _spec_error(f"cannot read the source {spec!r}")

    def spec(self) -> str:
        """The spec string `parse` reads back into an equal Source."""
        if self.kind == "demo":
            return "demo" if self.preset == "demo" else f"demo:{self.preset}"
        if self.kind == "registry":
            return f"registry:{self.release}:{','.join(self.sae_ids)}"
        spec = f"{self.kind}:{','.join(self.paths)}"
        if self.model_name:
            spec += f"@{self.model_name}"
        if self.hook_name:
            spec += f"#{self.hook_name}"
        return spec


@dataclass(frozen=True)
class SaeHandle:
    """One SAE of a source, with the hook it reads and the name the store and UI use."""

    name: str
    hook_name: str
    layer: int
    sae: SAE
    release: str | None = None
    sae_id: str | None = None
    neuronpedia_id: str | None = None


@dataclass
class LoadedSource:
    """A loaded model (eval mode) and its SAEs, sorted by layer. Shared: never mutate."""

    source: Source
    model: HookedTransformer
    saes: list[SaeHandle]

    def __post_init__(self) -> None:
        # at load time, before the model is shared: per-request hooks (see request_hooks)
        request_hooks.install(self.model, [handle.hook_name for handle in self.saes])

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def sae(self, name: str) -> SaeHandle:
        for handle in self.saes:
            if handle.name == name:
                return handle
        names = ", ".join(handle.name for handle in self.saes)
        raise SourceError(f"No SAE named {name!r} in {self.source.spec()}; its SAEs are: {names}.")


# --------------------------------------------------------------------------- loading


def load_source(source: Source | str, device: str = "cpu") -> LoadedSource:
    """Load a source's model and SAEs onto `device`; user problems raise SourceError."""
    if isinstance(source, str):
        source = Source.parse(source)
    loaders: dict[str, Callable[[Source, str], tuple[HookedTransformer, list[SaeHandle]]]] = {
        "demo": _load_demo,
        "registry": _load_registry,
        "local": _load_local,
        "topk": _load_topk,
    }
    model, handles = loaders[source.kind](source, device)
    model = model.to(device, print_details=False).eval()
    for handle in handles:
        handle.sae.to(device).eval()
        _check_fits(model, handle)
    return LoadedSource(
        source=source, model=model, saes=sorted(handles, key=lambda handle: handle.layer)
    )


def _load_demo(source: Source, device: str) -> tuple[HookedTransformer, list[SaeHandle]]:
    bundle = _demo_bundle(source.preset)
    return bundle.model, [_handle(sae) for sae in bundle.saes.values()]


def _load_registry(source: Source, device: str) -> tuple[HookedTransformer, list[SaeHandle]]:
    assert source.release is not None
    lookup = _registry_lookup(source.release, source.sae_ids)
    hub_state = _hub_state()
    handles = []
    for sae_id in source.sae_ids:
        sae = _from_hub(
            partial(SAE.from_pretrained, source.release, sae_id, device=device),
            f"the SAE {source.release}/{sae_id}",
            hub_state,
        )
        handles.append(
            _handle(
                sae,
                name=sae_id,
                release=source.release,
                sae_id=sae_id,
                neuronpedia_id=lookup.neuronpedia_id.get(sae_id),
            )
        )
    overrides = lookup.config_overrides or {}
    model_name, model_kwargs = _metadata_model(
        [handle.sae for handle in handles],
        fallback_name=lookup.model,
        fallback_kwargs=overrides.get("model_from_pretrained_kwargs"),
    )
    return _load_lens_model(model_name, model_kwargs, device, hub_state), handles


def _load_local(source: Source, device: str) -> tuple[HookedTransformer, list[SaeHandle]]:
    saes = [_read_sae_folder(Path(path), device) for path in source.paths]
    handles = _unique_names(
        [_handle(sae) for sae in saes], origins=[Path(path).name for path in source.paths]
    )
    return _model_for(source.model_name, saes, device), handles


def _load_topk(source: Source, device: str) -> tuple[HookedTransformer, list[SaeHandle]]:
    saes = [
        topk_sae_from_state_dict(
            read_checkpoint(Path(path)), hook_name=source.hook_name, model_name=source.model_name
        )
        for path in source.paths
    ]
    handles = _unique_names(
        [_handle(sae) for sae in saes], origins=[Path(path).stem for path in source.paths]
    )
    return _model_for(source.model_name, saes, device), handles


def _demo_bundle(preset: str) -> DemoBundle:
    from explorer.demo import bundle_path, load_bundle

    path = bundle_path(preset)
    try:
        return load_bundle(path)
    except OSError as error:
        raise SourceError(f"Cannot load the demo bundle at {path}: {error}") from error


def _model_for(model_name: str | None, saes: list[SAE], device: str) -> HookedTransformer:
    """The model named by the source, else by the SAEs' metadata (a demo bundle or a TL name)."""
    from explorer.demo import MODEL_NAME as DEMO_MODEL_NAME

    if model_name is None:
        model_name, model_kwargs = _metadata_model(saes)
    else:
        matching = [sae for sae in saes if sae.cfg.metadata.model_name == model_name]
        model_kwargs = _metadata_model(matching)[1] if matching else {}
    if model_name in ("demo", DEMO_MODEL_NAME):
        return _demo_bundle("demo").model
    if model_name.startswith("demo:"):
        return _demo_bundle(model_name.removeprefix("demo:")).model
    if Path(model_name).is_dir():
        return _demo_bundle(model_name).model
    return _load_lens_model(model_name, model_kwargs, device, _hub_state())


def _metadata_model(
    saes: list[SAE],
    fallback_name: str | None = None,
    fallback_kwargs: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The model name and `model_from_pretrained_kwargs` the SAEs' metadata asks for."""
    names = {sae.cfg.metadata.model_name or fallback_name for sae in saes}
    if None in names or len(names) != 1:
        shown = ", ".join(sorted(str(name) for name in names))
        raise SourceError(
            f"Cannot tell which model these SAEs belong to (their metadata names: {shown}); "
            "name it in the source, e.g. `local:FOLDER@gpt2-small` or `local:FOLDER@demo`."
        )
    kwargs = next(
        (
            sae.cfg.metadata.model_from_pretrained_kwargs
            for sae in saes
            if sae.cfg.metadata.model_from_pretrained_kwargs
        ),
        fallback_kwargs or {},
    )
    return names.pop(), dict(kwargs)


def _load_lens_model(
    model_name: str, model_kwargs: dict[str, Any], device: str, hub_state: HubState
) -> HookedTransformer:
    """Load a TransformerLens model the way SAELens's `load_model` does for these kwargs."""

    def load() -> HookedTransformer:
        try:
            return HookedTransformer.from_pretrained_no_processing(
                model_name=model_name, **{**model_kwargs, "device": device}
            )
        except ValueError as error:
            aliases = make_model_alias_map()
            if model_name.lower() in aliases:
                raise
            closest = difflib.get_close_matches(model_name.lower(), aliases, n=5)
            raise SourceError(
                f"{model_name!r} is not a TransformerLens model name "
                f"(closest: {', '.join(closest) or 'none'}). Name a TransformerLens model, "
                "or `demo` / `demo:tiny` / a demo bundle folder."
            ) from error

    return _from_hub(load, f"the model {model_name}", hub_state)


def _read_sae_folder(path: Path, device: str) -> SAE:
    if not path.is_dir():
        raise SourceError(f"The SAE folder {path} does not exist.")
    missing = [
        name for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME) if not (path / name).is_file()
    ]
    if missing:
        raise SourceError(
            f"The SAE folder {path} has no {' and no '.join(missing)}; a SAELens folder "
            f"(written by `sae.save_model(folder)`) holds {SAE_CFG_FILENAME} and "
            f"{SAE_WEIGHTS_FILENAME}."
        )
    try:
        return SAE.load_from_disk(path, device=device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise SourceError(f"Cannot load the SAELens folder {path}: {error}") from error


# --------------------------------------------------------------------------- handles


def _handle(
    sae: SAE,
    name: str | None = None,
    release: str | None = None,
    sae_id: str | None = None,
    neuronpedia_id: str | None = None,
) -> SaeHandle:
    """Describe an SAE from its own metadata; the registry may fill in the Neuronpedia id."""
    hook_name = sae.cfg.metadata.hook_name
    if not hook_name:
        raise SourceError(
            f"The SAE {name or sae_id or ''} does not say which hook it reads "
            "(no hook_name in its metadata)."
        )
    layer = _layer_of(hook_name)
    return SaeHandle(
        name=name or _short_name(hook_name, layer),
        hook_name=hook_name,
        layer=layer,
        sae=sae,
        release=release,
        sae_id=sae_id,
        neuronpedia_id=sae.cfg.metadata.neuronpedia_id or neuronpedia_id,
    )


def _layer_of(hook_name: str) -> int:
    """`blocks.8.hook_resid_pre` -> 8."""
    layer = block_of(hook_name)
    if layer is None:
        raise SourceError(
            f"The hook {hook_name!r} is not inside a transformer block "
            "(expected blocks.<layer>.<hook>, e.g. blocks.8.hook_resid_pre)."
        )
    return layer


def _short_name(hook_name: str, layer: int) -> str:
    """`blocks.2.hook_resid_post` -> `L2.resid_post`; `blocks.0.attn.hook_z` -> `L0.attn.z`."""
    inner = hook_name.removeprefix(f"blocks.{layer}.")
    return f"L{layer}." + ".".join(part.removeprefix("hook_") for part in inner.split("."))


def _unique_names(handles: list[SaeHandle], origins: list[str]) -> list[SaeHandle]:
    """SAEs sharing a hook are told apart by their folder or file name."""
    counts = Counter(handle.name for handle in handles)
    renamed = [
        replace(handle, name=f"{handle.name}.{origin}") if counts[handle.name] > 1 else handle
        for handle, origin in zip(handles, origins, strict=True)
    ]
    names = [handle.name for handle in renamed]
    if len(set(names)) != len(names):
        raise SourceError(
            f"Several SAEs would be called {_duplicates(names)}; give their folders or "
            "files distinct names."
        )
    return renamed


def _check_fits(model: HookedTransformer, handle: SaeHandle) -> None:
    """The SAE's hook exists in the model and its d_in matches the hook's width."""
    model_name = model.cfg.model_name
    if handle.hook_name not in model.hook_dict:
        closest = difflib.get_close_matches(handle.hook_name, model.hook_dict, n=3)
        raise SourceError(
            f"The SAE {handle.name} reads {handle.hook_name}, which the model {model_name} "
            f"does not have (closest: {', '.join(closest) or 'none'})."
        )
    width = _hook_width(model, handle.hook_name)
    if width is not None and handle.sae.cfg.d_in != width:
        raise SourceError(
            f"The SAE {handle.name} has d_in {handle.sae.cfg.d_in}, but {handle.hook_name} "
            f"of the model {model_name} has width {width}: they do not belong together."
        )


def _hook_width(model: HookedTransformer, hook_name: str) -> int | None:
    """Width of the activations an SAE at this hook sees (None when not known here)."""
    cfg = model.cfg
    point = hook_name.rsplit(".", 1)[-1]
    if point in D_MODEL_HOOKS:
        return cfg.d_model
    if hook_name.endswith("attn.hook_z"):  # SAELens flattens [n_heads, d_head]
        return cfg.n_heads * cfg.d_head
    if hook_name.endswith(("mlp.hook_pre", "mlp.hook_post")):
        return cfg.d_mlp
    return None


# --------------------------------------------------------------------------- registry


def list_registry_releases(model_name: str | None = None) -> list[str]:
    """SAELens's pretrained releases (read from its bundled YAML, no network), by name."""
    directory = get_pretrained_saes_directory()
    return sorted(
        release
        for release, lookup in directory.items()
        if model_name is None or lookup.model == model_name
    )


def _registry_lookup(release: str, sae_ids: tuple[str, ...]) -> PretrainedSAELookup:
    """The registry entry of `release`; unknown names raise SourceError with close matches."""
    directory = get_pretrained_saes_directory()
    if release not in directory:
        closest = difflib.get_close_matches(release, directory, n=5, cutoff=0.5)
        raise SourceError(
            f"Unknown SAELens release {release!r}. Closest: {', '.join(closest) or 'none'}. "
            f"See list_registry_releases() for all {len(directory)} releases."
        )
    lookup = directory[release]
    valid_ids = list(lookup.saes_map)
    for sae_id in sae_ids:
        if sae_id not in lookup.saes_map:
            closest = difflib.get_close_matches(sae_id, valid_ids, n=5, cutoff=0.5)
            raise SourceError(
                f"Unknown sae_id {sae_id!r} in the release {release}. "
                f"Closest: {', '.join(closest) or 'none'}. "
                f"Its {len(valid_ids)} ids include: {', '.join(valid_ids[:5])}."
            )
    return lookup


# --------------------------------------------------------------------------- the hub


def _hub_state() -> HubState:
    """Whether hub downloads can be tried: switched off by the user, unreachable, or online."""
    if _HUB_OFFLINE.user_setting():
        return "disabled"
    return "online" if _hub_reachable() else "unreachable"


def _hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the hub endpoint answers (any HTTP status) within about `timeout_s`.

    The probe runs in a daemon thread so that a hanging DNS lookup, which the HTTP timeout
    does not cover, cannot stall the caller.
    """
    outcome: list[bool] = []
    done = threading.Event()

    def probe() -> None:
        try:
            get_session().head(hf_constants.ENDPOINT, timeout=timeout_s)
            outcome.append(True)
        except (OSError, httpx2.HTTPError):
            outcome.append(False)
        finally:
            done.set()

    threading.Thread(target=probe, name="hub-probe", daemon=True).start()
    done.wait(timeout_s + 1)
    return outcome == [True]


def _from_hub(load: Callable[[], T], what: str, hub_state: HubState) -> T:
    """Run a hub download; without the hub it reads the local cache only, so it fails fast.

    huggingface_hub retries unreachable hosts for about 20 s per file; in offline mode it
    answers from the cache or raises at once.
    """
    try:
        if hub_state == "online":
            return load()
        with _HUB_OFFLINE.forced():
            return load()
    except (OSError, httpx2.HTTPError) as error:
        if hub_state == "online":
            problem = f"downloading it from the Hugging Face hub failed ({error})"
        else:
            reason = (
                "the hub is switched off (HF_HUB_OFFLINE)"
                if hub_state == "disabled"
                else f"the Hugging Face hub ({hf_constants.ENDPOINT}) cannot be reached"
            )
            problem = f"{reason} and it is not in the local cache ({hf_constants.HF_HUB_CACHE})"
        raise SourceError(
            f"Cannot load {what}: {problem}. Offline alternatives: {OFFLINE_ALTERNATIVES}."
        ) from error
    except (ValueError, KeyError) as error:
        raise SourceError(f"Cannot load {what}: {error}") from error


class _HubOfflineSwitch:
    """Puts huggingface_hub into offline mode while any load needs it (thread-safe).

    transformers and SAELens both download through huggingface_hub, which reads
    `constants.HF_HUB_OFFLINE` on every request. The switch is only forced on when the hub
    is unreachable, so other threads' downloads lose nothing while it is on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._user_setting = False

    def user_setting(self) -> bool:
        with self._lock:
            return self._user_setting if self._depth else hf_constants.HF_HUB_OFFLINE

    @contextmanager
    def forced(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._user_setting = hf_constants.HF_HUB_OFFLINE
                hf_constants.HF_HUB_OFFLINE = True
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    hf_constants.HF_HUB_OFFLINE = self._user_setting


_HUB_OFFLINE = _HubOfflineSwitch()


# --------------------------------------------------------------------------- TopK checkpoints


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a TopK checkpoint: `torch.save` of a dict of tensors, or a `.safetensors` file
    (with its settings such as k in a `cfg.json` beside it, as EleutherAI sparsify saves)."""
    if not path.is_file():
        raise SourceError(f"The checkpoint {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            cfg_path = path.with_name("cfg.json")
            settings = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
            return {**settings, **load_file(path)}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        pickle.UnpicklingError,
        SafetensorError,
    ) as error:
        raise SourceError(
            f"Cannot read the checkpoint {path}: {error}. Expected a file written by "
            "`torch.save` of a dict of tensors (it is read with weights_only=True)."
        ) from error
    if not isinstance(state, dict):
        raise SourceError(
            f"The checkpoint {path} holds a {type(state).__name__}, not a dict of tensors."
        )
    return state


def topk_sae_from_state_dict(
    state: dict[str, Any], *, hook_name: str | None = None, model_name: str | None = None
) -> TopKSAE:
    """Convert a TopK checkpoint into an equivalent SAELens `TopKSAE` (eval mode).

    Both supported layouts encode `relu(topk((x - b_dec) @ W_enc + b_enc))` and decode
    `acts @ W_dec + b_dec`, which is a TopKSAE with `apply_b_dec_to_input=True` and no
    decoder-norm rescaling. `hook_name` and `model_name` default to the checkpoint's own.
    """
    weights, settings = _split_checkpoint(state)
    W_enc, b_enc, W_dec, b_dec = _topk_weights(weights)
    d_in, d_sae = W_enc.shape
    for key, size in (("d_in", d_in), ("d_sae", d_sae)):
        if settings.get(key) is not None and settings[key] != size:
            raise SourceError(
                f"The checkpoint says {key} = {settings[key]}, but its weights have {key} = {size}."
            )
    hook_name = hook_name or settings.get("hook_name")
    if not hook_name:
        raise SourceError(
            "The checkpoint does not say which hook it was trained on; name it in the source: "
            "topk:CHECKPOINT@MODEL#HOOK (e.g. #blocks.8.hook_resid_post)."
        )
    dtype = W_enc.dtype if W_enc.dtype in DTYPE_TO_STR else torch.float32
    cfg = TopKSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=_checkpoint_k(settings.get("k"), d_sae),
        dtype=DTYPE_TO_STR[dtype],
        device="meta",  # allocate nothing; the checkpoint's tensors are assigned below
        apply_b_dec_to_input=True,
        rescale_acts_by_decoder_norm=False,
        metadata=SAEMetadata(
            hook_name=hook_name, model_name=model_name or settings.get("model_name")
        ),
    )
    sae = TopKSAE(cfg)
    sae.cfg.device = "cpu"
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    sae.load_state_dict(
        {key: value.to(dtype).contiguous() for key, value in tensors.items()}, assign=True
    )
    return sae.to(dtype=dtype, device="cpu").eval()


def _split_checkpoint(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate weight tensors from settings (k, d_in, ...), looking into a nested state_dict
    and cfg/config dicts; the innermost value of a setting wins."""
    nested = next(
        (
            state[key]
            for key in ("state_dict", "model_state_dict")
            if isinstance(state.get(key), dict)
        ),
        None,
    )
    layers = [state.get("cfg"), state.get("config"), state, nested]
    settings: dict[str, Any] = {}
    for layer in layers:
        if isinstance(layer, dict):
            settings.update({key: layer[key] for key in TOPK_SETTINGS if key in layer})
    holder = nested if nested is not None else state
    weights = {
        key: value
        for key, value in holder.items()
        if isinstance(value, torch.Tensor)
        and key not in TOPK_SETTINGS
        and key not in TOPK_IGNORED_TENSORS
    }
    return weights, settings


def _topk_weights(
    weights: dict[str, torch.Tensor],
) -> tuple[
    Float[torch.Tensor, "d_in d_sae"],
    Float[torch.Tensor, " d_sae"],
    Float[torch.Tensor, "d_sae d_in"],
    Float[torch.Tensor, " d_in"],
]:
    """Find the encoder and decoder in either layout and bring them to SAELens's shapes."""
    if "encoder.weight" in weights:
        enc_key, b_enc_keys = "encoder.weight", ("encoder.bias", "latent_bias")
    elif "W_enc" in weights:
        enc_key, b_enc_keys = "W_enc", ("b_enc",)
    else:
        raise SourceError(
            "Not a TopK checkpoint layout this explorer knows. Expected either "
            f"({TOPK_LAYOUTS[0]}) or ({TOPK_LAYOUTS[1]}); found {sorted(weights) or 'no tensors'}."
        )
    encoder = weights[enc_key]
    if encoder.ndim != 2:
        raise SourceError(f"{enc_key} should be a matrix; it has shape {list(encoder.shape)}.")
    W_enc = encoder.T if enc_key == "encoder.weight" else encoder  # nn.Linear is [out, in]
    d_in, d_sae = W_enc.shape  # [d_in, d_sae]
    b_enc_key, b_enc = _one_of(weights, b_enc_keys, "the encoder bias")
    dec_key, decoder = _one_of(weights, DECODER_KEYS, "the decoder weight")
    b_dec_key, b_dec = _one_of(weights, DECODER_BIAS_KEYS, "the decoder bias")
    W_dec = _decoder_rows(dec_key, decoder, d_in, d_sae)  # [d_sae, d_in]
    for key, tensor, size, dim in (
        (b_enc_key, b_enc, d_sae, "d_sae"),
        (b_dec_key, b_dec, d_in, "d_in"),
    ):
        if tuple(tensor.shape) != (size,):
            raise SourceError(
                f"{key} has shape {list(tensor.shape)}, but the encoder {enc_key} "
                f"{list(encoder.shape)} implies [{size}] ({dim})."
            )
    unknown = sorted(set(weights) - {enc_key, *b_enc_keys, *DECODER_KEYS, *DECODER_BIAS_KEYS})
    if unknown:
        raise SourceError(
            f"The checkpoint has tensors a TopK SAE does not use: {unknown}; "
            "converting it would drop them."
        )
    return W_enc, b_enc, W_dec, b_dec


def _one_of(
    weights: dict[str, torch.Tensor], keys: tuple[str, ...], what: str
) -> tuple[str, torch.Tensor]:
    present = [key for key in keys if key in weights]
    if not present:
        raise SourceError(f"The checkpoint has no {what} (expected one of {', '.join(keys)}).")
    first = weights[present[0]]
    if any(not torch.equal(weights[key], first) for key in present[1:]):
        raise SourceError(f"The checkpoint's {' and '.join(present)} differ; both are {what}.")
    return present[0], first


def _decoder_rows(
    key: str, decoder: torch.Tensor, d_in: int, d_sae: int
) -> Float[torch.Tensor, "d_sae d_in"]:
    """The decoder as [d_sae, d_in]; a square one follows its key (nn.Linear is [out, in])."""
    if decoder.ndim != 2 or sorted(decoder.shape) != sorted((d_in, d_sae)):
        raise SourceError(
            f"{key} has shape {list(decoder.shape)}, but the encoder implies "
            f"[{d_sae}, {d_in}] or [{d_in}, {d_sae}] (d_sae = {d_sae}, d_in = {d_in})."
        )
    if d_in == d_sae:
        return decoder.T if key == "decoder.weight" else decoder
    return decoder if tuple(decoder.shape) == (d_sae, d_in) else decoder.T


def _checkpoint_k(k: Any, d_sae: int) -> int:
    if k is None:
        raise SourceError("The checkpoint has no k (the number of active features per token).")
    if isinstance(k, torch.Tensor):
        if k.numel() != 1:
            raise SourceError(
                f"The checkpoint's k should be one number; it has shape {list(k.shape)}."
            )
        k = k.item()
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= d_sae:
        raise SourceError(
            f"The checkpoint's k = {k!r} must be a whole number from 1 to d_sae = {d_sae}."
        )
    return k


def reference_topk_encode(
    state: dict[str, Any], x: Float[torch.Tensor, "... d_in"]
) -> Float[torch.Tensor, "... d_sae"]:
    """The TopK encoder exactly as the checkpoint's own code computes it, without SAELens.

    encoder.weight layout (sparsify / OpenAI): `relu(topk(encoder(x - b_dec)))`;
    W_enc layout: `relu(topk((x - b_dec) @ W_enc + b_enc))`. Written independently of the
    conversion above so tests can check one against the other.
    """
    tensors = state.get("state_dict", state)
    k = int(tensors["k"] if "k" in tensors else state["k"])
    pre_bias = next(tensors[key] for key in ("b_dec", "pre_bias", "decoder.bias") if key in tensors)
    if "encoder.weight" in tensors:
        bias = tensors["encoder.bias"] if "encoder.bias" in tensors else tensors["latent_bias"]
        pre = torch.nn.functional.linear(x - pre_bias, tensors["encoder.weight"], bias)
    else:
        pre = (x - pre_bias) @ tensors["W_enc"] + tensors["b_enc"]
    top = pre.topk(k, dim=-1)  # [..., k]
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())  # [..., d_sae]


# --------------------------------------------------------------------------- links and helpers


def neuronpedia_url(handle: SaeHandle, feature: int) -> str | None:
    """The feature's Neuronpedia page, when the SAE has a Neuronpedia id."""
    if not handle.neuronpedia_id:
        return None
    if not 0 <= feature < handle.sae.cfg.d_sae:
        raise InputError(
            f"Feature {feature} is out of range: {handle.name} has features "
            f"0 to {handle.sae.cfg.d_sae - 1}."
        )
    return f"{NEURONPEDIA_URL}/{handle.neuronpedia_id}/{feature}"


def _spec_error(problem: str) -> SourceError:
    forms = "; ".join(SPEC_FORMS)
    return SourceError(f"Invalid source: {problem}. A source is one of: {forms}.")


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",")) if text else ()


def _cut_last(text: str, separator: str) -> tuple[str, str | None]:
    """Split at the last `separator`: ("a@b", "@") -> ("a", "b"); no separator -> (text, None)."""
    head, found, tail = text.rpartition(separator)
    return (head, tail or None) if found else (text, None)


def _duplicates(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(sorted(item for item, count in Counter(items).items() if count > 1))
