"""What users write about a store (labels, notes, the intervention ledger), kept in a sidecar.

A store file never changes after its build; labels, notes and ledger runs go to a SQLite
database next to it, `<store>.user.sqlite` (`sidecar_path`), in WAL mode with a busy timeout:
any number of threads and processes append at once (each write is one short `BEGIN IMMEDIATE`
transaction on its own connection), readers never wait for writers, and nothing closes or
reopens the store's read-only DuckDB connection. A rebuild replaces only the store file, so
the sidecar keeps everything. Rows are appended, never changed; ids grow in commit order, so
the newest label of a feature is the one with the largest id. Older stores kept labels and
runs inside the DuckDB file: `UserData.import_legacy` copies them in once (idempotent: a row
already present is skipped). This module owns the sidecar's schema, its reads and appends;
`Store` validates SAE names and feature ids before calling it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from explorer.errors import StoreError, markdown_escaped
from explorer.store.schema import _TABLE_NAMES_SQL

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".user.sqlite"
# Seconds a write waits for other writers before it gives up (a write holds the lock for
# about a millisecond, so only a stuck process holds it this long).
BUSY_TIMEOUT_S = 30.0

LABEL_COLUMNS = ["sae", "feature", "label", "note", "created_at"]
RUN_COLUMNS = ["id", "sae", "settings", "metrics", "created_at"]
CURRENT_LABELS_SCHEMA = pa.schema(
    [("sae", pa.string()), ("feature", pa.int64()), ("label", pa.string()), ("note", pa.string())]
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sae TEXT NOT NULL, feature INTEGER NOT NULL,
    label TEXT NOT NULL, note TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS labels_by_feature ON labels (sae, feature, id);
CREATE TABLE IF NOT EXISTS interventions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sae TEXT NOT NULL, settings TEXT NOT NULL,
    metrics TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS imports (store TEXT PRIMARY KEY, imported_at TEXT NOT NULL);
"""

_CURRENT_LABELS_SQL = """SELECT sae, feature, label, note FROM labels
WHERE id IN (SELECT max(id) FROM labels GROUP BY sae, feature) ORDER BY sae, feature"""


def sidecar_path(store_path: str | Path) -> Path:
    """Where the user data of the store at `store_path` lives."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + SIDECAR_SUFFIX)


def legacy_rows(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The labels and runs an older store keeps inside its DuckDB file (`con`, read-only),
    or None when it keeps none (stores built since the sidecar keep these tables empty)."""
    present = {row[0] for row in con.execute(_TABLE_NAMES_SQL).fetchall()}
    if {"labels", "interventions"} - present:
        return None
    counts = con.execute(
        "SELECT (SELECT count(*) FROM labels), (SELECT count(*) FROM interventions)"
    ).fetchone()
    if not any(counts):
        return None
    labels = con.execute(
        """SELECT sae, feature::BIGINT AS feature, label, coalesce(note, '') AS note,
            created_at FROM labels ORDER BY created_at"""
    ).df()
    runs = con.execute(
        """SELECT id, sae, settings::VARCHAR AS settings, metrics::VARCHAR AS metrics,
            created_at FROM interventions ORDER BY id"""
    ).df()
    return labels, runs


def legacy_source(store_path: Path, identity: tuple[int, int]) -> str:
    """Names one version of a store file, by its path and (inode, mtime_ns), in `imports`."""
    inode, mtime_ns = identity
    return f"{store_path}:{inode}:{mtime_ns}"


def now() -> str:
    """The current UTC time as the sidecar stores it (ISO, microseconds, no zone)."""
    return timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None))


def timestamp(value: object) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")


class UserData:
    """The sidecar of one store. Safe to share between threads; every call opens its own
    short-lived SQLite connection. Reads of a sidecar that does not exist yet return no rows
    (and create nothing); the first write creates it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False
        self._ready_lock = threading.Lock()
        # legacy rows that could not be imported (sidecar not writable): shown, not lost
        self._unimported: tuple[pd.DataFrame, pd.DataFrame] | None = None
        self._unimported_source = ""

    # -- connections --------------------------------------------------------------------

    def _connect(self, create: bool) -> sqlite3.Connection:
        target = str(self.path) if create else f"{self.path.as_uri()}?mode=rw"
        con = sqlite3.connect(
            target,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
            uri=not create,
        )
        try:
            con.execute("PRAGMA synchronous = FULL")  # a saved label survives a power cut
        except sqlite3.Error:
            con.close()
            raise
        return con

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """A connection to read the sidecar, or None if it does not exist yet."""
        if not self.path.exists():
            yield None
            return
        try:
            con = self._connect(create=False)
        except sqlite3.Error as exc:
            raise self._error("read", exc) from exc
        with closing(con):
            yield con

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A connection inside `BEGIN IMMEDIATE`, committed on exit (rolled back on error)."""
        try:
            con = self._connect(create=True)
        except sqlite3.Error as exc:
            raise self._error("save to", exc) from exc
        with closing(con):
            try:
                self._prepare(con)
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error("save to", exc) from exc
            try:
                yield con
                con.execute("COMMIT")
            except BaseException as exc:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error("save to", exc) from exc
                raise

    def _prepare(self, con: sqlite3.Connection) -> None:
        """WAL mode and the tables, once per object (both persist in the file)."""
        with self._ready_lock:
            if self._ready:
                return
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript(_SCHEMA)
            self._ready = True

    def _error(self, action: str, exc: sqlite3.Error) -> StoreError:
        """What went wrong with the sidecar, in words a user can act on."""
        text = str(exc).lower()
        folder = self.path.parent
        if "locked" in text or "busy" in text:
            reason = (
                f"other saves kept it locked for more than {BUSY_TIMEOUT_S:.0f} s; "
                "nothing was saved, try again"
            )
        elif "readonly" in text or "read-only" in text or not os.access(folder, os.W_OK):
            reason = f"the file or its folder {markdown_escaped(folder)} is read-only"
        elif "not a database" in text or "malformed" in text:
            reason = "it is not a readable labels file; move it away to start a new one"
        elif isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            reason = f"it cannot be opened in {markdown_escaped(folder)}"
        else:
            reason = markdown_escaped(exc)
        return StoreError(
            f"Cannot {action} the labels and runs file {markdown_escaped(self.path)}: {reason}."
        )

    # -- reads --------------------------------------------------------------------------

    def _frame(self, sql: str, params: list[object], columns: list[str]) -> pd.DataFrame:
        with self._reading() as con:
            rows = [] if con is None else self._fetch(con, sql, params)
        return pd.DataFrame.from_records(rows, columns=columns)

    def _fetch(self, con: sqlite3.Connection, sql: str, params: list[object]) -> list[tuple]:
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created, tables not yet committed
                return []
            raise self._error("read", exc) from exc
        except sqlite3.Error as exc:
            raise self._error("read", exc) from exc

    def labels(self, sae: str | None = None, feature: int | None = None) -> pd.DataFrame:
        """sae, feature, label, note, created_at, newest first; optionally one SAE/feature."""
        frame = self._frame(
            """SELECT id, sae, feature, label, note, created_at FROM labels
            WHERE (? IS NULL OR sae = ?) AND (? IS NULL OR feature = ?) ORDER BY id DESC""",
            [sae, sae, feature, feature],
            ["id", *LABEL_COLUMNS],
        ).drop(columns="id")
        if self._unimported is not None:
            legacy = self._unimported[0]
            keep = (sae is None or legacy["sae"] == sae) & (
                feature is None or legacy["feature"] == feature
            )
            frame = pd.concat([frame, legacy[keep].iloc[::-1]], ignore_index=True)
        return _typed(frame, LABEL_COLUMNS)

    def current_labels(self) -> pa.Table:
        """sae, feature, label, note: the newest label of every labelled feature, as an Arrow
        table with fixed types (for a DuckDB query to join, even when empty)."""
        frame = self._frame(_CURRENT_LABELS_SQL, [], ["sae", "feature", "label", "note"])
        if self._unimported is not None:
            frame = pd.concat([self._unimported[0].iloc[::-1], frame], ignore_index=True)
            frame = frame.drop_duplicates(["sae", "feature"], keep="last")[frame.columns]
        return pa.Table.from_pandas(
            frame.astype({"feature": "int64"}), CURRENT_LABELS_SCHEMA, preserve_index=False
        )

    def interventions(self, sae: str | None = None) -> pd.DataFrame:
        """id, sae, settings, metrics (JSON text), created_at, newest first."""
        frame = self._frame(
            """SELECT id, sae, settings, metrics, created_at FROM interventions
            WHERE ? IS NULL OR sae = ? ORDER BY id DESC""",
            [sae, sae],
            RUN_COLUMNS,
        )
        if self._unimported is not None:
            legacy = self._unimported[1]
            legacy = legacy[(sae is None) | (legacy["sae"] == sae)].iloc[::-1]
            frame = pd.concat([frame, legacy], ignore_index=True)
        return _typed(frame, RUN_COLUMNS)

    def version(self) -> tuple[int, int, int]:
        """Changes whenever a row is added: (newest label id, newest run id, inode)."""
        sql = """SELECT (SELECT coalesce(max(id), 0) FROM labels),
            (SELECT coalesce(max(id), 0) FROM interventions)"""
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            return 0, 0, 0
        with self._reading() as con:
            rows = [] if con is None else self._fetch(con, sql, [])
        return (*(rows[0] if rows else (0, 0)), inode)

    # -- writes -------------------------------------------------------------------------

    def add_label(self, sae: str, feature: int, label: str, note: str) -> None:
        with self._writing() as con:
            con.execute(
                "INSERT INTO labels (sae, feature, label, note, created_at) VALUES (?, ?, ?, ?, ?)",
                [sae, feature, label, note, now()],
            )

    def add_run(self, sae: str, settings_json: str, metrics_json: str) -> int:
        with self._writing() as con:
            cursor = con.execute(
                "INSERT INTO interventions (sae, settings, metrics, created_at) "
                "VALUES (?, ?, ?, ?)",
                [sae, settings_json, metrics_json, now()],
            )
            return int(cursor.lastrowid)

    def import_legacy(
        self, source: str, labels: pd.DataFrame, runs: pd.DataFrame, *, strict: bool = False
    ) -> None:
        """Copy the labels and runs an older store kept inside its DuckDB file (`source`
        names that file's version, see `legacy_source`), once: rows already in the sidecar
        are skipped, ledger ids are kept where free. If the sidecar cannot be written, raise
        `StoreError` when `strict`; otherwise the rows stay visible to reads of this object
        and the next write retries the import."""
        labels = labels[LABEL_COLUMNS].sort_values("created_at", kind="stable")
        runs = runs[RUN_COLUMNS].sort_values("id", kind="stable")
        try:
            with self._reading() as con:
                done = con is not None and self._fetch(
                    con, "SELECT 1 FROM imports WHERE store = ?", [source]
                )
            if done:
                return
            with self._writing() as con:
                self._import(con, source, labels, runs)
        except StoreError as error:
            if strict:
                raise
            logger.warning("labels and runs of an older store are not imported: %s", error)
            self._unimported = (_typed(labels, LABEL_COLUMNS), _typed(runs, RUN_COLUMNS))
            self._unimported_source = source
            return
        self._unimported = None

    def retry_import(self) -> None:
        """Import legacy rows a previous `import_legacy` could not write (raises StoreError)."""
        if self._unimported is None:
            return
        labels, runs = self._unimported
        with self._writing() as con:
            self._import(con, self._unimported_source, labels, runs)
        self._unimported = None

    @staticmethod
    def _import(
        con: sqlite3.Connection, source: str, labels: pd.DataFrame, runs: pd.DataFrame
    ) -> None:
        if con.execute("SELECT 1 FROM imports WHERE store = ?", [source]).fetchone():
            return
        present = set(con.execute("SELECT sae, feature, label, note, created_at FROM labels"))
        for row in labels.itertuples(index=False):
            key = (row.sae, int(row.feature), row.label, row.note or "", timestamp(row.created_at))
            if key not in present:
                con.execute(
                    "INSERT INTO labels (sae, feature, label, note, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    key,
                )
                present.add(key)
        runs_present = set(
            con.execute("SELECT sae, settings, metrics, created_at FROM interventions")
        )
        for row in runs.itertuples(index=False):
            key = (row.sae, row.settings, row.metrics, timestamp(row.created_at))
            if key in runs_present:
                continue
            taken = con.execute(
                "SELECT 1 FROM interventions WHERE id = ?", [int(row.id)]
            ).fetchone()
            con.execute(
                "INSERT INTO interventions (id, sae, settings, metrics, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [None if taken else int(row.id), *key],
            )
            runs_present.add(key)
        con.execute("INSERT INTO imports VALUES (?, ?)", [source, now()])


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with the dtypes the store's reads had: int64 ids, datetime64 created_at."""
    frame = frame[columns].reset_index(drop=True)
    ints = [c for c in ("id", "feature") if c in columns]
    return frame.astype({c: "int64" for c in ints}).assign(
        created_at=pd.to_datetime(frame["created_at"]).astype("datetime64[us]")
    )
