"""A build: a source and a corpus in, one finished DuckDB store out.

Owns the glue between `extract` (compute) and `StoreWriter` (storage): which SAEs and texts
go in, the build's metadata, and progress reporting. Both the CLI (`python -m explorer
build`) and the app's first-run build call `build_store`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from explorer.build.extract import BuildSettings, ExtractionResult, Progress, extract, select_saes
from explorer.build.stages import WRITING, Stage
from explorer.corpus import Corpus, resolve_corpus
from explorer.errors import CorpusError, markdown_escaped
from explorer.sources.source import LoadedSource, SaeHandle, Source, load_source
from explorer.store.derived import Derived
from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter


@dataclass(frozen=True)
class BuildReport:
    path: Path
    n_texts: int
    n_tokens: int
    n_rows: dict[str, int]
    seconds: float
    tokens_per_second: float
    truncated_texts: int


def checked_inputs(
    corpus: Corpus | str, settings: BuildSettings | None
) -> tuple[Corpus, BuildSettings]:
    """`corpus` resolved (a spec is read) and `settings` (default `BuildSettings()`)
    validated, an empty corpus refused (`CorpusError`): what a build checks before it loads
    the model, so a bad argument fails in milliseconds."""
    settings = settings or BuildSettings()
    settings.validate()
    corpus = resolve_corpus(corpus) if isinstance(corpus, str) else corpus
    if len(corpus) == 0:
        raise CorpusError(
            f"The corpus {markdown_escaped(repr(corpus.name))} has no texts; nothing to build."
        )
    return corpus, settings


def build_store(
    source: Source | str | LoadedSource,
    corpus: Corpus | str,
    out: str | Path,
    settings: BuildSettings | None = None,
    progress: Progress | None = None,
    derive: Callable[..., list[Derived]] | None = None,
    stage: Stage | None = None,
) -> BuildReport:
    """Extract `corpus` through `source` into a new store at `out` (atomically replaced);
    `derive(path, decoders=...)` adds the analyses a store keeps (`StoreWriter`'s argument,
    given the SAEs' decoder matrices, which the store does not hold). `progress` follows
    the forward passes, `stage` what runs after them, up to writing the store (`STAGES`).

    Everything that can be checked cheaply (corpus, settings, output folder) is checked
    before the model is loaded, so a bad argument fails in milliseconds.
    """
    corpus, settings = checked_inputs(corpus, settings)
    loaded = source if isinstance(source, LoadedSource) else load_source(source)
    meta = build_meta(loaded, corpus.name, settings)
    handles = select_saes(loaded, settings.hooks)
    keep = None if derive is None else partial(derive, decoders=decoder_matrices(handles))
    with StoreWriter(out, meta=meta, derive=keep) as writer:
        for handle in handles:
            writer.add_sae(sae_info(handle))
        result = extract(loaded, corpus, writer, settings, progress, stage)
        if stage is not None:
            stage(WRITING, 0, 1)
        writer.add_texts(result.texts)
        _write_results(writer, result)
    return BuildReport(
        path=Path(out),
        n_texts=len(result.texts),
        n_tokens=result.n_tokens,
        n_rows=result.n_rows,
        seconds=result.seconds,
        tokens_per_second=result.n_tokens / max(result.seconds, 1e-9),
        truncated_texts=result.truncated_texts,
    )


def decoder_matrices(handles: list[SaeHandle]) -> dict[str, np.ndarray]:
    """Each SAE's decoder W_dec as float32 numpy [d_sae, d_in], by SAE name."""
    return {
        handle.name: handle.sae.W_dec.detach().to(torch.float32).cpu().numpy() for handle in handles
    }


def build_meta(loaded: LoadedSource, corpus_name: str, settings: BuildSettings) -> dict[str, str]:
    """The build's own `meta` keys: what a store was built from and how."""
    return {
        "source": loaded.source.spec(),
        "corpus": corpus_name,
        "settings": json.dumps(asdict(settings)),
        "model_name": loaded.model.cfg.model_name,
    }


def sae_info(handle: SaeHandle) -> SaeInfo:
    """The `saes` row of an SAE of a loaded source, before its quality is measured."""
    return SaeInfo(
        sae=handle.name,
        hook_name=handle.hook_name,
        layer=handle.layer,
        d_in=handle.sae.cfg.d_in,
        d_sae=handle.sae.cfg.d_sae,
        architecture=handle.sae.cfg.architecture(),
        release=handle.release,
        sae_id=handle.sae_id,
        neuronpedia_id=handle.neuronpedia_id,
    )


def _write_results(writer: StoreWriter, result: ExtractionResult) -> None:
    for handle in result.saes:
        writer.set_quality(handle.name, **result.quality[handle.name])
        writer.add_feature_stats(handle.name, result.feature_stats[handle.name])
        writer.add_top_examples(handle.name, result.top_examples[handle.name])
        writer.add_logit_lens(
            handle.name, **asdict(result.logit_lens[handle.name]), vocab=result.vocab
        )
