"""Where models and SAEs come from.

A `Source` names a TransformerLens model plus a set of SAELens SAEs, in one of four kinds:
the offline demo bundle (`demo`), SAELens's pretrained registry (`registry`), SAELens
folders on disk (`local`), and plain PyTorch TopK checkpoints as research code saves them
(`topk`), converted here into SAELens `TopKSAE`s. `load_source` turns a Source into a
`LoadedSource`: the model in eval mode with its tokenizer, and one `SaeHandle` per SAE with
the hook name, layer and Neuronpedia id taken from the SAE's own metadata. Hugging Face
downloads fail fast with a `SourceError` naming the offline alternatives when the hub
cannot be reached and the local cache is cold.

This module does not run the model or encode activations (`explorer.build`), write stores
(`explorer.store`), train the demo bundle (`explorer.build.demo_training`) or render anything
(`explorer/ui/`). The hub side is `hub.py`, TopK checkpoints are `topk_checkpoint.py`.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from explorer.errors import InputError, SourceError, markdown_escaped
from explorer.hooks import block_of

# torch, transformer-lens and sae-lens (and the modules here that import them) are imported
# by the functions that load a model: pages that only read a store parse a Source and never
# pay for them (tests/unit/test_imports.py).
if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from explorer.sources.demo_bundle import DemoBundle
    from explorer.sources.hub import HubState
    from explorer.store.schema import SaeRef

SourceKind = Literal["demo", "registry", "local", "topk"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
SPEC_FORMS = (
    "demo | demo:tiny | demo:BUNDLE_FOLDER",
    "registry:RELEASE:SAE_ID[,SAE_ID...] (or saelens:RELEASE:SAE_ID[,SAE_ID...])",
    "local:FOLDER[,FOLDER...][@MODEL]",
    "topk:CHECKPOINT[,CHECKPOINT...][@MODEL][#HOOK]",
)
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
        from explorer.sources import request_hooks

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
        raise SourceError(
            f"No SAE named {markdown_escaped(repr(name))} in "
            f"{markdown_escaped(self.source.spec())}; its SAEs are: "
            f"{markdown_escaped(names)}."
        )

    def handle_for(self, sae: str | SaeRef, d_sae: int | None = None) -> SaeHandle | None:
        """The loaded SAE a store's SAE names, or None when the source has none: same name,
        and same number of features when known (`d_sae`, or the `SaeRef`'s)."""
        name, size = (sae, d_sae) if isinstance(sae, str) else (sae.name, sae.d_sae)
        for handle in self.saes:
            if handle.name == name and (size is None or handle.sae.cfg.d_sae == int(size)):
                return handle
        return None


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
    from sae_lens import SAE

    from explorer.sources.hub import _from_hub, _hub_state, _registry_lookup

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
    from explorer.sources.topk_checkpoint import read_checkpoint, topk_sae_from_state_dict

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
    from explorer.sources.demo_bundle import bundle_path, load_bundle

    path = bundle_path(preset)
    try:
        return load_bundle(path)
    except OSError as error:
        raise SourceError(
            f"Cannot load the demo bundle at {markdown_escaped(path)}: {markdown_escaped(error)}"
        ) from error


def _model_for(model_name: str | None, saes: list[SAE], device: str) -> HookedTransformer:
    """The model named by the source, else by the SAEs' metadata (a demo bundle or a TL name)."""
    from explorer.sources.demo_bundle import MODEL_NAME as DEMO_MODEL_NAME
    from explorer.sources.hub import _hub_state

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
            "Cannot tell which model these SAEs belong to (their metadata names: "
            f"{markdown_escaped(shown)}); "
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
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    from explorer.sources.hub import _from_hub

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
                f"{markdown_escaped(repr(model_name))} is not a TransformerLens model name "
                f"(closest: {markdown_escaped(', '.join(closest) or 'none')}). Name a "
                "TransformerLens model, "
                "or `demo` / `demo:tiny` / a demo bundle folder."
            ) from error

    return _from_hub(load, f"the model {model_name}", hub_state)


def _read_sae_folder(path: Path, device: str) -> SAE:
    from sae_lens import SAE
    from sae_lens.constants import SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME
    from safetensors import SafetensorError

    if not path.is_dir():
        raise SourceError(f"The SAE folder {markdown_escaped(path)} does not exist.")
    missing = [
        name for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME) if not (path / name).is_file()
    ]
    if missing:
        raise SourceError(
            f"The SAE folder {markdown_escaped(path)} has no "
            f"{markdown_escaped(' and no '.join(missing))}; a SAELens folder "
            f"(written by `sae.save_model(folder)`) holds {SAE_CFG_FILENAME} and "
            f"{SAE_WEIGHTS_FILENAME}."
        )
    try:
        return SAE.load_from_disk(path, device=device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise SourceError(
            f"Cannot load the SAELens folder {markdown_escaped(path)}: {markdown_escaped(error)}"
        ) from error


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
            f"The SAE {markdown_escaped(name or sae_id or '')} does not say which hook it reads "
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
            f"The hook {markdown_escaped(repr(hook_name))} is not inside a transformer block "
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
            f"Several SAEs would be called {markdown_escaped(_duplicates(names))}; give their "
            "folders or "
            "files distinct names."
        )
    return renamed


def _check_fits(model: HookedTransformer, handle: SaeHandle) -> None:
    """The SAE's hook exists in the model and its d_in matches the hook's width."""
    model_name = model.cfg.model_name
    if handle.hook_name not in model.hook_dict:
        closest = difflib.get_close_matches(handle.hook_name, model.hook_dict, n=3)
        raise SourceError(
            f"The SAE {markdown_escaped(handle.name)} reads {markdown_escaped(handle.hook_name)}, "
            f"which the model {markdown_escaped(model_name)} "
            f"does not have (closest: {markdown_escaped(', '.join(closest) or 'none')})."
        )
    width = _hook_width(model, handle.hook_name)
    if width is not None and handle.sae.cfg.d_in != width:
        raise SourceError(
            f"The SAE {markdown_escaped(handle.name)} has d_in {handle.sae.cfg.d_in}, but "
            f"{markdown_escaped(handle.hook_name)} "
            f"of the model {markdown_escaped(model_name)} has width {width}: they do not belong "
            "together."
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


def neuronpedia_url(handle: SaeHandle, feature: int) -> str | None:
    """The feature's Neuronpedia page, when the SAE has a Neuronpedia id."""
    if not handle.neuronpedia_id:
        return None
    if not 0 <= feature < handle.sae.cfg.d_sae:
        raise InputError(
            f"Feature {feature} is out of range: {markdown_escaped(handle.name)} has features "
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
