"""Benchmark of the store's page queries on a large synthetic store, beside pandas in memory.

Builds (or, with --reuse, reopens) a synthetic store in cache/bench/ through `StoreWriter`:
several SAEs whose feature frequencies follow a power law, a quarter of the features
specialised to one text category, activations exponential around a per-feature scale. Then
it times, as the app calls them, one feature's top-20 examples, one text's token view and
one SAE's feature x category table, each beside the same answer computed by pandas from the
activations held in memory, and measures bytes per activation row on disk. Results go to
bench/results/store_queries.json and to the table between the markers in bench/README.md.

    python -m bench.store_queries                 # 50M rows: a few minutes on 2 cores
    python -m bench.store_queries --rows 2000000  # a quick run, e.g. in CI
    python -m bench.store_queries --existing --store cache/bench/gpt2_scale.duckdb \
        --results bench/results/store_queries_gpt2_scale.json --readme /dev/null
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from explorer.errors import StoreError
from explorer.store.reader import Store
from explorer.store.schema import HIST_BINS, ROWS_PER_TEXT_BLOCK, SaeInfo
from explorer.store.writer import StoreWriter
from tests.oracles import feature_category_pandas

REPO_ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ("code", "urls", "maths", "non_english", "social", "formal", "chat", "prose")
README_BEGIN = "<!-- store_queries:begin -->"
README_END = "<!-- store_queries:end -->"
CHUNK_ROWS = 1_000_000

logger = logging.getLogger("bench.store_queries")


@dataclass(frozen=True)
class BenchSpec:
    """The synthetic store: its size and the shape of its activations."""

    rows: int = 50_000_000
    saes: int = 4
    d_sae: int = 4096
    texts: int = 50_000
    mean_tokens: int = 64
    vocab: int = 50_000
    zipf: float = 1.0  # feature density ~ rank ** -zipf
    specialist_fraction: float = 0.25
    rows_per_text_block: int = ROWS_PER_TEXT_BLOCK  # the store's layout dial
    seed: int = 0


@dataclass(frozen=True)
class Corpus:
    category: np.ndarray  # [texts] category index; texts of a category are contiguous
    offsets: np.ndarray  # [texts + 1] first token index of each text
    token_ids: np.ndarray  # [tokens]
    vocab: np.ndarray  # [vocab] token strings


def make_corpus(spec: BenchSpec, rng: np.random.Generator) -> Corpus:
    lengths = rng.integers(spec.mean_tokens // 2, spec.mean_tokens * 3 // 2 + 1, spec.texts)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    category = np.arange(spec.texts) * len(CATEGORIES) // spec.texts
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(
        [
            (" " if rng.random() < 0.6 else "") + "".join(rng.choice(letters, rng.integers(1, 8)))
            for _ in range(spec.vocab)
        ],
        dtype=object,
    )
    token_p = 1.0 / np.arange(1, spec.vocab + 1)
    token_ids = rng.choice(spec.vocab, size=offsets[-1], p=token_p / token_p.sum())
    return Corpus(category, offsets, token_ids, vocab)


def make_acts(
    spec: BenchSpec,
    corpus: Corpus,
    rng: np.random.Generator,
    n_rows: int,
    density: np.ndarray | None = None,
    may_specialise: np.ndarray | None = None,
    oversample: float = 1.1,
) -> dict[str, np.ndarray]:
    """One SAE's activations: n_rows unique (feature, token) pairs, sorted by feature.

    `density` weighs the features (default: the power law of `spec.zipf`, shuffled);
    `may_specialise` marks the features that may get a home category (default: all);
    `oversample` is how many pairs are drawn per row kept (repeated pairs are dropped)."""
    n_tokens = int(corpus.offsets[-1])
    if density is None:
        density = np.arange(1, spec.d_sae + 1, dtype=np.float64) ** -spec.zipf
        rng.shuffle(density)
    n_categories = int(corpus.category.max()) + 1
    home = np.where(
        rng.random(spec.d_sae) < spec.specialist_fraction,
        rng.integers(0, n_categories, spec.d_sae),
        -1,
    )
    if may_specialise is not None:
        home[~may_specialise] = -1
    category_start = corpus.offsets[np.searchsorted(corpus.category, np.arange(n_categories))]
    category_end = np.append(category_start[1:], n_tokens)
    draws = int(n_rows * oversample)
    feature = rng.choice(spec.d_sae, size=draws, p=density / density.sum())
    token = rng.integers(0, n_tokens, draws)
    at_home = (home[feature] >= 0) & (rng.random(draws) < 0.8)
    h = home[feature[at_home]]
    span = category_end[h] - category_start[h]
    token[at_home] = category_start[h] + (rng.random(at_home.sum()) * span).astype(np.int64)
    key = np.unique(feature.astype(np.int64) * n_tokens + token)  # drops repeated pairs
    if len(key) < n_rows:
        raise RuntimeError(f"only {len(key)} unique rows; lower --rows or raise --texts")
    key = np.sort(rng.choice(key, size=n_rows, replace=False))
    feature, token = key // n_tokens, key % n_tokens
    text_id = np.searchsorted(corpus.offsets, token, side="right") - 1
    scale = rng.lognormal(0.0, 0.5, spec.d_sae)
    value = (scale[feature] * (rng.exponential(1.0, n_rows) + 0.05)).astype(np.float32)
    return {
        "feature": feature.astype(np.uint32),
        "text_id": text_id.astype(np.uint32),
        "pos": (token - corpus.offsets[text_id] + 1).astype(np.uint16),  # BOS is position 0
        "value": value,
    }


def feature_stats(acts: dict[str, np.ndarray], d_sae: int, n_texts: int) -> dict[str, np.ndarray]:
    """Per-feature statistics as the extraction accumulates them (acts sorted by feature)."""
    feature, value = acts["feature"].astype(np.int64), acts["value"]
    n_active = np.bincount(feature, minlength=d_sae)
    pairs = np.unique(feature * n_texts + acts["text_id"])
    starts = np.flatnonzero(np.diff(feature, prepend=-1))
    max_act = np.zeros(d_sae)
    max_act[feature[starts]] = np.maximum.reduceat(value, starts)
    bins = np.minimum(
        np.floor(value.astype(np.float64) / max_act[feature] * HIST_BINS), HIST_BINS - 1
    ).astype(np.int64)
    hist = np.bincount(feature * HIST_BINS + bins, minlength=d_sae * HIST_BINS)
    return {
        "n_active_tokens": n_active,
        "n_active_texts": np.bincount(pairs // n_texts, minlength=d_sae),
        "mean_active": np.bincount(feature, weights=value, minlength=d_sae)
        / np.maximum(n_active, 1),
        "max": max_act,
        "hist": hist.reshape(d_sae, HIST_BINS),
    }


def build(path: Path, spec: BenchSpec) -> float:
    """Write the synthetic store; returns the seconds it took (generation included)."""
    started = time.perf_counter()
    rng = np.random.default_rng(spec.seed)
    corpus = make_corpus(spec, rng)
    lengths = np.diff(corpus.offsets)
    text_id = np.repeat(np.arange(spec.texts), lengths)
    texts = pd.DataFrame(
        {
            "text_id": np.arange(spec.texts),
            "category": np.array(CATEGORIES)[corpus.category],
            "source": "synthetic",
            "text": [
                "".join(corpus.vocab[corpus.token_ids[a:b]])
                for a, b in zip(corpus.offsets[:-1], corpus.offsets[1:], strict=True)
            ],
        }
    )
    meta = {"source": "bench.store_queries", "bench_spec": asdict(spec)}
    with StoreWriter(path, meta=meta, rows_per_text_block=spec.rows_per_text_block) as writer:
        writer.add_texts(texts)
        pos = np.arange(len(text_id)) - corpus.offsets[text_id] + 1
        for start in range(0, len(text_id), CHUNK_ROWS):
            chunk = slice(start, start + CHUNK_ROWS)
            writer.add_tokens(
                text_id[chunk],
                pos[chunk],
                corpus.token_ids[chunk],
                corpus.vocab[corpus.token_ids[chunk]],
            )
        rows_per_sae = -(-spec.rows // spec.saes)
        for layer in range(spec.saes):
            name = f"blocks.{layer}.hook_resid_pre"
            writer.add_sae(
                SaeInfo(sae=name, hook_name=name, layer=layer, d_in=768, d_sae=spec.d_sae)
            )
            acts = make_acts(spec, corpus, rng, rows_per_sae)
            for start in range(0, rows_per_sae, CHUNK_ROWS):
                chunk = slice(start, start + CHUNK_ROWS)
                writer.add_acts(
                    name,
                    acts["feature"][chunk],
                    acts["text_id"][chunk],
                    acts["pos"][chunk],
                    acts["value"][chunk],
                )
            writer.add_feature_stats(name, feature_stats(acts, spec.d_sae, spec.texts))
            ids = rng.integers(0, spec.vocab, (spec.d_sae, 20))
            writer.add_logit_lens(
                name,
                top_token_ids=ids[:, :10],
                top_logits=rng.normal(5, 1, (spec.d_sae, 10)),
                bottom_token_ids=ids[:, 10:],
                bottom_logits=rng.normal(-5, 1, (spec.d_sae, 10)),
                vocab=corpus.vocab,
            )
            logger.info("generated and handed over %s", name)
    return time.perf_counter() - started


def timed(call: Callable[[int], object], runs: int, warmup: int = 3) -> list[float]:
    """Milliseconds of `call(i)` for i in range(runs), after `warmup` unrecorded calls."""
    for i in range(warmup):
        call(i)
    times = []
    for i in range(runs):
        started = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(float(np.percentile(times, 90)), 3),
        "runs": len(times),
    }


def run_queries(store: Store, spec: BenchSpec, runs: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(spec.seed + 1)
    saes = store.saes()["sae"].tolist()
    with store.cursor() as cursor:
        acts = (
            cursor.sql("SELECT sae_idx, feature, text_id, pos, value FROM acts")
            .to_arrow_table()
            .to_pandas()
        )
        texts = cursor.execute(
            "SELECT text_id::UINTEGER AS text_id, category, n_tokens FROM texts WHERE n_tokens > 0"
        ).df()
        heaviest = cursor.execute(
            "SELECT sae_idx, feature FROM feature_stats ORDER BY n_active_tokens DESC LIMIT 1"
        ).fetchone()
    logger.info("loaded %d activation rows into pandas", len(acts))
    n_picks = runs + 3  # warm-up calls included
    picks = {
        "feature": list(
            zip(
                rng.integers(spec.saes, size=n_picks).tolist(),
                rng.integers(spec.d_sae, size=n_picks).tolist(),
                strict=True,
            )
        ),
        "text": list(
            zip(
                rng.integers(spec.saes, size=n_picks).tolist(),
                rng.integers(spec.texts, size=n_picks).tolist(),
                strict=True,
            )
        ),
    }

    def top20_pandas(sae_idx: int, feature: int) -> pd.DataFrame:
        rows = acts[(acts["sae_idx"] == sae_idx) & (acts["feature"] == feature)]
        return rows.nlargest(20, "value")[["text_id", "pos", "value"]]

    def token_view_pandas(sae_idx: int, text_id: int, features: list[int] | None = None):
        mask = (acts["sae_idx"] == sae_idx) & (acts["text_id"] == text_id)
        if features is not None:
            mask &= acts["feature"].isin(features)
        return acts[mask].sort_values(["pos", "value"], ascending=[True, False])

    def category_pandas(sae_idx: int) -> pd.DataFrame:
        one = acts.loc[acts["sae_idx"] == sae_idx, ["feature", "text_id", "value"]]
        return feature_category_pandas(one, texts)

    queries = [
        (
            "top-20 examples of one feature",
            10.0,
            lambda i: store.top_examples(saes[picks["feature"][i][0]], picks["feature"][i][1]),
            lambda i: top20_pandas(*picks["feature"][i]),
        ),
        (
            "top-20 examples of the most active feature",
            10.0,
            lambda i: store.top_examples(saes[heaviest[0]], heaviest[1]),
            lambda i: top20_pandas(*heaviest),
        ),
        (
            "token view: one text, all features of one SAE",
            10.0,
            lambda i: store.text_acts(picks["text"][i][1], saes[picks["text"][i][0]]),
            lambda i: token_view_pandas(*picks["text"][i]),
        ),
        (
            "token view: one text, one feature",
            10.0,
            lambda i: store.text_acts(
                picks["text"][i][1], saes[picks["text"][i][0]], features=[heaviest[1]]
            ),
            lambda i: token_view_pandas(*picks["text"][i], [heaviest[1]]),
        ),
        (
            "feature x category table of one SAE",
            200.0,
            lambda i: store.feature_category(saes[i % spec.saes]),
            lambda i: category_pandas(i % spec.saes),
        ),
    ]
    check_answers(store, saes, picks, top20_pandas, token_view_pandas, category_pandas)
    results = []
    for name, target, store_call, pandas_call in queries:
        store_times = timed(store_call, runs)
        pandas_times = timed(pandas_call, runs, warmup=1)
        store_ms = statistics.median(store_times)
        results.append(
            {
                "query": name,
                "target_ms": target,
                "store": summary(store_times),
                "pandas_in_memory": summary(pandas_times),
                "pandas_over_store": round(statistics.median(pandas_times) / store_ms, 1),
                "meets_target": store_ms <= target,
            }
        )
        logger.info("%s: store %.2f ms", name, store_ms)
    return results


def check_answers(store, saes, picks, top20_pandas, token_view_pandas, category_pandas) -> None:
    """The store and pandas must give the same answers before their times are compared."""
    sae_idx, feature = picks["feature"][0]
    top = store.top_examples(saes[sae_idx], feature)
    expected = top20_pandas(sae_idx, feature)
    assert np.array_equal(top["value"].to_numpy(), expected["value"].to_numpy())
    sae_idx, text_id = picks["text"][0]
    view = store.text_acts(text_id, saes[sae_idx])
    expected = token_view_pandas(sae_idx, text_id)
    assert sorted(zip(view["pos"], view["feature"], strict=True)) == sorted(
        zip(expected["pos"].astype(int), expected["feature"].astype(int), strict=True)
    )
    table = store.feature_category(saes[0])
    expected = category_pandas(0).sort_values(["feature", "category"], ignore_index=True)
    assert np.array_equal(table["n_tokens_active"], expected["n_tokens_active"])
    assert np.allclose(table["mean_act"], expected["mean_act"], rtol=1e-9)
    assert np.array_equal(table["strong_count"], expected["strong_count"])


def machine() -> dict[str, object]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(memory / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
    }


def write_readme_table(readme: Path, result: dict) -> None:
    store = result["store"]
    build = "reused" if result["build_seconds"] is None else f"{result['build_seconds']} s"
    lines = [
        README_BEGIN,
        f"Measured {result['measured_at']} on {result['machine']['cores']} cores, "
        f"{result['machine']['memory_gb']} GB; load average {result['load_average']} "
        f"(a shared machine). {store['acts_rows']:,} activation rows, "
        f"{result['spec']['saes']} SAEs x d_sae {result['spec']['d_sae']}, "
        f"{result['spec']['texts']:,} texts, {store['tokens']:,} tokens; "
        f"build {build}. `acts` in text blocks of {store['acts_text_block']:,} texts "
        f"(<= {result['spec']['rows_per_text_block']:,} rows per SAE). "
        f"Medians over {result['runs']} runs.",
        "",
        "| query | store median (p90) | target | pandas in memory | pandas / store |",
        "|---|---|---|---|---|",
    ]
    for query in result["queries"]:
        mark = "ok" if query["meets_target"] else "**missed**"
        lines.append(
            f"| {query['query']} | {query['store']['median_ms']:.2f} ms "
            f"({query['store']['p90_ms']:.2f}) | <= {query['target_ms']:g} ms {mark} "
            f"| {query['pandas_in_memory']['median_ms']:.1f} ms | {query['pandas_over_store']}x |"
        )
    size_mark = "ok" if store["bytes_per_act_row"] <= 8 else "over"
    lines += [
        "| bytes per activation row (whole file / acts rows; this store's features fire on "
        f"scattered tokens, see Storage) | {store['bytes_per_act_row']} | 8 {size_mark} "
        f"| {store['pandas_bytes_per_act_row']} in memory | |",
        README_END,
    ]
    text = readme.read_text() if readme.exists() else ""
    if README_BEGIN not in text:
        text += f"{README_BEGIN}\n{README_END}\n"
    before, _, rest = text.partition(README_BEGIN)
    _, _, after = rest.partition(README_END)
    readme.write_text(before + "\n".join(lines) + after)


def reusable(path: Path, spec: BenchSpec) -> bool:
    """True if `path` holds a store built by this benchmark with the same spec."""
    if not path.exists():
        return False
    try:
        with Store.open(path) as store:
            return json.loads(store.meta().get("bench_spec", "null")) == asdict(spec)
    except StoreError:
        return False


def existing_spec(path: Path, spec: BenchSpec) -> BenchSpec:
    """`spec` with the SAEs, d_sae and texts of the store at `path` (which must exist)."""
    if not path.exists():
        raise SystemExit(f"--existing: no store at {path}")
    with Store.open(path) as store:
        saes = store.saes()
        texts = store.table_counts()["texts"]
    return replace(spec, saes=len(saes), d_sae=int(saes["d_sae"].min()), texts=int(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = BenchSpec()
    parser.add_argument("--rows", type=int, default=defaults.rows)
    parser.add_argument("--saes", type=int, default=defaults.saes)
    parser.add_argument("--d-sae", type=int, default=defaults.d_sae)
    parser.add_argument("--texts", type=int, default=defaults.texts)
    parser.add_argument(
        "--rows-per-text-block",
        type=int,
        default=defaults.rows_per_text_block,
        help="the store's text-block size; a huge value sorts acts by feature alone",
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--store", type=Path, default=REPO_ROOT / "cache/bench/store_queries.duckdb"
    )
    parser.add_argument(
        "--results", type=Path, default=REPO_ROOT / "bench/results/store_queries.json"
    )
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "bench/README.md")
    parser.add_argument("--reuse", action="store_true", help="reuse the store if its spec matches")
    parser.add_argument(
        "--existing",
        action="store_true",
        help="time the store at --store as it is, never rebuilt (e.g. bench.gpt2_scale_store's);"
        " its SAEs, d_sae and texts come from the store",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = BenchSpec(
        rows=args.rows,
        saes=args.saes,
        d_sae=args.d_sae,
        texts=args.texts,
        rows_per_text_block=args.rows_per_text_block,
    )

    args.store.parent.mkdir(parents=True, exist_ok=True)
    build_seconds = None
    if args.existing:
        spec = existing_spec(args.store, spec)
    elif not (args.reuse and reusable(args.store, spec)):
        build_seconds = round(build(args.store, spec), 1)
    with Store.open(args.store) as store:
        counts = store.table_counts()
        text_block = int(store.meta()["acts_text_block"])
        queries = run_queries(store, spec, args.runs)
    file_bytes = args.store.stat().st_size
    result = {
        "spec": asdict(spec),
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
        "build_seconds": build_seconds,  # None: a store built earlier was reused
        "runs": args.runs,
        "store": {
            "file_bytes": file_bytes,
            "acts_rows": counts["acts"],
            "tokens": counts["tokens"],
            "bytes_per_act_row": round(file_bytes / counts["acts"], 2),
            "pandas_bytes_per_act_row": 15,  # uint8 + 2 x uint32 + uint16 + float32
            "acts_text_block": text_block,
            "table_counts": counts,
        },
        "queries": queries,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    write_readme_table(args.readme, result)
    logger.info("wrote %s and %s", args.results, args.readme)


if __name__ == "__main__":
    main()
