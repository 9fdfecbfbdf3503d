"""Adding the kept analyses to a finished store (`python -m explorer derive STORE`).

Owns which source's decoders the atlas of such a store is laid out from. The store keeps no
decoder rows, so the atlas needs a source holding every one of the store's SAEs (the same
name, d_in and d_sae): the source asked for, else the one the store's `meta` records when it
loads here (a registry source needs the hub or a warm cache). A source asked for that does
not load or does not hold the SAEs is refused before anything is computed; the recorded one
is only tried, and without it the other analyses are kept and the report says why the atlas
was not. The analyses themselves are the `derive(path, decoders=...)` callback's
(`explorer.analysis.precompute.derive`, passed in as a build passes it), and the store is
rewritten only through `add_derived` (a copy, swapped in with `os.replace`). It does not
parse arguments or print.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.build.single import decoder_matrices
from explorer.errors import ExplorerError, InputError, markdown_escaped
from explorer.sources.source import LoadedSource, Source, load_source
from explorer.store.derived import Derived
from explorer.store.reader import Store
from explorer.store.writer import add_derived

NO_SOURCE = "none"  # `--source none`: keep every analysis but the atlas, load no model
ATLAS = "atlas"  # the kind the atlas is kept under (`explorer.analysis.atlas.ATLAS`)


@dataclass(frozen=True)
class DeriveReport:
    """What a derive kept: `kinds` in the order written, `atlas_source` the spec the atlas was
    laid out from (None when it was not kept), `atlas_note` why it was not, and
    `atlas_before` whether the store kept an atlas before (it then stays as it was)."""

    path: Path
    kinds: list[str]
    seconds: float
    atlas_source: str | None
    atlas_note: str
    atlas_before: bool


def source_decoders(saes: pd.DataFrame, loaded: LoadedSource) -> dict[str, np.ndarray]:
    """Each of the store's SAEs (`Store.saes` rows, in their order) as the W_dec [d_sae, d_in]
    of the SAE of `loaded` with the same name, d_in and d_sae. InputError naming every SAE
    the source lacks or holds at another size, and what it holds, when one does not match."""
    problems, handles = [], []
    for row in saes.itertuples():
        handle = next((h for h in loaded.saes if h.name == row.sae), None)
        if handle is None:
            problems.append(f"{row.sae} is not in it")
            continue
        sizes = (int(handle.sae.cfg.d_in), int(handle.sae.cfg.d_sae))
        if sizes != (int(row.d_in), int(row.d_sae)):
            problems.append(
                f"{row.sae} has d_in {sizes[0]:,} and d_sae {sizes[1]:,} there, "
                f"{int(row.d_in):,} and {int(row.d_sae):,} in the store"
            )
            continue
        handles.append(handle)
    if problems:
        held = ", ".join(
            f"{h.name} ({h.sae.cfg.d_in:,} x {h.sae.cfg.d_sae:,})" for h in loaded.saes
        )
        raise InputError(
            f"The source {markdown_escaped(loaded.source.spec())} does not hold the store's "
            f"SAEs: {markdown_escaped('; '.join(problems))}. It holds "
            f"{markdown_escaped(held or 'no SAE')} (d_in x d_sae)."
        )
    return decoder_matrices(handles)


def load_decoders(saes: pd.DataFrame, spec: str) -> dict[str, np.ndarray]:
    """`source_decoders` of the source `spec`, loaded after checking that it fits in memory;
    an ExplorerError (a spec that does not parse, a source that cannot load or fit, SAEs
    that do not match) says why not."""
    from explorer.sources.memory import check_fits, estimate_source

    source = Source.parse(spec)
    check_fits(estimate_source(source))
    return source_decoders(saes, load_source(source))


def derive_store(
    path: str | Path,
    derive: Callable[..., list[Derived]],
    source: str | None = None,
) -> DeriveReport:
    """Compute `derive(path, decoders=...)` for the finished store at `path` and keep it
    there (`add_derived`). The atlas's decoders come from `source` (a spec; `NO_SOURCE` for
    none), by default from the source the store's meta records when it loads and holds the
    store's SAEs; a `source` given that cannot be used raises its ExplorerError before
    anything is computed, and the store stays as it was."""
    started = time.perf_counter()
    with Store.open(path) as store:  # the store's own message for a path it refuses
        path, saes, meta = store.path, store.saes(), store.meta()
        atlas_before = ATLAS in store.derived_kinds()
    decoders, spec, note = None, None, ""
    if source == NO_SOURCE:
        note = f"no source was asked for (--source {NO_SOURCE})"
    elif source is not None:
        try:
            decoders, spec = load_decoders(saes, source), source
        except ExplorerError as error:
            raise type(error)(
                f"{error} Nothing was computed and the store is unchanged (--source "
                f"{NO_SOURCE} keeps every analysis but the atlas)."
            ) from error
    elif not meta.get("source"):
        note = "the store records no source to take its SAEs' decoders from"
    else:
        recorded = meta["source"]
        try:
            decoders, spec = load_decoders(saes, recorded), recorded
        except ExplorerError as error:
            recorded = markdown_escaped(recorded)
            note = f"the source the store records ({recorded}) cannot be used: {error}"
    entries = derive(path, decoders=decoders)
    add_derived(path, entries)
    return DeriveReport(
        path=path,
        kinds=[entry.kind for entry in entries],
        seconds=time.perf_counter() - started,
        atlas_source=spec if decoders else None,
        atlas_note=note,
        atlas_before=atlas_before,
    )
