"""A store of GPT-2-small shape, written through `StoreWriter`, for the page and query benchmarks.

GPT-2 small's residual-stream SAEs (gpt2-small-res-jb) have 24,576 features and fire about
50-60 of them per token, so a store of 4 such SAEs holds ~220 activation rows per token:
~220M rows for 1M tokens. This module writes such a store without running a model: the texts
are the real corpus (`bundled+arithmetic`, its 11 categories), tokenized with the demo
bundle's tokenizer and tiled (each copy a new text) until there are enough tokens; each SAE's
activations come from `bench.store_queries.make_acts` (the one synthetic generator) with
per-feature firing frequencies drawn log-normal (heavy-tailed: a median feature fires on
~0.04% of tokens, a few on several percent; scaled so that a token fires `--per-token`
features on average), a quarter of the rarer features specialised to one category.
Statistics, logit lens and per-token ids are handed to the writer as a build hands them.

    python -m bench.gpt2_scale_store --out cache/bench/gpt2_scale.duckdb           # 220M rows
    python -m bench.gpt2_scale_store --out cache/bench/gpt2_50m.duckdb --rows 50000000

Prints and writes (`--results`) the build's seconds and peak RSS (this process, DuckDB
included) and the store's size.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

from bench.store_queries import CHUNK_ROWS, BenchSpec, Corpus, feature_stats, machine, make_acts
from explorer.corpus import resolve_corpus
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = REPO_ROOT / "explorer/bundles/demo/tokenizer/tokenizer.json"
CORPUS = "bundled+arithmetic"
GPT2_D_IN = 768
GPT2_LAYERS = (0, 4, 8, 11)  # which resid_pre layers the SAEs are named after (cycled)
LOG10_DENSITY_SD = 0.8  # spread of log10(firing frequency) across features
MAX_DENSITY = 0.2  # no feature fires on more than this share of tokens
SPECIALIST_MAX_DENSITY = 0.01  # only features rarer than this get a home category

logger = logging.getLogger("bench.gpt2_scale_store")


def tiled_corpus(tokens_needed: int) -> tuple[pd.DataFrame, Corpus]:
    """The real corpus, texts of a category contiguous, repeated until it holds
    `tokens_needed` tokens; each copy gets new text ids (same category and text)."""
    texts = resolve_corpus(CORPUS).texts.sort_values(["category", "text_id"], kind="stable")
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    ids = [e.ids for e in tokenizer.encode_batch(texts["text"].tolist(), add_special_tokens=False)]
    lengths = np.array([len(x) for x in ids])
    keep = lengths > 0
    texts, ids, lengths = (
        texts[keep],
        [x for x, k in zip(ids, keep, strict=True) if k],
        lengths[keep],
    )
    names = sorted(texts["category"].unique())
    category = np.searchsorted(names, texts["category"].to_numpy())
    copies = max(1, -(-tokens_needed // int(lengths.sum())))
    # every copy of a category's texts sits in that category's block: categories stay contiguous
    source_row = np.concatenate(
        [np.tile(np.flatnonzero(category == c), copies) for c in range(len(names))]
    )
    tiled = pd.DataFrame(
        {
            "text_id": np.arange(len(source_row)),
            "category": texts["category"].to_numpy()[source_row],
            "source": texts["source"].to_numpy()[source_row],
            "text": texts["text"].to_numpy()[source_row],
        }
    )
    tiled_lengths = lengths[source_row]
    offsets = np.concatenate([[0], np.cumsum(tiled_lengths)])
    flat = np.concatenate([np.asarray(ids[i], dtype=np.int64) for i in range(len(ids))])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    token_ids = np.concatenate([flat[starts[i] : starts[i + 1]] for i in source_row])
    vocab = np.array(
        [tokenizer.decode([i]) for i in range(tokenizer.get_vocab_size())], dtype=object
    )
    return tiled, Corpus(category[source_row], offsets, token_ids, vocab)


def feature_density(d_sae: int, per_token: float, rng: np.random.Generator) -> np.ndarray:
    """Log-normal firing frequencies, capped, scaled to `per_token` features per token."""
    density = 10 ** rng.normal(0.0, LOG10_DENSITY_SD, d_sae)
    for _ in range(20):  # rescale and cap until the sum holds
        density = np.minimum(density * per_token / density.sum(), MAX_DENSITY)
    return density


def build(path: Path, rows: int, saes: int, d_sae: int, per_token: float, seed: int) -> dict:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows_per_sae = -(-rows // saes)
    texts, corpus = tiled_corpus(int(rows_per_sae / per_token))
    n_tokens = int(corpus.offsets[-1])
    logger.info("%d texts, %d tokens", len(texts), n_tokens)
    spec = replace(BenchSpec(), rows=rows, saes=saes, d_sae=d_sae, texts=len(texts), seed=seed)
    text_id = np.repeat(np.arange(len(texts)), np.diff(corpus.offsets))
    pos = np.arange(n_tokens) - corpus.offsets[text_id] + 1  # BOS is position 0
    meta = {
        "source": "bench.gpt2_scale_store",
        "corpus": f"{CORPUS} (tiled)",
        "bench_spec": {
            "rows": rows,
            "saes": saes,
            "d_sae": d_sae,
            "per_token": per_token,
            "seed": seed,
        },
    }
    with StoreWriter(path, meta=meta) as writer:
        writer.add_texts(texts)
        for start in range(0, n_tokens, CHUNK_ROWS):
            chunk = slice(start, start + CHUNK_ROWS)
            writer.add_tokens(
                text_id[chunk],
                pos[chunk],
                corpus.token_ids[chunk],
                corpus.vocab[corpus.token_ids[chunk]],
            )
        for index in range(saes):
            layer = GPT2_LAYERS[index % len(GPT2_LAYERS)]
            name = f"blocks.{layer}.hook_resid_pre" + (f".{index}" if index >= 4 else "")
            writer.add_sae(
                SaeInfo(
                    sae=name,
                    hook_name=f"blocks.{layer}.hook_resid_pre",
                    layer=layer,
                    d_in=GPT2_D_IN,
                    d_sae=d_sae,
                )
            )
            density = feature_density(d_sae, per_token, rng)
            acts = make_acts(
                spec,
                corpus,
                rng,
                rows_per_sae,
                density=density,
                may_specialise=density < SPECIALIST_MAX_DENSITY,
                oversample=1.3,
            )
            token = corpus.offsets[acts["text_id"]] + acts["pos"].astype(np.int64) - 1
            for start in range(0, rows_per_sae, CHUNK_ROWS):
                chunk = slice(start, start + CHUNK_ROWS)
                writer.add_acts(
                    name,
                    acts["feature"][chunk],
                    acts["text_id"][chunk],
                    acts["pos"][chunk],
                    acts["value"][chunk],
                    token_id=corpus.token_ids[token[chunk]],
                )
            writer.add_feature_stats(name, feature_stats(acts, d_sae, len(texts)))
            del acts, token
            ids = rng.integers(0, len(corpus.vocab), (d_sae, 20))
            writer.add_logit_lens(
                name,
                top_token_ids=ids[:, :10],
                top_logits=rng.normal(5, 1, (d_sae, 10)),
                bottom_token_ids=ids[:, 10:],
                bottom_logits=rng.normal(-5, 1, (d_sae, 10)),
                vocab=corpus.vocab,
            )
            logger.info(
                "generated and handed over %s (%.0f s)", name, time.perf_counter() - started
            )
        logger.info("finishing the store (%.0f s)", time.perf_counter() - started)
    seconds = time.perf_counter() - started
    with Store.open(path) as store:
        counts = store.table_counts()
    return {
        "spec": meta["bench_spec"],
        "generator": asdict(spec),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "build_seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "file_bytes": path.stat().st_size,
        "bytes_per_act_row": round(path.stat().st_size / max(counts["acts"], 1), 2),
        "acts_rows": counts["acts"],
        "rows_per_token": round(counts["acts"] / max(counts["tokens"], 1), 1),
        "table_counts": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=220_000_000, help="activation rows in all")
    parser.add_argument("--saes", type=int, default=4)
    parser.add_argument("--d-sae", type=int, default=24_576)
    parser.add_argument(
        "--per-token",
        type=float,
        default=55.0,
        help="features firing per token per SAE, on average",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="JSON file for the build's figures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = build(args.out, args.rows, args.saes, args.d_sae, args.per_token, args.seed)
    print(json.dumps(result, indent=2))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
