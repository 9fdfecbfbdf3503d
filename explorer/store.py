"""The feature store: one DuckDB file per build, its schema, the build writer and the reads.

This module owns the on-disk format and every SQL statement run against it. `StoreWriter`
takes what the extraction produced (numpy / Arrow arrays: sparse activations, per-feature
statistics, logit-lens tokens) and writes a complete store; `Store` opens a finished store
read-only and answers the app's questions with parameterised range reads. It does not run
models or SAEs (see `explorer.extract`) and computes no research scores (see
`explorer.analysis`); it has no torch dependency.

Schema (version `SCHEMA_VERSION`; ids are unsigned on disk and come back as int64):

- `meta(key, value)`: schema_version, created_at, versions (JSON), plus the build's own keys
  (source, corpus, settings; non-string values are stored as JSON).
- `saes(sae_idx UTINYINT, sae, hook_name, layer, d_in, d_sae, architecture, release, sae_id,
  neuronpedia_id, l0, explained_variance, ce_loss_recovered, dead_fraction)`. The public API
  names SAEs by `sae`; `sae_idx` is the 1-byte id the large tables store.
- `texts(text_id UINTEGER, category, source, text, n_tokens, labels VARCHAR[])`, sorted by
  text_id. `n_tokens` is set by the writer: the text's rows in `tokens`.
- `tokens(text_id UINTEGER, pos USMALLINT, token_id UINTEGER, token)`, sorted by (text_id,
  pos): the real tokens, BOS and padding never become rows (the extraction guarantees it).
- `acts(sae_idx UTINYINT, feature UINTEGER, text_id UINTEGER, pos USMALLINT, value FLOAT)`:
  positive activations only, physically sorted by (sae_idx, text_id // block, feature, value
  DESC, text_id, pos). `block` (meta `acts_text_block`) is chosen at build so no SAE has more
  than ~`ROWS_PER_TEXT_BLOCK` rows in one text block; a store under that size has a single
  block, i.e. is sorted by (sae_idx, feature, value DESC). Within a block a feature's rows are
  one run, its largest values first.
- `feature_stats(sae_idx, feature, n_active_tokens, token_freq, n_active_texts, text_freq,
  freq_rank, mean_active, max, hist BIGINT[])`, one row per feature (dead ones included),
  passed in by the extraction. token_freq = n_active_tokens / rows of `tokens`; text_freq =
  n_active_texts / texts with at least one token; freq_rank 1 = most active tokens (ties by
  feature id); mean_active = mean of the nonzero activations; `hist` = `HIST_BINS` counts of
  nonzero activations in linear bins over [0, max]: bin = min(floor(value / max * 32), 31),
  computed in float64. Dead features: zero counts, mean_active 0, max 0.
  `Store.compute_feature_stats` derives the same table from `acts` for checks. The last
  column, max_text_act, is derived at finish: the feature's largest `feature_text.act` (0 if
  dead); `frequency_table` returns it.
- `feature_category(sae_idx, feature, category, n_texts, n_texts_active, n_tokens_active,
  mean_act, max_act, strong_count)`, computed from acts + texts at finish, one row per
  (feature with any activation) x (category); texts without tokens count nowhere.
  n_texts: texts of the category; n_texts_active: those where the feature fires on at least
  one token; n_tokens_active: the feature's active tokens in the category; mean_act: mean
  over the category's texts of the text's activation, where a text's activation is the sum
  of the feature's activations over its tokens divided by its n_tokens (zeros included), so
  mean_act = sum(value / n_tokens of its text) / n_texts; max_act: largest activation in the
  category; strong_count: tokens of the category with value >= `STRONG_FRACTION` (0.5) x the
  feature's largest activation over the whole corpus.
- `feature_text(sae_idx, feature, text_id, act FLOAT)`, sorted by (sae_idx, feature, text_id):
  one row per text where the feature fires; act = the text activation above (sum over its
  tokens / n_tokens). Thresholds chosen at read time (`category_counts`) scan this table,
  never `acts`; it has one row per distinct (feature, text) of `acts`, so it is a fraction of
  `acts` (each feature fires on several tokens of a text).
- `category_ranks(sae_idx, feature, category, active_rank_sum)`: per feature, rank the texts
  where it fires by `feature_text.act` (ascending, ties take their mean rank, 1 = the
  smallest); active_rank_sum is the sum of those ranks over the category's texts, rows only
  where it fires on the category. With the counts of `feature_category` this gives the
  one-vs-rest AUROC of the text activation (all other texts tie at 0 below them) without
  re-reading any text.
- `feature_label(sae_idx, feature, label, n_texts_active, rank)`: for each feature, the
  labels of `texts.labels` (e.g. `op:addition`, `num:100`) carried by most of the texts
  where it fires, with that count: the `LABEL_TOP` first of each label family (the text
  before the first ':', `op` or `num`; labels without ':' form one family), rank 1 = the
  most texts, ties by label. Enough for dominance (the top two of a family) at a fraction
  of the size of every (feature, label) pair (330k rows for 589 texts of the demo store).
- `feature_topk(sae_idx, feature, rank, text_id, pos, value, token)`: each feature's
  `TOPK_EXAMPLES` largest activations (rank 1 first; ties by text_id, pos), with the token:
  the extraction's running top-k (`add_top_examples`), or ranked from `acts` at finish.
- `feature_quantiles(sae_idx, feature, bin, bin_low, bin_high, rank, text_id, pos, value,
  token)`: examples spread over the activation range. `QUANTILE_BINS` linear bins over [0,
  max] (bin b holds values in [b, b + 1) x max / 10, the top bin includes max); in each bin up
  to `QUANTILE_EXAMPLES` rows picked by a hash of (text_id, pos): deterministic, unrelated to
  the value; rank 1 = largest value among the picked.
- `logit_lens(sae_idx, feature, rank, token_id, token, logit)`: rank 1..k for the top tokens
  (largest logit first), -1..-k for the bottom ones (most negative first).
- `feature_token(sae_idx, feature, token_id, n_active)`, sorted by (sae_idx, feature,
  n_active DESC, token_id): per feature, how many of its active tokens (rows of `acts`) are
  each token id, for its `FEATURE_TOKEN_TOP` most frequent token ids (ties by token_id);
  counted from the staged rows, which carry their token id when the extraction passes it. With
  `feature_stats.n_active_tokens` (the feature's active tokens), `token_counts.n` (the token's
  occurrences) and the rows of `tokens` it gives the 2 x 2 feature x token tables of the
  token-enrichment taxonomy (`explorer.analysis.enrichment`) without reading `acts`.
- `token_counts(token_id, token, n)`, sorted by token_id: each token id of `tokens` with its
  string and its number of rows; their sum is the rows of `tokens`.
- `labels(sae, feature, label, note, created_at)`, `interventions(id, sae, settings JSON,
  metrics JSON, created_at)`: what users write. They name SAEs by `sae` (sae_idx may change
  between builds) and the writer copies them from the previous store at the same path.

Decisions, measured on 50M rows, 4 SAEs x 4096 features, 50k texts (bench/README.md):

- One copy of the activations. Sorted by feature, `acts` costs ~6.5 bytes a row (text_id
  bit-packed ~2 B, pos ~1 B, value ALP-RD ~3.5 B, sae_idx and feature run-length encoded to
  ~0); the whole file with tokens and derived tables is ~7.5 B per activation row. A second
  copy sorted by (text_id, sae_idx, pos) measured +7.5 B/row (14.5 B/row at 12M rows), and
  even a compact copy needs the feature id and the value (~5 B/row), so neither fits the
  8 B/row budget. Smaller row groups (16k rows) would sharpen zone maps for +0.5 B/row.
- Text blocks are the token view's fast path, at no cost in bytes. Sorted by feature alone,
  one text's activations are spread over the whole SAE: `text_acts` for all features
  scanned 12.5M rows, 21 ms on the loaded 2-core bench machine (11 ms idle), against a 10 ms
  target. Sorting by text block first lets `text_id` zone maps skip all but one block
  (7.5 ms); a feature's top examples become one range read per block, each a prefix by value
  that the top-N filter on `value` cuts short (top-20: 2.7 ms, 8.4 ms for a feature with
  1.2M rows, against 2.3 / 2.9 ms unblocked). 3M-row blocks (5 at 12.5M rows per SAE)
  balance the two; bench/README.md has a sweep of block sizes. `text_acts` for chosen
  features adds `feature IN (...)` and reads only their runs (~2 ms either way).
- `top_examples` returns positions only: joining the token string scans most of `tokens`
  (10+ ms, as `tokens` zone maps are coarse), so the precomputed `feature_topk` and
  `feature_quantiles` carry the token, and `text_tokens` gives a text's tokens (~1.5 ms).

Build and concurrency. `StoreWriter` writes `<path>.tmp-<pid>` in one transaction (staging
tables are TEMP, so they never enlarge the file; row groups of `ROW_GROUP_ROWS` rows), sorts
and derives at `finish`, commits, checkpoints, closes and only then `os.replace`s the old
file: a failed or killed build leaves the old store as it was. `Store` holds one read-only
connection and takes a cursor per query, so one `Store` may serve many threads. DuckDB
refuses a read-write connection to a file that is open read-only in the same process, so
user writes (`save_label`, `save_intervention`) wait for running reads, close the shared
connection, write through a short-lived read-write connection, checkpoint, and reopen;
another process holding the store open makes them fail with a `StoreError`. After a rebuild,
close every `Store` on the path and open it again (DuckDB reuses an open instance of the
same path, which still reads the replaced file).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from explorer import __version__
from explorer.errors import InputError, StoreError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "3"
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
        ce_loss_recovered DOUBLE, dead_fraction DOUBLE""",
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
_FILL_HIST_SQL = """
UPDATE feature_stats_staging s SET hist = h.hist FROM (
    WITH missing AS (
        SELECT sae_idx, feature, "max" FROM feature_stats_staging WHERE hist IS NULL),
    bins AS (
        SELECT a.sae_idx, a.feature,
            least(floor(a.value::DOUBLE / m."max" * $hist_bins), $hist_bins - 1)::BIGINT AS bin,
            count(*) AS n
        FROM acts a JOIN missing m USING (sae_idx, feature) WHERE m."max" > 0 GROUP BY ALL)
    SELECT m.sae_idx, m.feature, list(coalesce(b.n, 0) ORDER BY r.bin) AS hist
    FROM missing m CROSS JOIN range($hist_bins) r(bin)
    LEFT JOIN bins b ON b.sae_idx = m.sae_idx AND b.feature = m.feature AND b.bin = r.bin
    GROUP BY m.sae_idx, m.feature
) h
WHERE s.sae_idx = h.sae_idx AND s.feature = h.feature
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

# Raw per-feature statistics of one SAE derived from acts (the extraction computes the same
# on tensors while it runs); every feature 0..d_sae-1 gets a row.
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

# One row per (SAE, feature, text) where the feature fires; the base of the tables below.
# Grouped on the three integer keys, then joined to the texts (grouping on the text's
# category and n_tokens too took 1.25x as long on 52.9M rows).
_PER_TEXT_SQL = """
CREATE TEMP TABLE per_text AS
SELECT p.sae_idx, p.feature, p.text_id, t.category, t.n_tokens,
    p.act_sum, p.n_active, p.act_max, p.n_strong
FROM (
    SELECT a.sae_idx, a.feature, a.text_id,
        sum(a.value::DOUBLE) AS act_sum, count(*) AS n_active, max(a.value) AS act_max,
        count(*) FILTER (WHERE a.value >= $strong * m.fmax) AS n_strong
    FROM acts a JOIN feature_max m USING (sae_idx, feature)
    GROUP BY a.sae_idx, a.feature, a.text_id) p
JOIN texts t USING (text_id)
"""

# The text activation (mean over the text's real tokens, zeros included) as stored, and its
# midrank among the feature's active texts (ties share the mean of their ranks): the mean of
# the first rank of its ties (`rank`) and the last (rows up to its last peer, as RANGE frames
# include peers). Both windows share one partition and order, so one sort serves them (a
# second window partitioned by the value took 1.6x as long on 19.6M rows).
_FEATURE_TEXT_SQL = """
CREATE TEMP TABLE ranked_text AS
SELECT sae_idx, feature, text_id, category, act,
    (rank() OVER by_act
        + count(*) OVER (by_act RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) / 2.0
        AS midrank
FROM (SELECT sae_idx, feature, text_id, category, (act_sum / n_tokens)::FLOAT AS act
    FROM per_text)
WINDOW by_act AS (PARTITION BY sae_idx, feature ORDER BY act);
INSERT INTO feature_text
SELECT sae_idx, feature, text_id, act FROM ranked_text ORDER BY sae_idx, feature, text_id;
INSERT INTO category_ranks
SELECT sae_idx, feature, category, sum(midrank) FROM ranked_text
GROUP BY ALL ORDER BY sae_idx, feature, category;
CREATE TEMP TABLE text_max AS
SELECT sae_idx, feature, max(act)::DOUBLE AS max_text_act FROM ranked_text GROUP BY ALL;
DROP TABLE ranked_text
"""

# Each feature's `$top` most frequent labels of each label family (see the docstring). Labels
# get integer ids (in label order) and families too, so the join and the grouping run on
# integers, and `max_by` keeps each family's top labels while aggregating (by count, then
# label: the key count * 2^32 - label_id), with no window sort.
_FEATURE_LABEL_SQL = """
INSERT INTO feature_label
WITH text_labels AS (
    SELECT text_id, unnest(labels) AS label FROM texts WHERE n_tokens > 0),
dict AS (
    SELECT label, (row_number() OVER (ORDER BY label))::BIGINT AS label_id,
        dense_rank() OVER (ORDER BY CASE WHEN contains(label, ':')
            THEN split_part(label, ':', 1) ELSE '' END) AS family_id
    FROM (SELECT DISTINCT label FROM text_labels)),
counts AS (
    SELECT p.sae_idx, p.feature, d.family_id, d.label_id, count(*) AS n
    FROM per_text p JOIN text_labels t USING (text_id) JOIN dict d USING (label)
    GROUP BY ALL),
top AS (
    SELECT sae_idx, feature,
        max_by({'label_id': label_id, 'n_texts_active': n}, n * 4294967296 - label_id, $top)
            AS best
    FROM counts GROUP BY sae_idx, feature, family_id)
SELECT t.sae_idx, t.feature, d.label, t.n_texts_active, t.rank
FROM (SELECT sae_idx, feature, unnest(best, recursive := true),
        generate_subscripts(best, 1) AS rank FROM top) t
JOIN dict d USING (label_id)
ORDER BY t.sae_idx, t.feature, d.label
"""

_FEATURE_CATEGORY_SQL = """
INSERT INTO feature_category
WITH categories AS (
    SELECT category, count(*) AS n_texts FROM texts WHERE n_tokens > 0 GROUP BY category),
per_category AS (
    SELECT sae_idx, feature, category, count(*) AS n_texts_active,
        sum(n_active) AS n_tokens_active, sum(act_sum / n_tokens) AS act_mean_sum,
        max(act_max) AS max_act, sum(n_strong) AS strong_count
    FROM per_text
    GROUP BY ALL)
SELECT m.sae_idx, m.feature, c.category, c.n_texts,
    coalesce(pc.n_texts_active, 0), coalesce(pc.n_tokens_active, 0),
    coalesce(pc.act_mean_sum, 0) / c.n_texts, coalesce(pc.max_act, 0),
    coalesce(pc.strong_count, 0)
FROM feature_max m CROSS JOIN categories c
LEFT JOIN per_category pc
    ON pc.sae_idx = m.sae_idx AND pc.feature = m.feature AND pc.category = c.category
ORDER BY m.sae_idx, m.feature, c.category
"""

# Per (SAE, feature, category): the store's counts, the rank sums and the texts whose
# activation reaches the strong threshold: `$threshold` x the feature's largest text
# activation when `$relative`, else `$threshold` itself. A scan of `feature_text`.
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

# Each feature's `$k` largest activations: the extraction's running top-k where it passed
# one in (`add_top_examples`), else ranked from `acts`.
_FEATURE_TOPK_SQL = """
INSERT INTO feature_topk
SELECT a.sae_idx, a.feature, a.rank, a.text_id, a.pos, a.value, t.token
FROM (
    SELECT sae_idx, feature, rank, text_id, pos, value FROM feature_topk_staging
    WHERE rank <= $k
    UNION ALL
    SELECT sae_idx, feature,
        row_number() OVER (PARTITION BY sae_idx, feature ORDER BY value DESC, text_id, pos)
            AS rank,
        text_id, pos, value
    FROM acts
    WHERE sae_idx NOT IN (SELECT sae_idx FROM feature_topk_staging)
    QUALIFY rank <= $k) a
LEFT JOIN tokens t USING (text_id, pos)
ORDER BY sae_idx, feature, rank
"""

# In each bin, the `$per_bin` rows with the smallest hash(text_id, pos): `min_by` keeps them
# per group while aggregating, so `acts` is never sorted for it.
_FEATURE_QUANTILES_SQL = """
INSERT INTO feature_quantiles
WITH picked AS (
    SELECT a.sae_idx, a.feature, m.fmax::DOUBLE AS fmax,
        least(floor(a.value::DOUBLE / m.fmax * $bins), $bins - 1)::UTINYINT AS bin,
        unnest(
            min_by({'text_id': a.text_id, 'pos': a.pos, 'value': a.value},
                hash(a.text_id, a.pos), $per_bin),
            recursive := true)
    FROM acts a JOIN feature_max m USING (sae_idx, feature)
    GROUP BY a.sae_idx, a.feature, m.fmax, bin)
SELECT q.sae_idx, q.feature, q.bin, q.bin * q.fmax / $bins, (q.bin + 1) * q.fmax / $bins,
    row_number() OVER (
        PARTITION BY q.sae_idx, q.feature, q.bin ORDER BY q.value DESC, q.text_id, q.pos),
    q.text_id, q.pos, q.value, t.token
FROM picked q
LEFT JOIN tokens t USING (text_id, pos)
ORDER BY 1, 2, 3, 6
"""

# Per (SAE, feature, token id): the feature's active tokens that are this token id, kept for
# the feature's `$top` most frequent token ids (ties by token_id). Reads the staged rows:
# those added with their token id need no join with `tokens` (Parquet rows, or `add_acts`
# without `token_id`, are joined).
_FEATURE_TOKEN_SQL = """
INSERT INTO feature_token
WITH row_tokens AS (
    SELECT sae_idx, feature, token_id FROM acts_staging WHERE token_id IS NOT NULL
    UNION ALL
    SELECT s.sae_idx, s.feature, t.token_id
    FROM acts_staging s JOIN tokens t USING (text_id, pos)
    WHERE s.token_id IS NULL)
SELECT sae_idx, feature, token_id, count(*) AS n_active
FROM row_tokens
GROUP BY sae_idx, feature, token_id
QUALIFY row_number() OVER (
    PARTITION BY sae_idx, feature ORDER BY count(*) DESC, token_id) <= $top
ORDER BY sae_idx, feature, n_active DESC, token_id
"""

_TOKEN_COUNTS_SQL = """
INSERT INTO token_counts
SELECT token_id, min(token), count(*) FROM tokens GROUP BY token_id ORDER BY token_id
"""


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


@dataclass(frozen=True)
class _SaeRef:
    name: str
    idx: int
    d_sae: int


def _tmp_path(path: Path, pid: int) -> Path:
    return path.with_name(f"{path.name}.tmp-{pid}")


def _remove_db_files(db: Path) -> None:
    """Remove a DuckDB file with its WAL and spill folder, whichever exist."""
    for candidate in (db, db.with_name(db.name + ".wal")):
        candidate.unlink(missing_ok=True)
    shutil.rmtree(db.with_name(db.name + ".tmp"), ignore_errors=True)


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal, for the statements that take no parameters (ATTACH,
    SET)."""
    return "'" + text.replace("'", "''") + "'"


def _connect_for_build(db: Path) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is a new file `db` with `ROW_GROUP_ROWS`-row
    groups (a setting of ATTACH only), spilling to `<db>.tmp` as a file connection would."""
    con = duckdb.connect()
    try:
        con.execute(f"SET temp_directory = {sql_literal(str(db) + '.tmp')}")
        con.execute(f"ATTACH {sql_literal(str(db))} AS store (ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        con.execute("USE store")
    except duckdb.Error:
        con.close()
        raise
    return con


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (a build or shard write that left a temp file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_builds(path: Path) -> None:
    """Delete `<path>.tmp-<pid>*` files left by builds whose process no longer runs."""
    prefix = f"{path.name}.tmp-"
    for leftover in path.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        pid_text = leftover.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or pid_alive(int(pid_text)):
            continue
        logger.info("removing %s, left by build process %s that no longer runs", leftover, pid_text)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


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


def _uint_array(values: Any, dtype: type[np.unsignedinteger], name: str) -> np.ndarray:
    """`values` as a 1-D array of `dtype`, after checking they are integers in its range."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise StoreError(f"{name} must be a 1-D array, got shape {array.shape}.")
    if array.size == 0:
        return array.astype(dtype)
    if array.dtype.kind not in "iu":
        raise StoreError(f"{name} must hold integers, got dtype {array.dtype}.")
    low, high = array.min(), array.max()
    if low < 0 or high > np.iinfo(dtype).max:
        raise StoreError(
            f"{name} must lie in 0..{np.iinfo(dtype).max}, got values from {low} to {high}."
        )
    return array.astype(dtype, copy=False)


def _column(data: pd.DataFrame | Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise StoreError(f"Missing column {name!r}; got {sorted(data.keys())}.")
    column = data[name]
    return column.to_numpy() if isinstance(column, pd.Series) else column


def _json_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _versions() -> dict[str, str]:
    return {
        "explorer": __version__,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def _insert(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table | pa.RecordBatch) -> None:
    """Insert Arrow data into `table`, matching columns by name."""
    con.register("_incoming", data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
    finally:
        con.unregister("_incoming")


class _ArrowBuffer:
    """Collects Arrow record batches for one table and inserts them in large chunks."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, flush_rows: int) -> None:
        self._con = con
        self._table = table
        self._flush_rows = flush_rows
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0

    def append(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)
        self._rows += batch.num_rows
        if self._rows >= self._flush_rows:
            self.flush()

    def flush(self) -> None:
        if self._batches:
            _insert(self._con, self._table, pa.Table.from_batches(self._batches))
        self._batches.clear()
        self._rows = 0


class StoreWriter:
    """Writes one store: `with StoreWriter(path, meta=...) as writer: writer.add_...(...)`.

    Leaving the block normally calls `finish`; an exception rolls the build back and deletes
    the temporary file, leaving any previous store at `path` untouched. The writer trusts the
    extraction for what it cannot check cheaply: unique (sae, feature, text_id, pos) rows.
    Labels saved into the old store while `finish` runs, after it has copied them, are lost.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        meta: Mapping[str, Any] | None = None,
        rows_per_text_block: int = ROWS_PER_TEXT_BLOCK,
    ) -> None:
        self.path = Path(path).absolute()
        self._meta = dict(meta or {})
        self._rows_per_text_block = rows_per_text_block
        folder = self.path.parent
        if not folder.exists():
            raise StoreError(
                f"Cannot build {self.path}: the folder {folder} does not exist. "
                "Create it or choose another path."
            )
        if not folder.is_dir():
            raise StoreError(f"Cannot build {self.path}: {folder} is a file, not a folder.")
        if self.path.is_dir():
            raise StoreError(
                f"Cannot build {self.path}: it is a folder; give a file path such as "
                f"{self.path / 'store.duckdb'}."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(
                f"Cannot build {self.path}: no write permission in {folder}. "
                "Choose a folder you can write to."
            )
        if self.path.exists():
            self._read_user_data()  # fail now, not after the expensive part, if unreadable
        _remove_stale_builds(self.path)
        self._tmp = _tmp_path(self.path, os.getpid())
        _remove_db_files(self._tmp)
        try:
            self._con = _connect_for_build(self._tmp)
        except duckdb.Error as exc:
            _remove_db_files(self._tmp)
            raise StoreError(
                f"Cannot build {self.path}: cannot create {self._tmp} ({exc})."
            ) from exc
        self._saes: dict[str, _SaeRef] = {}
        self._stats_added: set[str] = set()
        self._rows_per_sae: dict[str, int] = {}
        self._closed = False
        self._done = False
        self._con.begin()
        for table, columns in _TABLES.items():
            self._con.execute(f"CREATE TABLE {table} ({columns})")
        for table, columns in _STAGING.items():
            self._con.execute(f"CREATE TEMP TABLE {table} ({columns})")
        self._acts = _ArrowBuffer(self._con, "acts_staging", FLUSH_ROWS)
        self._tokens = _ArrowBuffer(self._con, "tokens_staging", FLUSH_ROWS)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def add_sae(self, info: SaeInfo) -> None:
        """Register an SAE; its activations and statistics may be added afterwards."""
        if info.sae in self._saes:
            raise StoreError(f"SAE {info.sae!r} was added twice; SAE names must be unique.")
        if len(self._saes) >= MAX_SAES:
            raise StoreError(f"A store holds at most {MAX_SAES} SAEs.")
        if not info.sae or info.d_sae <= 0 or info.d_in <= 0:
            raise StoreError(f"SAE {info!r} needs a name and positive d_in and d_sae.")
        idx = len(self._saes)
        self._con.execute(
            "INSERT INTO saes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                idx,
                info.sae,
                info.hook_name,
                info.layer,
                info.d_in,
                info.d_sae,
                info.architecture,
                info.release,
                info.sae_id,
                info.neuronpedia_id,
                info.l0,
                info.explained_variance,
                info.ce_loss_recovered,
                info.dead_fraction,
            ],
        )
        self._saes[info.sae] = _SaeRef(info.sae, idx, info.d_sae)

    def set_quality(
        self,
        sae: str,
        *,
        l0: float,
        explained_variance: float,
        ce_loss_recovered: float,
        dead_fraction: float,
    ) -> None:
        """Record an SAE's quality, measured by the extraction after its rows were added."""
        ref = self._sae(sae)
        self._con.execute(
            """UPDATE saes SET l0 = ?, explained_variance = ?, ce_loss_recovered = ?,
            dead_fraction = ? WHERE sae_idx = ?""",
            [l0, explained_variance, ce_loss_recovered, dead_fraction, ref.idx],
        )

    def add_texts(self, texts: pd.DataFrame) -> None:
        """Add texts: columns text_id, category, source, text and optionally labels (lists)."""
        text_id = _uint_array(_column(texts, "text_id"), np.uint32, "text_id")
        category = pd.Series(_column(texts, "category"), dtype=object)
        if category.isna().any() or (category.astype(str).str.len() == 0).any():
            raise StoreError("Every text needs a non-empty category.")
        labels = texts["labels"] if "labels" in texts else [None] * len(text_id)
        batch = pa.record_batch(
            {
                "text_id": pa.array(text_id),
                "category": pa.array(category.astype(str).tolist(), pa.string()),
                "source": _strings(_column(texts, "source")),
                "text": _strings(_column(texts, "text")),
                "labels": pa.array(
                    [[str(x) for x in v] if _is_list(v) else [] for v in labels],
                    pa.list_(pa.string()),
                ),
            }
        )
        _insert(self._con, "texts_staging", batch)

    def add_tokens(self, text_id: Any, pos: Any, token_id: Any, token: Sequence[str]) -> None:
        """Add token rows (real tokens only: no BOS, no padding), as equal-length arrays."""
        columns = {
            "text_id": _uint_array(text_id, np.uint32, "text_id"),
            "pos": _uint_array(pos, np.uint16, "pos"),
            "token_id": _uint_array(token_id, np.uint32, "token_id"),
            "token": pa.array(
                list(token) if not isinstance(token, pa.Array) else token, pa.string()
            ),
        }
        _check_lengths(columns)
        self._tokens.append(pa.record_batch(columns, schema=TOKENS_SCHEMA))

    def add_acts(
        self, sae: str, feature: Any, text_id: Any, pos: Any, value: Any, token_id: Any = None
    ) -> None:
        """Add activations of one SAE as equal-length arrays; zeros are dropped.

        Values are stored as float32 and must be positive (ReLU, JumpReLU and TopK SAEs
        never produce negative activations). Rows are buffered and inserted with Arrow.
        `token_id`, each row's token (optional, as the extraction knows it), saves `finish`
        joining `acts` with `tokens` for `feature_token`.
        """
        ref = self._sae(sae)
        value = np.asarray(value, dtype=np.float32)
        columns = {
            "feature": _uint_array(feature, np.uint32, "feature"),
            "text_id": _uint_array(text_id, np.uint32, "text_id"),
            "pos": _uint_array(pos, np.uint16, "pos"),
            "value": value,
        }
        if token_id is not None:
            columns["token_id"] = _uint_array(token_id, np.uint32, "token_id")
        _check_lengths(columns)
        nonzero = value != 0
        if not nonzero.all():
            columns = {name: array[nonzero] for name, array in columns.items()}
        if not (columns["value"] > 0).all():
            raise StoreError(f"Activations of SAE {sae!r} must be positive and finite.")
        if columns["feature"].size and columns["feature"].max() >= ref.d_sae:
            raise StoreError(
                f"Feature {columns['feature'].max()} is out of range for SAE {sae!r} "
                f"(d_sae {ref.d_sae})."
            )
        n_rows = columns["value"].size
        self._rows_per_sae[sae] = self._rows_per_sae.get(sae, 0) + n_rows
        columns["sae_idx"] = np.full(n_rows, ref.idx, dtype=np.uint8)
        if token_id is None:
            columns["token_id"] = pa.nulls(n_rows, pa.uint32())
        self._acts.append(pa.record_batch(columns, schema=_ACTS_STAGING_SCHEMA))

    def add_texts_parquet(self, files: Sequence[str | Path]) -> int:
        """Add texts from Parquet files with the columns of `add_texts` (labels a list of
        strings), read by DuckDB directly; returns the rows added."""
        self._check_parquet(
            files,
            "count(*) FILTER (WHERE category IS NULL OR category = '')",
            [],
            "Every text needs a non-empty category.",
        )
        columns = "text_id, category, source, text, labels"
        return self._insert_parquet("texts_staging", columns, [], files)

    def add_tokens_parquet(self, files: Sequence[str | Path]) -> int:
        """Add token rows from Parquet files with the columns of `add_tokens`; returns the
        rows added."""
        return self._insert_parquet("tokens_staging", "text_id, pos, token_id, token", [], files)

    def add_acts_parquet(self, sae: str, files: Sequence[str | Path]) -> int:
        """Add one SAE's activations from Parquet files with the columns feature, text_id,
        pos, value (positive values only, as `add_acts` keeps), read by DuckDB directly;
        returns the rows added."""
        ref = self._sae(sae)
        self._check_parquet(
            files,
            "count(*) FILTER (WHERE NOT (value > 0 AND isfinite(value)))",
            [],
            f"Activations of SAE {sae!r} must be positive and finite.",
        )
        self._check_parquet(
            files,
            "count(*) FILTER (WHERE feature >= ?)",
            [ref.d_sae],
            f"A feature is out of range for SAE {sae!r} (d_sae {ref.d_sae}).",
        )
        columns = "?::UTINYINT AS sae_idx, feature, text_id, pos, value"
        n_rows = self._insert_parquet("acts_staging", columns, [ref.idx], files)
        self._rows_per_sae[sae] = self._rows_per_sae.get(sae, 0) + n_rows
        return n_rows

    def _check_parquet(
        self, files: Sequence[str | Path], count_sql: str, params: list[Any], message: str
    ) -> None:
        """Raise StoreError(message) when `count_sql` (an aggregate written in this module)
        counts any bad row of the files."""
        if files:
            sql = f"SELECT {count_sql} FROM read_parquet(?, hive_partitioning = false)"
            if self._read_parquet(sql, [*params, _paths(files)], files).fetchone()[0]:
                raise StoreError(message)

    def _insert_parquet(
        self, table: str, columns: str, params: list[Any], files: Sequence[str | Path]
    ) -> int:
        """Insert `columns` (a select list written in this module) of the files into `table`."""
        if not files:
            return 0
        sql = (
            f"INSERT INTO {table} BY NAME SELECT {columns} "
            "FROM read_parquet(?, hive_partitioning = false)"
        )
        return self._read_parquet(sql, [*params, _paths(files)], files).fetchone()[0]

    def _read_parquet(
        self, sql: str, params: list[Any], files: Sequence[str | Path]
    ) -> duckdb.DuckDBPyConnection:
        try:
            return self._con.execute(sql, params)
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot load {len(files)} Parquet file(s) such as {files[0]} ({exc})."
            ) from exc

    def add_feature_stats(self, sae: str, stats: pd.DataFrame | Mapping[str, Any]) -> None:
        """Add one SAE's per-feature statistics (one row per feature, dead ones included).

        Columns: n_active_tokens, n_active_texts, mean_active, max, optionally hist (shape
        [d_sae, HIST_BINS], counts per linear bin over [0, max]; when absent, `finish`
        computes it from `acts`, since a one-pass extraction knows the max only at the end)
        and optionally feature (default 0..d_sae-1). token_freq, text_freq and freq_rank are
        derived at `finish`.
        """
        ref = self._sae(sae)
        if sae in self._stats_added:
            raise StoreError(f"Feature statistics of SAE {sae!r} were added twice.")
        feature = _column(stats, "feature") if "feature" in stats else np.arange(ref.d_sae)
        feature = _uint_array(feature, np.uint32, "feature")
        if not np.array_equal(np.sort(feature), np.arange(ref.d_sae)):
            raise StoreError(
                f"Feature statistics of SAE {sae!r} need one row per feature 0..{ref.d_sae - 1}."
            )
        if "hist" in stats:
            hist = np.asarray(_column(stats, "hist"))
            if hist.dtype == object:
                hist = np.stack([np.asarray(row) for row in hist])
            if hist.shape != (ref.d_sae, HIST_BINS):
                raise StoreError(
                    f"hist of SAE {sae!r} must have shape ({ref.d_sae}, {HIST_BINS}), "
                    f"got {hist.shape}."
                )
            offsets = pa.array(np.arange(0, hist.size + 1, HIST_BINS, dtype=np.int32))
            hist_array = pa.ListArray.from_arrays(offsets, pa.array(hist.ravel().astype(np.int64)))
        else:
            hist_array = pa.nulls(ref.d_sae, pa.list_(pa.int64()))
        columns = {
            "sae_idx": pa.array(np.full(ref.d_sae, ref.idx, dtype=np.uint8)),
            "feature": pa.array(feature),
            "n_active_tokens": pa.array(np.asarray(_column(stats, "n_active_tokens"), np.int64)),
            "n_active_texts": pa.array(np.asarray(_column(stats, "n_active_texts"), np.int64)),
            "mean_active": pa.array(np.asarray(_column(stats, "mean_active"), np.float64)),
            "max": pa.array(np.asarray(_column(stats, "max"), np.float64)),
            "hist": hist_array,
        }
        _check_lengths(columns)
        _insert(self._con, "feature_stats_staging", pa.record_batch(columns))
        self._stats_added.add(sae)

    def add_top_examples(self, sae: str, top: pd.DataFrame | Mapping[str, Any]) -> None:
        """Add one SAE's largest activations as the extraction ranked them (columns feature,
        rank from 1, text_id, pos, value; rank by value DESC, then text_id, pos), so
        `finish` does not rank `acts`; ranks past `TOPK_EXAMPLES` are dropped. Without it,
        `finish` ranks `acts` itself."""
        ref = self._sae(sae)
        columns = {
            "feature": _uint_array(_column(top, "feature"), np.uint32, "feature"),
            "rank": _uint_array(_column(top, "rank"), np.uint16, "rank"),
            "text_id": _uint_array(_column(top, "text_id"), np.uint32, "text_id"),
            "pos": _uint_array(_column(top, "pos"), np.uint16, "pos"),
            "value": np.asarray(_column(top, "value"), dtype=np.float32),
        }
        _check_lengths(columns)
        if columns["feature"].size and columns["feature"].max() >= ref.d_sae:
            raise StoreError(f"Top examples of SAE {sae!r}: feature out of range.")
        if not (columns["value"] > 0).all() or (columns["rank"] == 0).any():
            raise StoreError(f"Top examples of SAE {sae!r} need positive values and ranks.")
        n_rows = columns["value"].size
        columns["sae_idx"] = np.full(n_rows, ref.idx, dtype=np.uint8)
        _insert(self._con, "feature_topk_staging", pa.record_batch(columns))

    def add_logit_lens(
        self,
        sae: str,
        *,
        top_token_ids: Any,
        top_logits: Any,
        bottom_token_ids: Any,
        bottom_logits: Any,
        vocab: Sequence[str],
        features: Any = None,
    ) -> None:
        """Add the decoder logit lens of one SAE: `[n_features, k]` arrays as `torch.topk`
        returns them (any order within a row), `vocab[token_id]` the token strings, and
        `features` the rows' feature ids (default 0..d_sae-1)."""
        ref = self._sae(sae)
        vocab_array = np.asarray(vocab, dtype=object)
        parts = []
        for ids, logits, sign in (
            (top_token_ids, top_logits, 1),
            (bottom_token_ids, bottom_logits, -1),
        ):
            ids, logits = np.asarray(ids), np.asarray(logits, dtype=np.float32)
            if ids.ndim != 2 or ids.shape != logits.shape:
                raise StoreError("Logit-lens token ids and logits must be [n_features, k] arrays.")
            order = np.argsort(-sign * logits, axis=1, kind="stable")  # [n_features, k]
            ids = np.take_along_axis(ids, order, axis=1)
            logits = np.take_along_axis(logits, order, axis=1)
            n_features, k = ids.shape
            feature_ids = np.arange(ref.d_sae) if features is None else np.asarray(features)
            if feature_ids.shape != (n_features,):
                raise StoreError(f"Logit lens of SAE {sae!r}: features must have {n_features} ids.")
            flat_ids = _uint_array(ids.ravel(), np.uint32, "token_id")
            if flat_ids.size and flat_ids.max() >= len(vocab_array):
                raise StoreError(f"Logit lens of SAE {sae!r}: a token id is not in the vocab.")
            parts.append(
                {
                    "feature": np.repeat(_uint_array(feature_ids, np.uint32, "feature"), k),
                    "rank": np.tile(np.arange(1, k + 1, dtype=np.int16) * sign, n_features),
                    "token_id": flat_ids,
                    "token": vocab_array[flat_ids],
                    "logit": logits.ravel(),
                }
            )
        feature = np.concatenate([part["feature"] for part in parts])
        if feature.size and feature.max() >= ref.d_sae:
            raise StoreError(f"Logit lens of SAE {sae!r}: feature out of range.")
        batch = pa.record_batch(
            {
                "sae_idx": pa.array(np.full(feature.size, ref.idx, dtype=np.uint8)),
                "feature": pa.array(feature),
                "rank": pa.array(np.concatenate([part["rank"] for part in parts])),
                "token_id": pa.array(np.concatenate([part["token_id"] for part in parts])),
                "token": pa.array(np.concatenate([part["token"] for part in parts]), pa.string()),
                "logit": pa.array(np.concatenate([part["logit"] for part in parts])),
            }
        )
        _insert(self._con, "logit_lens_staging", batch)

    def finish(self) -> None:
        """Sort, derive, carry user data over, commit, and replace the store at `path`."""
        if self._done:
            raise StoreError("This build has already finished or been aborted.")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Roll back, close and delete the temporary file; the old store stays as it was."""
        if self._done:
            return
        self._done = True
        if not self._closed:
            self._closed = True
            try:
                self._con.rollback()
            except duckdb.Error:
                logger.debug("rollback of the build failed; the file is deleted anyway")
            self._con.close()
        _remove_db_files(self._tmp)

    def _sae(self, sae: str) -> _SaeRef:
        if sae not in self._saes:
            raise StoreError(
                f"SAE {sae!r} was not added; call add_sae first. Known: {list(self._saes)}."
            )
        return self._saes[sae]

    def _finish(self) -> None:
        con = self._con
        self._acts.flush()
        self._tokens.flush()
        self._check_inputs()
        started = time.perf_counter()
        text_block = self._text_block()
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("tokens", "INSERT INTO tokens SELECT * FROM tokens_staging ORDER BY text_id, pos", {}),
            (
                "texts",
                """INSERT INTO texts
                SELECT s.text_id, s.category, s.source, s.text, coalesce(c.n, 0), s.labels
                FROM texts_staging s
                LEFT JOIN (SELECT text_id, count(*) AS n FROM tokens GROUP BY text_id) c
                    USING (text_id)
                ORDER BY s.text_id""",
                {},
            ),
            # One sort per SAE, in sae_idx order: the same rows in the same order as one
            # sort on sae_idx first, in 0.85x the time (52.9M rows of 4 SAEs).
            *(
                (
                    f"acts of {ref.name}",
                    """INSERT INTO acts SELECT * EXCLUDE (token_id) FROM acts_staging
                    WHERE sae_idx = $sae_idx
                    ORDER BY text_id // $block, feature, value DESC, text_id, pos""",
                    {"sae_idx": ref.idx, "block": text_block},
                )
                for ref in sorted(self._saes.values(), key=lambda ref: ref.idx)
            ),
            ("feature_token", _FEATURE_TOKEN_SQL, {"top": FEATURE_TOKEN_TOP}),
            ("drop staging", "DROP TABLE acts_staging", {}),
            (
                "feature max",
                """CREATE TEMP TABLE feature_max AS
                SELECT sae_idx, feature, max(value) AS fmax FROM acts GROUP BY ALL""",
                {},
            ),
            ("per-text activations", _PER_TEXT_SQL, {"strong": STRONG_FRACTION}),
            ("feature_category", _FEATURE_CATEGORY_SQL, {}),
            ("feature_text and category_ranks", _FEATURE_TEXT_SQL, {}),
            ("feature_label", _FEATURE_LABEL_SQL, {"top": LABEL_TOP}),
            ("drop per-text", "DROP TABLE per_text", {}),
            ("missing histograms", _FILL_HIST_SQL, {"hist_bins": HIST_BINS}),
            ("feature_topk", _FEATURE_TOPK_SQL, {"k": TOPK_EXAMPLES}),
            (
                "feature_quantiles",
                _FEATURE_QUANTILES_SQL,
                {"bins": QUANTILE_BINS, "per_bin": QUANTILE_EXAMPLES},
            ),
            (
                "logit_lens",
                "INSERT INTO logit_lens SELECT * FROM logit_lens_staging ORDER BY 1, 2, 3",
                {},
            ),
            ("token_counts", _TOKEN_COUNTS_SQL, {}),
        ]
        for name, sql, params in steps:
            step_started = time.perf_counter()
            con.execute(sql, params or None)
            logger.info("store build: %s in %.1f s", name, time.perf_counter() - step_started)
        n_tokens, n_texts = con.execute(
            "SELECT (SELECT count(*) FROM tokens), (SELECT count(*) FROM texts WHERE n_tokens > 0)"
        ).fetchone()
        con.execute(
            "INSERT INTO feature_stats SELECT r.*, coalesce(m.max_text_act, 0) FROM ("
            + _RANKED_STATS_SQL.format(raw="feature_stats_staging")
            + ") r LEFT JOIN text_max m USING (sae_idx, feature) ORDER BY r.sae_idx, r.feature",
            {"n_tokens": n_tokens, "n_texts": n_texts},
        )
        for table, data in self._read_user_data().items():
            _insert(con, table, data)
        meta = {key: _json_value(value) for key, value in self._meta.items()}
        meta |= {
            "schema_version": SCHEMA_VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": json.dumps(_versions(), sort_keys=True),
            "acts_text_block": str(text_block),
        }
        con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        con.commit()
        con.execute("CHECKPOINT")
        con.close()
        self._closed = True
        self._tmp.with_name(self._tmp.name + ".wal").unlink(missing_ok=True)
        # A WAL of the old file must not be replayed onto the new one; its content was read
        # by _read_user_data above.
        self.path.with_name(self.path.name + ".wal").unlink(missing_ok=True)
        os.replace(self._tmp, self.path)
        logger.info("store build: wrote %s in %.1f s", self.path, time.perf_counter() - started)

    def _text_block(self) -> int:
        """Text ids per block of `acts`: enough blocks that no SAE has more than about
        `rows_per_text_block` rows in one (see the module docstring)."""
        most_rows = max(self._rows_per_sae.values(), default=0)
        n_blocks = -(-most_rows // self._rows_per_text_block)
        low, high = self._con.execute(
            "SELECT min(text_id), max(text_id) FROM texts_staging"
        ).fetchone()
        if n_blocks <= 1:
            return high + 1  # one block: sorted by (sae_idx, feature, value DESC)
        return -(-(high - low + 1) // n_blocks)

    def _check_inputs(self) -> None:
        if not self._saes:
            raise StoreError("A store needs at least one SAE; call add_sae.")
        missing = sorted(set(self._saes) - self._stats_added)
        if missing:
            raise StoreError(f"No feature statistics for SAEs {missing}; call add_feature_stats.")
        duplicates = self._con.execute(
            "SELECT text_id FROM texts_staging GROUP BY text_id HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        if duplicates:
            raise StoreError(f"Text ids must be unique; repeated: {[d[0] for d in duplicates]}.")
        if not self._con.execute("SELECT count(*) FROM texts_staging").fetchone()[0]:
            raise StoreError("A store needs texts; call add_texts.")
        orphans = self._con.execute(
            "SELECT count(*) FROM tokens_staging ANTI JOIN texts_staging USING (text_id)"
        ).fetchone()[0]
        if orphans:
            raise StoreError(f"{orphans} token rows belong to text ids that were not added.")
        self._check_acts_have_tokens()

    def _check_acts_have_tokens(self) -> None:
        orphans = self._con.execute(
            "SELECT count(*) FROM acts_staging ANTI JOIN tokens_staging USING (text_id, pos)"
        ).fetchone()[0]
        if orphans:
            raise StoreError(
                f"{orphans} activation rows sit on (text_id, pos) without a token row; "
                "activations must be on real tokens (no BOS, no padding)."
            )

    def _read_user_data(self) -> dict[str, pa.Table]:
        """Labels and interventions of the store currently at `path` (none if no file)."""
        if not self.path.exists():
            return {}
        try:
            old = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot rebuild {self.path}: the existing file cannot be read, so its labels "
                f"and interventions cannot be kept ({exc}). Move or delete it, then rebuild."
            ) from exc
        try:
            present = {row[0] for row in old.execute(_TABLE_NAMES_SQL).fetchall()}
            return {
                table: old.sql(f"SELECT * FROM {table}").to_arrow_table()
                for table in _USER_TABLES
                if table in present
            }
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot rebuild {self.path}: reading its labels failed ({exc}). "
                "Move or delete it, then rebuild."
            ) from exc
        finally:
            old.close()


_TABLE_NAMES_SQL = """
SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main'
"""


def _paths(files: Sequence[str | Path]) -> list[str]:
    return [str(path) for path in files]


def _strings(values: Any) -> pa.Array:
    return pa.array([None if pd.isna(v) else str(v) for v in values], pa.string())


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _check_lengths(columns: Mapping[str, Any]) -> None:
    lengths = {name: len(array) for name, array in columns.items()}
    if len(set(lengths.values())) > 1:
        raise StoreError(f"Columns must have equal lengths, got {lengths}.")


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


class Store:
    """A finished store, opened read-only: `store = Store.open(path)`.

    Every read is a parameterised query on its own cursor; results are pandas DataFrames
    with int64 ids. SAEs are named by `sae` (see `saes()`); an unknown name raises
    `StoreError`, a feature outside 0..d_sae-1 raises `InputError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = _ReadWriteLock()
        self._connect()

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open the store at `path` read-only, checking it is a complete store of this version."""
        path = Path(path).absolute()
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise StoreError(f"Cannot open the store {str(path)[:200]}: {exc.strerror}.") from exc
        if not exists:
            raise StoreError(
                f"No store at {path}. Build one first (python -m explorer build, or the demo)."
            )
        if is_dir:
            raise StoreError(f"{path} is a folder; give the path of a store file.")
        return cls(path)

    def _connect(self) -> None:
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as exc:
            raise _open_error(self.path, exc) from exc
        try:
            present = {row[0] for row in con.execute(_TABLE_NAMES_SQL).fetchall()}
            missing = sorted(set(_TABLES) - present)
            if missing:
                raise StoreError(
                    f"{self.path} is not a complete feature store (missing tables {missing}); "
                    "rebuild it."
                )
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                found = "none" if row is None else row[0]
                raise StoreError(
                    f"{self.path} has schema version {found}; this explorer reads version "
                    f"{SCHEMA_VERSION}. Rebuild the store."
                )
            saes = con.execute("SELECT sae, sae_idx, d_sae FROM saes ORDER BY sae_idx").fetchall()
        except StoreError:
            con.close()
            raise
        except duckdb.Error as exc:
            con.close()
            raise _open_error(self.path, exc) from exc
        stat = self.path.stat()
        self._identity = (stat.st_ino, stat.st_mtime_ns)
        self._saes = {name: _SaeRef(name, idx, d_sae) for name, idx, d_sae in saes}
        self._con = con

    def close(self) -> None:
        with self._lock.writing():
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.close()

    def changed_on_disk(self) -> bool:
        """True once a rebuild has replaced the file this store has open: close and reopen."""
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
                yield cursor
            finally:
                cursor.close()

    def _df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> pd.DataFrame:
        with self.cursor() as cursor:
            try:
                return cursor.execute(sql, params).df()
            except duckdb.Error as exc:
                if _is_corruption(exc):
                    raise StoreError(
                        f"The store {self.path} is damaged and cannot be read ({exc}); rebuild it."
                    ) from exc
                raise

    # -- validation -----------------------------------------------------------------------

    def _sae(self, sae: str) -> _SaeRef:
        if sae not in self._saes:
            raise StoreError(f"Unknown SAE {sae!r}; this store has {list(self._saes)}.")
        return self._saes[sae]

    def check_feature(self, sae: str, feature: Any) -> int:
        """`feature` as an int in 0..d_sae-1 of `sae`; StoreError / InputError otherwise."""
        return self._feature(self._sae(sae), feature)

    def _feature(self, ref: _SaeRef, feature: Any) -> int:
        if isinstance(feature, bool) or not isinstance(feature, int | np.integer):
            raise InputError(f"A feature id must be an integer, got {feature!r}.")
        if not 0 <= feature < ref.d_sae:
            raise InputError(
                f"Feature {feature} is out of range for SAE {ref.name!r}: "
                f"choose 0 to {ref.d_sae - 1}."
            )
        return int(feature)

    @staticmethod
    def _text_id(text_id: Any) -> int:
        if isinstance(text_id, bool) or not isinstance(text_id, int | np.integer) or text_id < 0:
            raise InputError(f"A text id must be a non-negative integer, got {text_id!r}.")
        return int(text_id)

    # -- reads ----------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self._df("SELECT key, value FROM meta ORDER BY key").itertuples(index=False))

    def saes(self) -> pd.DataFrame:
        """One row per SAE, in build order."""
        return self._df("SELECT * EXCLUDE (sae_idx) FROM saes ORDER BY sae_idx")

    def categories(self) -> pd.DataFrame:
        """category, n_texts, n_tokens over texts with at least one token."""
        return self._df(
            """SELECT category, count(*) AS n_texts, sum(n_tokens)::BIGINT AS n_tokens
            FROM texts WHERE n_tokens > 0 GROUP BY category ORDER BY category"""
        )

    def texts(self, category: str | None = None) -> pd.DataFrame:
        """text_id, category, source, text, n_tokens, labels; all texts or one category's."""
        return self._df(
            """SELECT text_id::BIGINT AS text_id, category, source, text, n_tokens, labels
            FROM texts WHERE ? IS NULL OR category = ? ORDER BY text_id""",
            [category, category],
        )

    def text(self, text_id: int) -> dict[str, Any] | None:
        """One text as a dict, or None if there is no such text."""
        rows = self._df(
            """SELECT text_id::BIGINT AS text_id, category, source, text, n_tokens, labels
            FROM texts WHERE text_id = ?""",
            [self._text_id(text_id)],
        )
        return rows.iloc[0].to_dict() if len(rows) else None

    def text_tokens(self, text_id: int) -> pd.DataFrame:
        """pos, token_id, token of one text's real tokens, in order."""
        return self._df(
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
        ref = self._sae(sae)
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
        return self._df(
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
        ref = self._sae(sae)
        if (
            isinstance(k, bool)
            or not isinstance(k, int | np.integer)
            or not 0 < k <= MAX_TOP_EXAMPLES
        ):
            raise InputError(f"k must be an integer from 1 to {MAX_TOP_EXAMPLES}, got {k!r}.")
        return self._df(
            """SELECT row_number() OVER (ORDER BY value DESC, text_id, pos) AS rank,
                text_id::BIGINT AS text_id, pos::INTEGER AS pos, value
            FROM (SELECT text_id, pos, value FROM acts WHERE sae_idx = ? AND feature = ?
                ORDER BY value DESC, text_id, pos LIMIT ?)
            ORDER BY rank""",
            [ref.idx, self._feature(ref, feature), int(k)],
        )

    def feature_stats(self, sae: str, feature: int | None = None) -> pd.DataFrame:
        """The `feature_stats` rows of one SAE (or one feature), by feature id."""
        ref = self._sae(sae)
        feature = None if feature is None else self._feature(ref, feature)
        return self._df(
            """SELECT feature::BIGINT AS feature, n_active_tokens, token_freq, n_active_texts,
                text_freq, freq_rank, mean_active, "max", hist
            FROM feature_stats WHERE sae_idx = ? AND (? IS NULL OR feature = ?)
            ORDER BY feature""",
            [ref.idx, feature, feature],
        )

    def feature_category(self, sae: str, feature: int | None = None) -> pd.DataFrame:
        """The feature x category table of one SAE (or one feature's rows)."""
        ref = self._sae(sae)
        feature = None if feature is None else self._feature(ref, feature)
        return self._df(
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
        return self._df(
            _CATEGORY_COUNTS_SQL,
            {"threshold": float(strong_threshold), "relative": bool(relative)},
        )

    def feature_texts(self, sae: str, feature: int) -> pd.DataFrame:
        """text_id, category, act of the texts where one feature fires, largest act first;
        act = the sum of its activations over the text's tokens / the text's n_tokens."""
        ref = self._sae(sae)
        return self._df(
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
        return self._df(
            """SELECT s.sae, f.feature::BIGINT AS feature, f.label, f.n_texts_active,
                f.rank::INTEGER AS rank
            FROM feature_label f JOIN saes s USING (sae_idx)
            WHERE starts_with(f.label, ?)
            ORDER BY f.sae_idx, f.feature, f.label""",
            [prefix],
        )

    def label_counts(self) -> pd.DataFrame:
        """label, category, n_texts: texts (with tokens) of each category carrying a label."""
        return self._df(
            """SELECT label, category, count(*) AS n_texts
            FROM (SELECT category, unnest(labels) AS label FROM texts WHERE n_tokens > 0)
            GROUP BY ALL ORDER BY label, category"""
        )

    def frequency_table(self) -> pd.DataFrame:
        """`feature_stats` of every SAE without histograms: sae, layer, feature,
        n_active_tokens, token_freq, n_active_texts, text_freq, freq_rank, mean_active, max,
        max_text_act."""
        return self._df(
            """SELECT s.sae, s.layer, f.feature::BIGINT AS feature, f.n_active_tokens,
                f.token_freq, f.n_active_texts, f.text_freq, f.freq_rank, f.mean_active,
                f."max", f.max_text_act
            FROM feature_stats f JOIN saes s USING (sae_idx)
            ORDER BY f.sae_idx, f.feature"""
        )

    def feature_topk(self, sae: str, feature: int) -> pd.DataFrame:
        """rank, text_id, pos, value, token of the feature's precomputed top examples."""
        ref = self._sae(sae)
        return self._df(
            """SELECT rank::INTEGER AS rank, text_id::BIGINT AS text_id, pos::INTEGER AS pos,
                value, token
            FROM feature_topk WHERE sae_idx = ? AND feature = ? ORDER BY rank""",
            [ref.idx, self._feature(ref, feature)],
        )

    def feature_quantiles(self, sae: str, feature: int) -> pd.DataFrame:
        """bin, bin_low, bin_high, rank, text_id, pos, value, token: examples per value bin."""
        ref = self._sae(sae)
        return self._df(
            """SELECT bin::INTEGER AS bin, bin_low, bin_high, rank::INTEGER AS rank,
                text_id::BIGINT AS text_id, pos::INTEGER AS pos, value, token
            FROM feature_quantiles WHERE sae_idx = ? AND feature = ?
            ORDER BY bin DESC, rank""",
            [ref.idx, self._feature(ref, feature)],
        )

    def logit_lens(self, sae: str, feature: int) -> pd.DataFrame:
        """rank, token_id, token, logit: top tokens (rank 1..k) then bottom (-1..-k)."""
        ref = self._sae(sae)
        return self._df(
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
        ref = self._sae(sae)
        return self._df(
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
        return self._df(
            "SELECT token_id::BIGINT AS token_id, token, n FROM token_counts ORDER BY token_id"
        )

    def compute_feature_stats(self, sae: str) -> pd.DataFrame:
        """`feature_stats` of one SAE derived from `acts` (a full pass over the SAE's rows,
        for checks and benchmarks, not page loads)."""
        ref = self._sae(sae)
        totals = self._df(
            "SELECT (SELECT count(*) FROM tokens) AS n_tokens, "
            "(SELECT count(*) FROM texts WHERE n_tokens > 0) AS n_texts"
        ).iloc[0]
        return self._df(
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
        self, table: str, out_path: str | Path, format: Literal["csv", "parquet"] = "parquet"
    ) -> Path:
        """Write one table to CSV or Parquet, with SAE names in place of `sae_idx`."""
        if format not in ("csv", "parquet"):
            raise InputError(f"Export format must be 'csv' or 'parquet', got {format!r}.")
        out_path = Path(out_path).absolute()
        if not out_path.parent.is_dir():
            raise StoreError(
                f"Cannot export to {out_path}: the folder {out_path.parent} does not exist."
            )
        with self.cursor() as cursor:
            tables = sorted(row[0] for row in cursor.execute(_TABLE_NAMES_SQL).fetchall())
            if table not in tables:
                raise StoreError(f"Unknown table {table!r}; the store has {tables}.")
            columns = [row[0] for row in cursor.execute(f"DESCRIBE {table}").fetchall()]
            if "sae_idx" in columns and table != "saes":
                query = (
                    f"SELECT s.sae, t.* EXCLUDE (sae_idx) FROM {table} t "
                    "JOIN saes s USING (sae_idx)"
                )
            else:
                query = f"SELECT * FROM {table}"
            relation = cursor.sql(query)
            try:
                if format == "csv":
                    relation.write_csv(str(out_path))
                else:
                    relation.write_parquet(str(out_path))
            except duckdb.IOException as exc:
                raise StoreError(f"Cannot write {out_path} ({exc}).") from exc
        return out_path

    # -- user data ------------------------------------------------------------------------

    def labels(self, sae: str | None = None, feature: int | None = None) -> pd.DataFrame:
        """sae, feature, label, note, created_at, newest first; optionally one SAE/feature."""
        if sae is not None:
            ref = self._sae(sae)
            feature = None if feature is None else self._feature(ref, feature)
        return self._df(
            """SELECT sae, feature::BIGINT AS feature, label, note, created_at FROM labels
            WHERE (? IS NULL OR sae = ?) AND (? IS NULL OR feature = ?)
            ORDER BY created_at DESC""",
            [sae, sae, feature, feature],
        )

    def save_label(self, sae: str, feature: int, label: str, note: str = "") -> None:
        """Append a label for a feature; the newest label of a feature is its current one."""
        ref = self._sae(sae)
        feature = self._feature(ref, feature)
        label = label.strip()
        if not 0 < len(label) <= MAX_LABEL_CHARS:
            raise InputError(f"A label needs 1 to {MAX_LABEL_CHARS} characters.")
        if len(note) > MAX_NOTE_CHARS:
            raise InputError(f"A note may have at most {MAX_NOTE_CHARS} characters.")
        self._write_user_data(
            lambda con: con.execute(
                "INSERT INTO labels VALUES (?, ?, ?, ?, ?)",
                [sae, feature, label, note, _now()],
            )
        )

    def interventions(self, sae: str | None = None) -> pd.DataFrame:
        """id, sae, settings, metrics (JSON text), created_at, newest first."""
        if sae is not None:
            self._sae(sae)
        return self._df(
            """SELECT id, sae, settings::VARCHAR AS settings, metrics::VARCHAR AS metrics,
                created_at
            FROM interventions WHERE ? IS NULL OR sae = ? ORDER BY id DESC""",
            [sae, sae],
        )

    def save_intervention(
        self, sae: str, settings: Mapping[str, Any], metrics: Mapping[str, Any]
    ) -> int:
        """Record an intervention run (JSON-serialisable settings and metrics); returns its id."""
        self._sae(sae)
        settings_json = json.dumps(settings, sort_keys=True)
        metrics_json = json.dumps(metrics, sort_keys=True)

        def insert(con: duckdb.DuckDBPyConnection) -> int:
            return con.execute(
                """INSERT INTO interventions
                SELECT coalesce(max(id), 0) + 1, ?, ?, ?, ? FROM interventions
                RETURNING id""",
                [sae, settings_json, metrics_json, _now()],
            ).fetchone()[0]

        return self._write_user_data(insert)

    def _write_user_data(self, write: Any) -> Any:
        """Run `write(con)` on a short-lived read-write connection (see the module docstring)."""
        with self._lock.writing():
            self._con.close()
            try:
                try:
                    con = duckdb.connect(str(self.path))
                except duckdb.Error as exc:
                    raise StoreError(
                        f"Cannot save to {self.path}: it is open in another process or another "
                        f"Store of this process ({exc}). Close it there and retry."
                    ) from exc
                try:
                    result = write(con)
                    con.execute("CHECKPOINT")
                finally:
                    con.close()
            finally:
                self._connect()
        return result


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
