"""`Store`: a finished store opened read-only, and the one query path every read takes.

Owns the shared connection (a cursor per query, a reader-writer lock so `close` waits for
running queries), the mapping of DuckDB failures to `StoreError`, the validation of SAE names
and feature ids, and the reads the pages share. The store file is never written after its
build: labels, notes and ledger runs go through `explorer.store.user_data` to a sidecar.
Page-specific reads live in `explorer.store.queries`; the format is in docs/store.md.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from explorer.errors import InputError, StoreError, bounded_int, markdown_escaped, quoted
from explorer.store.derived import Derived, derived_kinds, read_derived
from explorer.store.schema import (
    _RANKED_STATS_SQL,
    _TABLE_NAMES_SQL,
    _TABLES,
    HIST_BINS,
    MAX_FEATURES_PER_QUERY,
    MAX_LABEL_CHARS,
    MAX_LABEL_PREFIX_CHARS,
    MAX_NOTE_CHARS,
    MAX_TOP_EXAMPLES,
    SCHEMA_VERSION,
    SaeRef,
    _is_corruption,
    _open_error,
    sql_literal,
)
from explorer.store.user_data import UserData, legacy_rows, legacy_source, sidecar_path

logger = logging.getLogger(__name__)

_CATALOG = "store"  # the name the store file is attached under

_RAW_STATS_FROM_ACTS_SQL = """
(WITH a AS (SELECT feature, text_id, value FROM acts WHERE sae_idx = $sae_idx),
per_feature AS (
    SELECT feature, count(*) AS n_active_tokens, count(DISTINCT text_id) AS n_active_texts,
        avg(value::DOUBLE) AS mean_active, max(value)::DOUBLE AS "max"
    FROM a GROUP BY feature),
bins AS (
    SELECT a.feature,
        least(floor(a.value::DOUBLE / p."max" * $hist_bins), $hist_bins - 1)::BIGINT AS bin,
        count(*) AS n
    FROM a JOIN per_feature p USING (feature) GROUP BY ALL),
hists AS (
    SELECT p.feature, list(coalesce(b.n, 0) ORDER BY r.bin) AS hist
    FROM per_feature p CROSS JOIN range($hist_bins) r(bin)
    LEFT JOIN bins b ON b.feature = p.feature AND b.bin = r.bin
    GROUP BY p.feature)
SELECT $sae_idx::UTINYINT AS sae_idx, f.feature::UINTEGER AS feature,
    coalesce(p.n_active_tokens, 0) AS n_active_tokens,
    coalesce(p.n_active_texts, 0) AS n_active_texts,
    coalesce(p.mean_active, 0) AS mean_active, coalesce(p."max", 0) AS "max",
    coalesce(h.hist, list_transform(range($hist_bins), lambda i: 0::BIGINT)) AS hist
FROM range($d_sae) f(feature)
LEFT JOIN per_feature p ON p.feature = f.feature
LEFT JOIN hists h ON h.feature = f.feature)
"""


_CATEGORY_COUNTS_SQL = """
WITH fmax AS (
    SELECT sae_idx, feature, max_text_act FROM feature_stats WHERE max_text_act > 0),
strong AS (
    SELECT f.sae_idx, f.feature, t.category, count(*) AS n_strong
    FROM feature_text f JOIN fmax m USING (sae_idx, feature) JOIN texts t USING (text_id)
    WHERE f.act >= CASE WHEN $relative THEN $threshold * m.max_text_act ELSE $threshold END
    GROUP BY ALL)
SELECT s.sae, s.layer, c.feature::BIGINT AS feature, c.category, c.n_texts,
    c.n_texts_active, c.n_tokens_active, c.mean_act, c.max_act,
    coalesce(r.active_rank_sum, 0) AS active_rank_sum,
    coalesce(st.n_strong, 0) AS n_strong, m.max_text_act
FROM feature_category c
JOIN saes s USING (sae_idx)
JOIN fmax m USING (sae_idx, feature)
LEFT JOIN category_ranks r USING (sae_idx, feature, category)
LEFT JOIN strong st USING (sae_idx, feature, category)
ORDER BY c.sae_idx, c.feature, c.category
"""


class _ReadWriteLock:
    """Many readers at once, or one writer; a waiting writer holds back new readers.

    Re-entrant for readers of the same thread, so a store method may run inside
    `with store.cursor()` without deadlocking against a waiting writer.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._local = threading.local()

    @contextmanager
    def reading(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                self._cond.wait_for(lambda: not self._writing)
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing)
            self._writing = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def is_store_file(path: str | Path) -> bool:
    """True when `path` names a regular file (after symlinks) that starts like a DuckDB
    database. Only `os.stat` and, for a regular file, its first 12 bytes are read: a FIFO,
    a device or a folder is never opened, a missing file, a dangling symlink or a name the
    system refuses is just False."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as file:
            return file.read(12)[8:12] == DUCKDB_MAGIC
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False


def unusable_store_message(path: str | Path) -> str:
    """The one message for every path `is_store_file` refuses, whatever the reason, so a
    link cannot learn which files exist."""
    return (
        f"{quoted(str(path), 200)} is not a store this app can open. Give the path of a store "
        "file built with python -m explorer build."
    )


class Store:
    """A finished store, opened read-only: `store = Store.open(path)`.

    Every read is a parameterised query on its own cursor; results are pandas DataFrames
    with int64 ids. SAEs are named by `sae` (see `saes()`); an unknown name raises
    `StoreError`, a feature outside 0..d_sae-1 raises `InputError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = _ReadWriteLock()
        self._user = UserData(sidecar_path(path))
        self._connect()
        self._import_legacy_user_data()

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open the store at `path` read-only, checking it is a complete store of this version."""
        path = Path(path).absolute()
        if not is_store_file(path):
            raise StoreError(unusable_store_message(path))
        return cls(path)

    def _connect(self) -> None:
        # The file is attached to a DuckDB instance of its own: `duckdb.connect(path)` would
        # hand back an instance still open on the file a rebuild replaced, while a Store of
        # that file is alive (see `changed_on_disk`).
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"SET temp_directory = {sql_literal(str(self.path) + '.tmp')}")
            con.execute(f"ATTACH {sql_literal(str(self.path))} AS store (READ_ONLY)")
            con.execute(f"USE {_CATALOG}")
        except duckdb.Error as exc:
            con.close()
            raise _open_error(self.path, exc) from exc
        try:
            present = {row[0] for row in con.execute(_TABLE_NAMES_SQL).fetchall()}
            missing = sorted(set(_TABLES) - present)
            if missing:
                raise StoreError(
                    f"{markdown_escaped(self.path)} is not a complete feature store (missing "
                    f"tables {markdown_escaped(missing)}); "
                    "rebuild it."
                )
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                found = "none" if row is None else row[0]
                raise StoreError(
                    f"{markdown_escaped(self.path)} has schema version {markdown_escaped(found)}; "
                    "this explorer reads version "
                    f"{SCHEMA_VERSION}. Rebuild the store."
                )
            saes = con.execute(
                """SELECT sae, sae_idx::INTEGER, d_sae, hook_name, layer, d_in, neuronpedia_id
                FROM saes ORDER BY sae_idx"""
            ).fetchall()
        except StoreError:
            con.close()
            raise
        except duckdb.Error as exc:
            con.close()
            raise _open_error(self.path, exc) from exc
        stat = self.path.stat()
        self._identity = (stat.st_ino, stat.st_mtime_ns)
        self._saes = {row[0]: SaeRef(*row) for row in saes}
        self._con = con
        self._small: dict[str, pd.DataFrame] = {}  # `_small_read`'s frames

    def close(self) -> None:
        with self._lock.writing():
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.close()

    @property
    def identity(self) -> tuple[int, int]:
        """(inode, mtime_ns) of the file this store has open; a rebuild makes a new one."""
        return self._identity

    def changed_on_disk(self) -> bool:
        """True once a rebuild has replaced the file this store has open: open the new one.

        Only a build changes a store file (user data goes to the sidecar), and a build swaps
        in a new file with `os.replace`, so this is never true of a file being written."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return True
        return (stat.st_ino, stat.st_mtime_ns) != self._identity

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the shared read-only connection, closed on exit; one per query."""
        with self._lock.reading():
            cursor = self._con.cursor()
            try:
                cursor.execute(f"USE {_CATALOG}")  # a cursor starts on the in-memory catalog
                yield cursor
            finally:
                cursor.close()

    def query(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        *,
        with_labels: bool = False,
    ) -> pd.DataFrame:
        """Run one parameterised read on its own cursor; a damaged file raises `StoreError`.

        The one query helper: `explorer.store.queries` reads through it too. With
        `with_labels`, the query can also read `current_labels` (sae, feature, label, note:
        the newest label of each labelled feature, from the user data sidecar)."""
        with self.cursor() as cursor:
            if with_labels:
                cursor.register("current_labels", self._user.current_labels())
            try:
                return cursor.execute(sql, params).df()
            except duckdb.Error as exc:
                if _is_corruption(exc):
                    raise StoreError(
                        f"The store {markdown_escaped(self.path)} is damaged and cannot be read "
                        f"({markdown_escaped(exc)}); rebuild it."
                    ) from exc
                raise

    def derived(self, kind: str, key: str, parts: Sequence[str] | None = None) -> Derived | None:
        """The analysis `kind` kept in the store if it was computed under `key`, else None
        (`explorer.store.derived`); with `parts`, only those of its frames."""
        with self.cursor() as cursor:
            return read_derived(cursor, kind, key, parts)

    def derived_kinds(self) -> dict[str, str]:
        """kind -> key of every analysis kept in the store."""
        with self.cursor() as cursor:
            return derived_kinds(cursor)

    # -- validation -----------------------------------------------------------------------

    def sae(self, sae: str) -> SaeRef:
        """The SAE named `sae`; a `StoreError` naming the store's SAEs otherwise."""
        if sae not in self._saes:
            raise StoreError(
                f"Unknown SAE {markdown_escaped(repr(sae))}; this store has "
                f"{markdown_escaped(list(self._saes))}."
            )
        return self._saes[sae]

    def check_feature(self, sae: str, feature: Any) -> int:
        """`feature` as an int in 0..d_sae-1 of `sae`; StoreError / InputError otherwise."""
        return self._feature(self.sae(sae), feature)

    def _feature(self, ref: SaeRef, feature: Any) -> int:
        name = f"A feature id of SAE {ref.name}"
        return bounded_int(name, feature, 0, ref.d_sae - 1, text=False)

    @staticmethod
    def _text_id(text_id: Any) -> int:
        return bounded_int("A text id", text_id, 0, None, text=False)

    # -- reads ----------------------------------------------------------------------------

    def _small_read(self, sql: str) -> pd.DataFrame:
        """The result of `sql`, a small read of the store's own tables, run once per open
        store (the file never changes under it: a build swaps in a new file, which a new
        Store opens) and handed out as a shallow copy: pandas copies on write, so no caller's
        change reaches the kept frame. A page asks for the SAEs a dozen times a run; each
        query cost ~1 ms."""
        kept = self._small.get(sql)
        if kept is None:
            kept = self._small.setdefault(sql, self.query(sql))
        return kept.copy(deep=False)

    def meta(self) -> dict[str, str]:
        table = self._small_read("SELECT key, value FROM meta ORDER BY key")
        return dict(table.itertuples(index=False))

    def saes(self) -> pd.DataFrame:
        """One row per SAE, in build order."""
        return self._small_read("SELECT * EXCLUDE (sae_idx) FROM saes ORDER BY sae_idx")

    def categories(self) -> pd.DataFrame:
        """category, n_texts, n_tokens over texts with at least one token."""
        return self._small_read(
            """SELECT category, count(*) AS n_texts, sum(n_tokens)::BIGINT AS n_tokens
            FROM texts WHERE n_tokens > 0 GROUP BY category ORDER BY category"""
        )

    def texts(self, category: str | None = None) -> pd.DataFrame:
        """text_id, category, source, text, n_tokens, labels; all texts or one category's."""
        return self.query(
            """SELECT text_id::BIGINT AS text_id, category, source, text, n_tokens, labels
            FROM texts WHERE ? IS NULL OR category = ? ORDER BY text_id""",
            [category, category],
        )

    def text(self, text_id: int) -> dict[str, Any] | None:
        """One text as a dict, or None if there is no such text."""
        rows = self.query(
            """SELECT text_id::BIGINT AS text_id, category, source, text, n_tokens, labels
            FROM texts WHERE text_id = ?""",
            [self._text_id(text_id)],
        )
        return rows.iloc[0].to_dict() if len(rows) else None

    def text_tokens(self, text_id: int) -> pd.DataFrame:
        """pos, token_id, token of one text's real tokens, in order."""
        return self.query(
            """SELECT pos::INTEGER AS pos, token_id::BIGINT AS token_id, token
            FROM tokens WHERE text_id = ? ORDER BY pos""",
            [self._text_id(text_id)],
        )

    def text_acts(
        self, text_id: int, sae: str, features: Sequence[int] | None = None
    ) -> pd.DataFrame:
        """pos, feature, value of one SAE's activations on one text, by pos then value.

        With `features`, a range read on those features' runs; without, a scan of the SAE's
        part of `acts` (see the module docstring).
        """
        ref = self.sae(sae)
        params: list[Any] = [ref.idx, self._text_id(text_id)]
        feature_filter = ""
        if features is not None:
            if len(features) > MAX_FEATURES_PER_QUERY:
                raise InputError(
                    f"Give at most {MAX_FEATURES_PER_QUERY} features, got {len(features)}."
                )
            chosen = sorted({self._feature(ref, f) for f in features})
            params += chosen
            feature_filter = (
                f"AND feature IN ({', '.join('?' * len(chosen))})" if chosen else "AND false"
            )
        return self.query(
            f"""SELECT pos::INTEGER AS pos, feature::BIGINT AS feature, value
            FROM acts WHERE sae_idx = ? AND text_id = ? {feature_filter}
            ORDER BY pos, value DESC, feature""",
            params,
        )

    def top_examples(self, sae: str, feature: int, k: int = 20) -> pd.DataFrame:
        """rank, text_id, pos, value of the feature's k largest activations (rank 1 first).

        A range read on the feature's run of `acts`; `feature_topk` has the first
        `TOPK_EXAMPLES` with their tokens.
        """
        ref = self.sae(sae)
        if (
            isinstance(k, bool)
            or not isinstance(k, int | np.integer)
            or not 0 < k <= MAX_TOP_EXAMPLES
        ):
            raise InputError(f"k must be an integer from 1 to {MAX_TOP_EXAMPLES}, got {k!r}.")
        return self.query(
            """SELECT row_number() OVER (ORDER BY value DESC, text_id, pos) AS rank,
                text_id::BIGINT AS text_id, pos::INTEGER AS pos, value
            FROM (SELECT text_id, pos, value FROM acts WHERE sae_idx = ? AND feature = ?
                ORDER BY value DESC, text_id, pos LIMIT ?)
            ORDER BY rank""",
            [ref.idx, self._feature(ref, feature), int(k)],
        )

    def feature_stats(self, sae: str, feature: int | None = None) -> pd.DataFrame:
        """The `feature_stats` rows of one SAE (or one feature), by feature id."""
        ref = self.sae(sae)
        feature = None if feature is None else self._feature(ref, feature)
        return self.query(
            """SELECT feature::BIGINT AS feature, n_active_tokens, token_freq, n_active_texts,
                text_freq, freq_rank, mean_active, "max", hist
            FROM feature_stats WHERE sae_idx = ? AND (? IS NULL OR feature = ?)
            ORDER BY feature""",
            [ref.idx, feature, feature],
        )

    def feature_category(self, sae: str, feature: int | None = None) -> pd.DataFrame:
        """The feature x category table of one SAE (or one feature's rows)."""
        ref = self.sae(sae)
        feature = None if feature is None else self._feature(ref, feature)
        return self.query(
            """SELECT feature::BIGINT AS feature, category, n_texts, n_texts_active,
                n_tokens_active, mean_act, max_act, strong_count
            FROM feature_category WHERE sae_idx = ? AND (? IS NULL OR feature = ?)
            ORDER BY feature, category""",
            [ref.idx, feature, feature],
        )

    def category_counts(self, strong_threshold: float, relative: bool = True) -> pd.DataFrame:
        """Every SAE's feature x category table with what the specialist measures need.

        Columns: sae, layer, feature, category, n_texts, n_texts_active, n_tokens_active,
        mean_act, max_act (as `feature_category`), active_rank_sum (`category_ranks`),
        max_text_act (the feature's largest text activation) and n_strong: the category's
        texts whose activation is >= `strong_threshold` x max_text_act (`relative`) or >=
        `strong_threshold` (absolute). One scan of `feature_text`, never of `acts`.
        """
        if (
            isinstance(strong_threshold, bool)
            or not isinstance(strong_threshold, int | float | np.number)
            or not np.isfinite(strong_threshold)
            or strong_threshold <= 0
            or (relative and strong_threshold > 1)
        ):
            limit = "in (0, 1] (a fraction of the feature's max)" if relative else "positive"
            raise InputError(f"The strong threshold must be {limit}, got {strong_threshold!r}.")
        return self.query(
            _CATEGORY_COUNTS_SQL,
            {"threshold": float(strong_threshold), "relative": bool(relative)},
        )

    def feature_texts(self, sae: str, feature: int) -> pd.DataFrame:
        """text_id, category, act of the texts where one feature fires, largest act first;
        act = the sum of its activations over the text's tokens / the text's n_tokens."""
        ref = self.sae(sae)
        return self.query(
            """SELECT f.text_id::BIGINT AS text_id, t.category, f.act
            FROM feature_text f JOIN texts t USING (text_id)
            WHERE f.sae_idx = ? AND f.feature = ?
            ORDER BY f.act DESC, f.text_id""",
            [ref.idx, self._feature(ref, feature)],
        )

    def feature_labels(self, prefix: str = "") -> pd.DataFrame:
        """sae, feature, label, n_texts_active, rank: per feature, its `LABEL_TOP` most
        frequent labels of each family (see `feature_label`) that start with `prefix` (e.g.
        "num:"), with the texts it fires on that carry them; all SAEs."""
        if not isinstance(prefix, str) or len(prefix) > MAX_LABEL_PREFIX_CHARS:
            raise InputError(
                f"A label prefix is a string of at most {MAX_LABEL_PREFIX_CHARS} characters."
            )
        return self.query(
            """SELECT s.sae, f.feature::BIGINT AS feature, f.label, f.n_texts_active,
                f.rank::INTEGER AS rank
            FROM feature_label f JOIN saes s USING (sae_idx)
            WHERE starts_with(f.label, ?)
            ORDER BY f.sae_idx, f.feature, f.label""",
            [prefix],
        )

    def label_counts(self) -> pd.DataFrame:
        """label, category, n_texts: texts (with tokens) of each category carrying a label."""
        return self.query(
            """SELECT label, category, count(*) AS n_texts
            FROM (SELECT category, unnest(labels) AS label FROM texts WHERE n_tokens > 0)
            GROUP BY ALL ORDER BY label, category"""
        )

    def frequency_table(self) -> pd.DataFrame:
        """`feature_stats` of every SAE without histograms: sae, layer, feature,
        n_active_tokens, token_freq, n_active_texts, text_freq, freq_rank, mean_active, max,
        max_text_act."""
        return self._small_read(
            """SELECT s.sae, s.layer, f.feature::BIGINT AS feature, f.n_active_tokens,
                f.token_freq, f.n_active_texts, f.text_freq, f.freq_rank, f.mean_active,
                f."max", f.max_text_act
            FROM feature_stats f JOIN saes s USING (sae_idx)
            ORDER BY f.sae_idx, f.feature"""
        )

    def feature_topk(self, sae: str, feature: int) -> pd.DataFrame:
        """rank, text_id, pos, value, token of the feature's precomputed top examples."""
        ref = self.sae(sae)
        return self.query(
            """SELECT rank::INTEGER AS rank, text_id::BIGINT AS text_id, pos::INTEGER AS pos,
                value, token
            FROM feature_topk WHERE sae_idx = ? AND feature = ? ORDER BY rank""",
            [ref.idx, self._feature(ref, feature)],
        )

    def feature_quantiles(self, sae: str, feature: int) -> pd.DataFrame:
        """bin, bin_low, bin_high, rank, text_id, pos, value, token: examples per value bin."""
        ref = self.sae(sae)
        return self.query(
            """SELECT bin::INTEGER AS bin, bin_low, bin_high, rank::INTEGER AS rank,
                text_id::BIGINT AS text_id, pos::INTEGER AS pos, value, token
            FROM feature_quantiles WHERE sae_idx = ? AND feature = ?
            ORDER BY bin DESC, rank""",
            [ref.idx, self._feature(ref, feature)],
        )

    def logit_lens(self, sae: str, feature: int) -> pd.DataFrame:
        """rank, token_id, token, logit: top tokens (rank 1..k) then bottom (-1..-k)."""
        ref = self.sae(sae)
        return self.query(
            """SELECT rank::INTEGER AS rank, token_id::BIGINT AS token_id, token, logit
            FROM logit_lens WHERE sae_idx = ? AND feature = ?
            ORDER BY rank < 0, abs(rank)""",
            [ref.idx, self._feature(ref, feature)],
        )

    def feature_tokens(self, sae: str) -> pd.DataFrame:
        """The stored feature x token counts of one SAE (see `feature_token`).

        Columns: feature, token_id, token, n_active (the feature's active tokens that are
        this token), n_token (the token's rows in `tokens`) and n_feature (the feature's
        active tokens, `feature_stats.n_active_tokens`); per feature its most frequent
        tokens first (ties by token_id). Live features only; reads no `acts`.
        """
        ref = self.sae(sae)
        return self.query(
            """SELECT f.feature::BIGINT AS feature, f.token_id::BIGINT AS token_id, c.token,
                f.n_active::BIGINT AS n_active, c.n AS n_token, s.n_active_tokens AS n_feature
            FROM feature_token f
            JOIN token_counts c USING (token_id)
            JOIN feature_stats s USING (sae_idx, feature)
            WHERE f.sae_idx = ?
            ORDER BY f.feature, f.n_active DESC, f.token_id""",
            [ref.idx],
        )

    def token_counts(self) -> pd.DataFrame:
        """token_id, token, n: every token id of the corpus with its rows in `tokens`."""
        return self.query(
            "SELECT token_id::BIGINT AS token_id, token, n FROM token_counts ORDER BY token_id"
        )

    def compute_feature_stats(self, sae: str) -> pd.DataFrame:
        """`feature_stats` of one SAE derived from `acts` (a full pass over the SAE's rows,
        for checks and benchmarks, not page loads)."""
        ref = self.sae(sae)
        totals = self.query(
            "SELECT (SELECT count(*) FROM tokens) AS n_tokens, "
            "(SELECT count(*) FROM texts WHERE n_tokens > 0) AS n_texts"
        ).iloc[0]
        return self.query(
            f"""SELECT feature::BIGINT AS feature, n_active_tokens, token_freq,
                n_active_texts, text_freq, freq_rank, mean_active, "max", hist
            FROM ({_RANKED_STATS_SQL.format(raw=_RAW_STATS_FROM_ACTS_SQL)})
            ORDER BY feature""",
            {
                "sae_idx": ref.idx,
                "d_sae": ref.d_sae,
                "hist_bins": HIST_BINS,
                "n_tokens": int(totals["n_tokens"]),
                "n_texts": int(totals["n_texts"]),
            },
        )

    def table_counts(self) -> dict[str, int]:
        """Row count of every table."""
        with self.cursor() as cursor:
            tables = sorted(row[0] for row in cursor.execute(_TABLE_NAMES_SQL).fetchall())
            return {t: cursor.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    def export(
        self,
        table: str,
        out_path: str | Path,
        format: Literal["csv", "parquet"] = "parquet",
        *,
        force: bool = False,
    ) -> Path:
        """Write one table to CSV or Parquet, with SAE names in place of `sae_idx`.

        `labels` and `interventions` come from the user data sidecar. An existing file is
        replaced only with `force`; the store, its sidecar and any database file are never
        replaced. The table is written to a temporary file in the same folder, then renamed
        over `out_path`, so a failed export leaves no half-written file."""
        if format not in ("csv", "parquet"):
            raise InputError(
                f"Export format must be 'csv' or 'parquet', got {markdown_escaped(repr(format))}."
            )
        out_path = _export_target(Path(out_path).absolute(), self._protected_files(), force)
        partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        with self.cursor() as cursor:
            tables = sorted(row[0] for row in cursor.execute(_TABLE_NAMES_SQL).fetchall())
            if table not in tables:
                raise StoreError(
                    f"Unknown table {markdown_escaped(repr(table))}; the store has "
                    f"{markdown_escaped(tables)}."
                )
            columns = [row[0] for row in cursor.execute(f"DESCRIBE {table}").fetchall()]
            if table in ("labels", "interventions"):
                user_rows = self.labels() if table == "labels" else self.interventions()
                oldest_first = user_rows.iloc[::-1]
                relation = cursor.from_arrow(
                    pa.Table.from_pandas(oldest_first, preserve_index=False)
                )
            elif "sae_idx" in columns and table != "saes":
                relation = cursor.sql(
                    f"SELECT s.sae, t.* EXCLUDE (sae_idx) FROM {table} t "
                    "JOIN saes s USING (sae_idx)"
                )
            else:
                relation = cursor.sql(f"SELECT * FROM {table}")
            try:
                if format == "csv":
                    relation.write_csv(str(partial))
                else:
                    relation.write_parquet(str(partial))
                os.replace(partial, out_path)
            except (duckdb.IOException, OSError) as exc:
                raise StoreError(
                    f"Cannot write {markdown_escaped(out_path)} ({markdown_escaped(exc)})."
                ) from exc
            finally:
                partial.unlink(missing_ok=True)
        return out_path

    def _protected_files(self) -> list[Path]:
        """The files an export must never replace: the store, its sidecar, their journals."""
        sidecar = self._user.path
        return [
            self.path,
            self.path.with_name(self.path.name + ".wal"),
            sidecar,
            sidecar.with_name(sidecar.name + "-wal"),
            sidecar.with_name(sidecar.name + "-shm"),
        ]

    # -- user data ------------------------------------------------------------------------
    # Labels, notes and ledger runs live in the store's sidecar (`explorer.store.user_data`):
    # saving never touches the store file or its read-only connection.

    def _import_legacy_user_data(self) -> None:
        """Copy the labels and runs an older store kept in its DuckDB file into the sidecar,
        once per version of that file (a read; new builds keep these tables empty)."""
        with self.cursor() as cursor:
            rows = legacy_rows(cursor)
        if rows is not None:
            self._user.import_legacy(legacy_source(self.path, self._identity), *rows)

    @property
    def user_data_path(self) -> Path:
        """The sidecar file that holds this store's labels, notes and ledger runs."""
        return self._user.path

    def user_data_version(self) -> tuple[int, int, int]:
        """Changes whenever a label or run is saved (for cache keys)."""
        return self._user.version()

    def labels(self, sae: str | None = None, feature: int | None = None) -> pd.DataFrame:
        """sae, feature, label, note, created_at, newest first; optionally one SAE/feature."""
        if sae is not None:
            ref = self.sae(sae)
            feature = None if feature is None else self._feature(ref, feature)
        return self._user.labels(sae, feature)

    def save_label(self, sae: str, feature: int, label: str, note: str = "") -> None:
        """Append a label for a feature; the newest label of a feature is its current one.
        A sidecar that cannot be written raises `StoreError` (nothing is saved)."""
        ref = self.sae(sae)
        feature = self._feature(ref, feature)
        label = label.strip()
        if not 0 < len(label) <= MAX_LABEL_CHARS:
            raise InputError(f"A label needs 1 to {MAX_LABEL_CHARS} characters.")
        if len(note) > MAX_NOTE_CHARS:
            raise InputError(f"A note may have at most {MAX_NOTE_CHARS} characters.")
        self._user.retry_import()
        self._user.add_label(sae, feature, label, note)

    def interventions(self, sae: str | None = None) -> pd.DataFrame:
        """id, sae, settings, metrics (JSON text), created_at, newest first."""
        if sae is not None:
            self.sae(sae)
        return self._user.interventions(sae)

    def save_intervention(
        self, sae: str, settings: Mapping[str, Any], metrics: Mapping[str, Any]
    ) -> int:
        """Record an intervention run (JSON-serialisable settings and metrics); returns its id.
        A sidecar that cannot be written raises `StoreError` (nothing is saved)."""
        self.sae(sae)
        settings_json = json.dumps(settings, sort_keys=True)
        metrics_json = json.dumps(metrics, sort_keys=True)
        self._user.retry_import()
        return self._user.add_run(sae, settings_json, metrics_json)


_DATABASE_MAGIC = {
    b"DUCK": (8, "a DuckDB database"),
    b"SQLite format 3\x00": (0, "a SQLite database"),
}


def _database_kind(path: Path) -> str | None:
    """What database the file at `path` is (e.g. "a DuckDB database"), or None."""
    try:
        with path.open("rb") as file:
            head = file.read(32)
    except OSError:
        return None
    for magic, (offset, kind) in _DATABASE_MAGIC.items():
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def _export_target(out_path: Path, protected: Sequence[Path], force: bool) -> Path:
    """`out_path` if an export may write it; a `StoreError` saying why not otherwise."""
    if not out_path.parent.is_dir():
        raise StoreError(
            f"Cannot export to {markdown_escaped(out_path)}: the folder "
            f"{markdown_escaped(out_path.parent)} does not exist."
        )
    real = os.path.realpath(out_path)
    for path in protected:
        same = real == os.path.realpath(path)
        if not same and out_path.exists() and path.exists():
            same = os.path.samefile(out_path, path)
        if same:
            raise StoreError(
                f"Cannot export to {markdown_escaped(out_path)}: that is the store's own file or "
                "its labels "
                "file. Choose another output file."
            )
    if not out_path.exists():
        return out_path
    if out_path.is_dir():
        raise StoreError(
            f"Cannot export to {markdown_escaped(out_path)}: it is a folder. Give a file name."
        )
    if not out_path.is_file():
        raise StoreError(
            f"Cannot export to {markdown_escaped(out_path)}: it is not a regular file."
        )
    kind = _database_kind(out_path)
    if kind is not None:
        raise StoreError(
            f"Cannot export to {markdown_escaped(out_path)}: it is {markdown_escaped(kind)}, and "
            "an export never replaces a "
            "database. Choose another output file."
        )
    if not force:
        raise StoreError(
            f"Cannot export to {markdown_escaped(out_path)}: the file exists. Choose another "
            "output file, or "
            "replace it with --force."
        )
    return out_path
