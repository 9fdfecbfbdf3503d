"""Derived analysis tables: whole-store analyses computed once and kept in the store file.

Owns how a finished analysis (the specialist table under the default settings, its
permutation null, the description scores, ...) is written into a store and read back: each
*kind* of analysis holds one entry, computed under one *key* (the JSON of its settings and
its version, chosen by `explorer.analysis.precompute`); its DataFrames are Parquet blobs
in the table `derived(kind, part, data)` (one small table: a DuckDB table per frame would
take a 256 KB block per column, 18 MB on the demo store, and Parquet keeps the pandas
dtypes) and its scalars, key and parts a `meta` row `derived:<kind>`.
A reader asks for a kind under the key it wants and gets None when the store holds another
key (or none): the analysis then runs as before. What is computed, and when, is decided
above this layer; this module runs no analysis.

`explorer.store.writer` writes them: into a build's file before it is swapped in, or
(`add_derived`) into a copy of a finished store that replaces it, as a build does.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from explorer.errors import StoreError, markdown_escaped

TABLE = "derived"
META_PREFIX = "derived:"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")


@dataclass(frozen=True)
class Derived:
    """One derived analysis: `frames` (part name -> DataFrame) and JSON `values`, computed
    under `key`."""

    kind: str
    key: str
    frames: Mapping[str, pd.DataFrame]
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (self.kind, *self.frames):
            if not _NAME.fullmatch(name):
                raise StoreError(
                    f"Derived table names are lower-case words, got {markdown_escaped(repr(name))}."
                )


def _to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


Where = tuple[str, str]
"""(column, value): the rows of a frame whose column equals value."""


def _from_parquet(data: bytes, where: Where | None = None) -> pd.DataFrame:
    """A kept frame from its Parquet blob, as `pd.read_parquet` returns it, decoded one
    column at a time: the peak is the frame plus about one column, where the whole Arrow
    table beside its pandas copy took ~+100 MB for the demo store's 35 MB table of
    specialist cells (+42 MB so; bench/README.md, memory of a server that serves store
    pages). With `where` naming one of its columns, only those rows, indexed by their
    positions in the frame (as `frame[frame[column] == value]` indexes them)."""
    file = pq.ParquetFile(pa.BufferReader(data))
    names = file.schema_arrow.names
    if not names:
        return file.read(use_pandas_metadata=True).to_pandas()
    keep = None
    if where is not None and where[0] in names:
        column = file.read(columns=[where[0]], use_threads=False).column(0)
        keep = pc.fill_null(pc.equal(column, pa.scalar(where[1])), False)
    columns = []
    for name in names:
        table = file.read(columns=[name], use_threads=False, use_pandas_metadata=True)
        columns.append((table if keep is None else table.filter(keep)).to_pandas())
        # Arrow's allocator keeps what a column's decoding freed, so the next one grew the
        # process instead of reusing it: one family of the demo's cells then peaked at +33
        # MB for a 5 MB frame, +14 MB with the memory handed back (~1 ms a column).
        pa.default_memory_pool().release_unused()
    frame = pd.concat(columns, axis=1)
    if keep is not None:
        frame.index = pd.Index(np.flatnonzero(keep.to_numpy()), dtype=np.int64)
    return frame


def write_derived(con: duckdb.DuckDBPyConnection, entries: list[Derived]) -> None:
    """Write `entries` into the open store of `con` (replacing each kind's old tables), in
    the caller's transaction."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (kind VARCHAR, part VARCHAR, data BLOB)")
    for entry in entries:
        con.execute(f"DELETE FROM {TABLE} WHERE kind = ?", [entry.kind])
        con.execute("DELETE FROM meta WHERE key = ?", [META_PREFIX + entry.kind])
        con.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?)",
            [(entry.kind, part, _to_parquet(frame)) for part, frame in entry.frames.items()],
        )
        record = {"key": entry.key, "parts": sorted(entry.frames), "values": dict(entry.values)}
        con.execute(
            "INSERT INTO meta VALUES (?, ?)",
            [META_PREFIX + entry.kind, json.dumps(record, sort_keys=True)],
        )


def read_derived(
    cursor: duckdb.DuckDBPyConnection,
    kind: str,
    key: str,
    parts: Sequence[str] | None = None,
    where: Where | None = None,
) -> Derived | None:
    """The `kind` entry of the store of `cursor` if it was computed under `key`, else None;
    with `parts`, only those frames are read and decoded; with `where`, only the matching
    rows of each frame that has its column (`_from_parquet`)."""
    row = cursor.execute("SELECT value FROM meta WHERE key = ?", [META_PREFIX + kind]).fetchone()
    if row is None:
        return None
    record = json.loads(row[0])
    if record["key"] != key:
        return None
    wanted = record["parts"] if parts is None else [p for p in record["parts"] if p in parts]
    rows = cursor.execute(
        f"SELECT part, data FROM {TABLE} WHERE kind = ? AND list_contains(?, part)",
        [kind, wanted],
    ).fetchall()
    frames = {part: _from_parquet(data, where) for part, data in rows}
    return Derived(kind, key, {part: frames[part] for part in wanted}, record["values"])


def derived_kinds(cursor: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """kind -> key of every derived analysis the store of `cursor` holds."""
    rows = cursor.execute(
        "SELECT key, value FROM meta WHERE starts_with(key, ?)", [META_PREFIX]
    ).fetchall()
    return {key.removeprefix(META_PREFIX): json.loads(value)["key"] for key, value in rows}
