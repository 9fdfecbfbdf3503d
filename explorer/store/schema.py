"""The store's format: table definitions, Arrow schemas, size limits and the SAE reference.

Owns what a store file holds (`SCHEMA_VERSION`, the DDL of every table, the Arrow schemas
the build streams in) and the small helpers both the writer and the reader need. It runs no
build and no read; the format is described in docs/store.md.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import duckdb
import pyarrow as pa

from explorer import __version__
from explorer.errors import StoreError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "4"
HIST_BINS = 32
TOPK_EXAMPLES = 20
QUANTILE_BINS = 10
QUANTILE_EXAMPLES = 3
STRONG_FRACTION = 0.5
FLUSH_ROWS = 1_000_000
ROWS_PER_TEXT_BLOCK = 3_000_000
# Rows per DuckDB row group in a built store: 4 x DuckDB's default of 122,880. A column
# segment holds one row group; at the default, `acts.text_id` (12-14 bits a row) makes ~190 KB
# segments that each take a 256 KB block alone. With 4x the rows `acts` takes 5.56 instead of
# 6.41 bytes a row (52.9M rows of the demo model's SAEs), for ~0.4 ms more on a top-20 read.
ROW_GROUP_ROWS = 491_520
MAX_SAES = 256
MAX_TOP_EXAMPLES = 1000
MAX_FEATURES_PER_QUERY = 1024
MAX_LABEL_CHARS = 200
MAX_NOTE_CHARS = 2000
MAX_LABEL_PREFIX_CHARS = 100
LABEL_TOP = 5
FEATURE_TOKEN_TOP = 32

_TABLES: dict[str, str] = {
    "meta": "key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL",
    "saes": """sae_idx UTINYINT PRIMARY KEY, sae VARCHAR NOT NULL UNIQUE,
        hook_name VARCHAR NOT NULL, layer INTEGER, d_in INTEGER NOT NULL,
        d_sae INTEGER NOT NULL, architecture VARCHAR, release VARCHAR, sae_id VARCHAR,
        neuronpedia_id VARCHAR, l0 DOUBLE, explained_variance DOUBLE,
        ce_loss_recovered DOUBLE, dead_fraction DOUBLE, kl_divergence DOUBLE,
        l2_ratio DOUBLE, dense_fraction DOUBLE, quality_texts INTEGER""",
    "texts": """text_id UINTEGER NOT NULL, category VARCHAR NOT NULL, source VARCHAR,
        text VARCHAR NOT NULL, n_tokens INTEGER NOT NULL, labels VARCHAR[]""",
    "tokens": "text_id UINTEGER, pos USMALLINT, token_id UINTEGER, token VARCHAR",
    "acts": "sae_idx UTINYINT, feature UINTEGER, text_id UINTEGER, pos USMALLINT, value FLOAT",
    "feature_stats": """sae_idx UTINYINT, feature UINTEGER, n_active_tokens BIGINT,
        token_freq DOUBLE, n_active_texts BIGINT, text_freq DOUBLE, freq_rank INTEGER,
        mean_active DOUBLE, "max" DOUBLE, hist BIGINT[], max_text_act DOUBLE""",
    "feature_category": """sae_idx UTINYINT, feature UINTEGER, category VARCHAR,
        n_texts BIGINT, n_texts_active BIGINT, n_tokens_active BIGINT, mean_act DOUBLE,
        max_act DOUBLE, strong_count BIGINT""",
    "feature_text": "sae_idx UTINYINT, feature UINTEGER, text_id UINTEGER, act FLOAT",
    "category_ranks": """sae_idx UTINYINT, feature UINTEGER, category VARCHAR,
        active_rank_sum DOUBLE""",
    "feature_label": """sae_idx UTINYINT, feature UINTEGER, label VARCHAR,
        n_texts_active BIGINT, rank UTINYINT""",
    "feature_topk": """sae_idx UTINYINT, feature UINTEGER, rank USMALLINT, text_id UINTEGER,
        pos USMALLINT, value FLOAT, token VARCHAR""",
    "feature_quantiles": """sae_idx UTINYINT, feature UINTEGER, bin UTINYINT,
        bin_low DOUBLE, bin_high DOUBLE, rank UTINYINT, text_id UINTEGER, pos USMALLINT,
        value FLOAT, token VARCHAR""",
    "logit_lens": """sae_idx UTINYINT, feature UINTEGER, rank SMALLINT, token_id UINTEGER,
        token VARCHAR, logit FLOAT""",
    "feature_token": "sae_idx UTINYINT, feature UINTEGER, token_id UINTEGER, n_active UINTEGER",
    "token_counts": "token_id UINTEGER, token VARCHAR, n BIGINT",
    "labels": """sae VARCHAR NOT NULL, feature UINTEGER NOT NULL, label VARCHAR NOT NULL,
        note VARCHAR, created_at TIMESTAMP NOT NULL""",
    "interventions": """id BIGINT PRIMARY KEY, sae VARCHAR NOT NULL, settings JSON,
        metrics JSON, created_at TIMESTAMP NOT NULL""",
}
_USER_TABLES = ("labels", "interventions")

# Inputs collected during a build; TEMP tables live in memory (spilling to DuckDB's temp
# folder), so they never take space in the store file.
_STAGING: dict[str, str] = {
    "texts_staging": """text_id UINTEGER, category VARCHAR, source VARCHAR, text VARCHAR,
        labels VARCHAR[]""",
    "tokens_staging": _TABLES["tokens"],
    "acts_staging": _TABLES["acts"] + ", token_id UINTEGER",  # token_id: see add_acts
    "feature_stats_staging": """sae_idx UTINYINT, feature UINTEGER, n_active_tokens BIGINT,
        n_active_texts BIGINT, mean_active DOUBLE, "max" DOUBLE, hist BIGINT[]""",
    "logit_lens_staging": _TABLES["logit_lens"],
    "feature_topk_staging": """sae_idx UTINYINT, feature UINTEGER, rank USMALLINT,
        text_id UINTEGER, pos USMALLINT, value FLOAT""",
}

ACTS_SCHEMA = pa.schema(
    [
        ("sae_idx", pa.uint8()),
        ("feature", pa.uint32()),
        ("text_id", pa.uint32()),
        ("pos", pa.uint16()),
        ("value", pa.float32()),
    ]
)
_ACTS_STAGING_SCHEMA = ACTS_SCHEMA.append(pa.field("token_id", pa.uint32()))
TOKENS_SCHEMA = pa.schema(
    [
        ("text_id", pa.uint32()),
        ("pos", pa.uint16()),
        ("token_id", pa.uint32()),
        ("token", pa.string()),
    ]
)

# Adds the corpus-relative columns to raw per-feature statistics; `{raw}` is a table or a
# subquery from this module (never user input), $n_tokens / $n_texts are the corpus totals.
# Histograms the extraction did not pass in: linear bins over [0, max] from `acts`.


@dataclass(frozen=True)
class SaeInfo:
    """One row of `saes`: an SAE's identity, hook point and quality metrics."""

    sae: str
    hook_name: str
    layer: int | None
    d_in: int
    d_sae: int
    architecture: str | None = None
    release: str | None = None
    sae_id: str | None = None
    neuronpedia_id: str | None = None
    l0: float | None = None
    explained_variance: float | None = None
    ce_loss_recovered: float | None = None
    dead_fraction: float | None = None
    kl_divergence: float | None = None
    l2_ratio: float | None = None
    dense_fraction: float | None = None
    quality_texts: int | None = None


@dataclass(frozen=True)
class SaeRef:
    """One SAE of a store, as every read names it: `name` in the API and the UI, `idx` the
    1-byte id the large tables store (it may change between builds), its hook point and
    sizes, and its Neuronpedia id when it has one."""

    name: str
    idx: int
    d_sae: int
    hook_name: str = ""
    layer: int | None = None
    d_in: int = 0
    neuronpedia_id: str | None = None


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal, for the statements that take no parameters (ATTACH,
    SET)."""
    return "'" + text.replace("'", "''") + "'"


def _open_error(path: Path, exc: duckdb.Error) -> StoreError:
    message = str(exc)
    if "not a valid DuckDB database" in message:
        reason = "is not a DuckDB store (the file is corrupted or of another kind); rebuild it"
    elif "Conflicting lock" in message or "Could not set lock" in message:
        reason = "is being written by another process (a label or intervention save); retry"
    elif "different configuration" in message:
        reason = "is open for writing in this process (a label save); retry"
    else:
        reason = f"cannot be read ({message}); rebuild it"
    return StoreError(f"The store {path} {reason}.")


def stored_schema_version(path: str | Path) -> str | None:
    """The schema version written in the store file at `path`; None when there is no file,
    it is not a store, or it cannot be read now. Reads `meta` only, so a caller can tell a
    store of an older version (rebuild it) from a damaged or busy one (`Store.open` says why).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except duckdb.Error:
        return None
    return None if row is None else row[0]


def _is_corruption(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.IOException) or "Corrupt database file" in str(exc)


VERSIONED_PACKAGES = (
    "torch", "transformer-lens", "sae-lens", "duckdb", "pyarrow", "numpy", "pandas",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    """The versions of the explorer, Python and the packages whose code produced a store's
    (or a shard's) activations and tables; read from package metadata, so nothing heavy is
    imported."""
    versions = {"explorer": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


_TABLE_NAMES_SQL = """
SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main'
"""


_RANKED_STATS_SQL = """
SELECT sae_idx, feature, n_active_tokens,
    n_active_tokens / $n_tokens AS token_freq,
    n_active_texts,
    n_active_texts / $n_texts AS text_freq,
    row_number() OVER (PARTITION BY sae_idx ORDER BY n_active_tokens DESC, feature)::INTEGER
        AS freq_rank,
    mean_active, "max", hist
FROM {raw}
"""
