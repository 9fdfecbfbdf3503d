"""Build throughput against compute-only throughput, measured in one process.

The baseline is what a build cannot avoid: the model forward (`run_with_cache` stopped after
the last hooked layer) plus every SAE's encode, on the same batches, storing nothing. The
build is the full `build_store` into a fresh DuckDB file: tokenization, sparse rows, running
statistics, Arrow ingest, sorting, derived tables, logit lens and quality. Runs alternate
(baseline, build, baseline, build, ...) so machine noise hits both; the ratio of medians is
recorded in bench/results/build_throughput.json.

    python -m bench.build_throughput [--source demo] [--corpus bundled+arithmetic:3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from explorer.build import build_store
from explorer.corpus import resolve_corpus
from explorer.extract import BuildSettings, padded_batches, tokenize_corpus
from explorer.sources import LoadedSource, load_source

RESULTS = Path(__file__).parent / "results" / "build_throughput.json"


@torch.inference_mode()
def compute_only(loaded: LoadedSource, corpus, batch_size: int) -> tuple[float, int]:
    """Forward + encode over the corpus, nothing kept; returns (seconds, real tokens)."""
    started = time.perf_counter()
    tokenized = tokenize_corpus(loaded, corpus.texts)
    hooks = [handle.hook_name for handle in loaded.saes]
    stop_at = max(handle.layer for handle in loaded.saes) + 1
    n_tokens = 0
    for _, tokens, real in padded_batches(tokenized, batch_size, loaded.tokenizer.pad_token_id):
        _, cache = loaded.model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop_at)
        for handle in loaded.saes:
            handle.sae.encode(cache[handle.hook_name])
        n_tokens += int(real.sum())
    return time.perf_counter() - started, n_tokens


def full_build(loaded: LoadedSource, corpus, batch_size: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = build_store(
            loaded, corpus, Path(folder) / "bench.duckdb", BuildSettings(batch_size=batch_size)
        )
        return time.perf_counter() - started, report.n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="demo")
    parser.add_argument("--corpus", default="bundled+arithmetic:3000")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_source(args.source)
    corpus = resolve_corpus(args.corpus)
    compute_only(loaded, corpus.head(min(len(corpus), 64)), args.batch_size)  # warm-up
    baseline, build = [], []
    for _ in range(args.repeats):
        seconds, n_tokens = compute_only(loaded, corpus, args.batch_size)
        baseline.append(n_tokens / seconds)
        seconds, n_tokens = full_build(loaded, corpus, args.batch_size)
        build.append(n_tokens / seconds)
    result = {
        "source": args.source,
        "corpus": args.corpus,
        "n_texts": len(corpus),
        "n_tokens": n_tokens,
        "saes": [handle.name for handle in loaded.saes],
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "compute_only_tokens_per_s": [round(x) for x in baseline],
        "build_tokens_per_s": [round(x) for x in build],
        "ratio_of_medians": round(statistics.median(build) / statistics.median(baseline), 3),
        "target": ">= 0.85",
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
