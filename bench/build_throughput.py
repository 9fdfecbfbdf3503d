"""Build throughput against compute-only throughput, measured in one process.

The baseline is what a build cannot avoid: the model forward (`run_with_cache` stopped after
the last hooked layer) plus every SAE's encode of the real tokens, as the build encodes them
(see `compute_only`), on the same batches, storing nothing. The
build is the full `build_store` into a fresh DuckDB file: tokenization, sparse rows, running
statistics, Arrow ingest, sorting, derived tables, logit lens and quality. Runs alternate
(baseline, build, baseline, build, ...) so machine noise hits both; the ratio of medians is
recorded in bench/results/build_throughput.json.

    python -m bench.build_throughput [--source demo] [--corpus bundled+arithmetic:3000]
    python -m bench.build_throughput --shape gpt2-small   # GPT-2-small-sized random model

The demo model is tiny (1.9M parameters) while its four TopK SAEs emit 128 rows per token,
so its build is bound by writing rows, not by compute. `--shape gpt2-small` measures the
same pipeline on a randomly initialised model and SAEs of GPT-2 small's size (12 layers,
d_model 768, TopK SAEs of 24576 features, k 32, at blocks 6, 8, 10 and 11, as
gpt2-small-res-jb), with the demo tokenizer: the compute per row of a real research setup.
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

from explorer.build.extract import BuildSettings, encode_rows, use_sparse_encode
from explorer.build.single import build_store
from explorer.corpus import resolve_corpus
from explorer.sources.source import LoadedSource, SaeHandle, Source, load_source
from explorer.tokenize import padded_batches, tokenize_corpus

RESULTS = Path(__file__).parent / "results"


@torch.inference_mode()
def compute_only(loaded: LoadedSource, corpus, batch_size: int) -> tuple[float, int]:
    """Forward + encode over the corpus, nothing kept; returns (seconds, real tokens).

    The encode is the build's: real tokens only (no padding, no BOS), and for a TopK SAE
    with many features SAELens's sparse TopK activation (`encode_rows`, see
    `use_sparse_encode`), which skips writing a dense [tokens, d_sae] tensor; other SAEs
    run `sae.encode` (the build then also runs `nonzero` on its output)."""
    started = time.perf_counter()
    tokenized = tokenize_corpus(loaded, corpus.texts)
    hooks = [handle.hook_name for handle in loaded.saes]
    stop_at = max(handle.layer for handle in loaded.saes) + 1
    sparse = {handle.name: use_sparse_encode(handle.sae) for handle in loaded.saes}
    n_tokens = 0
    for _, tokens, real in padded_batches(tokenized, batch_size, loaded.tokenizer.pad_token_id):
        _, cache = loaded.model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop_at)
        for handle in loaded.saes:
            acts_in = cache[handle.hook_name][real]
            if sparse[handle.name]:
                encode_rows(handle.sae, acts_in, sparse=True)
            else:
                handle.sae.encode(acts_in)
        n_tokens += int(real.sum())
    return time.perf_counter() - started, n_tokens


def full_build(loaded: LoadedSource, corpus, batch_size: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = build_store(
            loaded, corpus, Path(folder) / "bench.duckdb", BuildSettings(batch_size=batch_size)
        )
        return time.perf_counter() - started, report.n_tokens


def gpt2_small_shaped(seed: int = 0) -> LoadedSource:
    """A random model and SAEs with GPT-2 small's shapes, on the demo bundle's tokenizer."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    demo = load_source("demo")
    config = HookedTransformerConfig(
        n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=128,
        d_vocab=demo.model.cfg.d_vocab, act_fn="gelu_new", normalization_type="LN",
        model_name="gpt2-small-shaped", device="cpu",
    )  # fmt: skip
    model = HookedTransformer(config, tokenizer=demo.tokenizer).eval()
    handles = []
    for layer in (6, 8, 10, 11):
        hook = f"blocks.{layer}.hook_resid_pre"
        sae = TopKSAE(TopKSAEConfig(d_in=768, d_sae=24576, k=32, apply_b_dec_to_input=True))
        sae.cfg.metadata.hook_name = hook
        handles.append(SaeHandle(name=f"L{layer}", hook_name=hook, layer=layer, sae=sae.eval()))
    source = Source(kind="demo", preset="gpt2-small-shaped")
    return LoadedSource(source=source, model=model, saes=handles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="demo")
    parser.add_argument("--shape", choices=["gpt2-small"], help="random model of this size")
    parser.add_argument("--corpus", default="bundled+arithmetic:3000")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, help="default: bench/results/build_*.json")
    parser.add_argument(
        "--half",
        action="store_true",
        help="also time the first half of the corpus, for the marginal (per-token) ratio that "
        "excludes fixed costs (logit lens, CE loss recovered, store setup)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = gpt2_small_shaped() if args.shape else load_source(args.source)
    corpus = resolve_corpus(args.corpus)
    compute_only(loaded, corpus.head(min(len(corpus), 64)), args.batch_size)  # warm-up
    baseline, build = [], []
    for _ in range(args.repeats):
        seconds, n_tokens = compute_only(loaded, corpus, args.batch_size)
        baseline.append(n_tokens / seconds)
        seconds, n_tokens = full_build(loaded, corpus, args.batch_size)
        build.append(n_tokens / seconds)
    marginal = {}
    if args.half:
        half = corpus.head(len(corpus) // 2)
        seconds = {}
        for name, run in (("compute", compute_only), ("build", full_build)):
            (t_full, n_full), (t_half, n_half) = (
                run(loaded, corpus, args.batch_size),
                run(loaded, half, args.batch_size),
            )
            seconds[name] = (n_full - n_half) / (t_full - t_half)
        marginal = {
            "marginal_compute_tokens_per_s": round(seconds["compute"]),
            "marginal_build_tokens_per_s": round(seconds["build"]),
            "marginal_ratio": round(seconds["build"] / seconds["compute"], 3),
        }
    result = {
        "source": args.shape or args.source,
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
        **marginal,
        "target": ">= 0.85",
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    results = args.results or RESULTS / f"build_throughput_{args.shape or 'demo'}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
