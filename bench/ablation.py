"""Live ablation against a clean forward pass, and corpus-level ablation time, in one process.

Single text: the median over `--runs` alternating runs of (a) a clean forward of one text
and (b) the same forward with one feature zero-ablated through the per-request hook (SAE
encode, changed activations, decode, error term kept); the ratio b / a is the target
(<= 1.2). Beside it, the whole `text_effect` (clean and ablated forwards plus every metric
the page shows) over the clean forward. Corpus: `run_corpus` of one zero-ablated feature over
the demo corpus (bundled+arithmetic), and the same with the dose-response over six scales.

    python -m bench.ablation                      # demo bundle -> results/ablation_demo.json
    python -m bench.ablation --shape gpt2-small   # GPT-2-small-shaped random model and SAEs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from bench.build_throughput import gpt2_small_shaped
from explorer.corpus import resolve_corpus
from explorer.live.interventions import DOSE_SCALES, Intervention, apply, text_effect
from explorer.live.runs import run_corpus
from explorer.sources import request_hooks
from explorer.sources.source import load_source

RESULTS = Path(__file__).parent / "results"
CORPUS = "bundled+arithmetic"


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=["demo", "gpt2-small"], default="demo")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_source("demo") if args.shape == "demo" else gpt2_small_shaped()
    handle = loaded.saes[len(loaded.saes) // 2]
    corpus = resolve_corpus(CORPUS).texts
    text = corpus[corpus["category"] == "python_code"]["text"].iloc[0]
    tokens = torch.tensor([[loaded.tokenizer.bos_token_id, *loaded.tokenizer(text)["input_ids"]]])
    tokens = tokens[:, : loaded.model.cfg.n_ctx]
    with torch.inference_mode():
        _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
        feature = int(handle.sae.encode(cache[handle.hook_name])[0, 1:].sum(0).argmax())
    ablation = Intervention(handle.name, (feature,), "zero")
    patch = {handle.hook_name: apply(handle, ablation)}

    @torch.inference_mode()
    def clean() -> None:
        loaded.model(tokens)

    @torch.inference_mode()
    def ablated() -> None:
        with request_hooks.using(patch):
            loaded.model(tokens)

    def whole_run() -> None:
        text_effect(loaded, ablation, loaded.tokenizer.decode(tokens[0, 1:].tolist()))

    for _ in range(3):  # warm-up
        clean(), ablated(), whole_run()
    clean_s, ablated_s, whole_s = [], [], []
    for _ in range(args.runs):
        clean_s.append(timed(clean))
        ablated_s.append(timed(ablated))
        whole_s.append(timed(whole_run))
    ratio = statistics.median(ablated_s) / statistics.median(clean_s)
    whole_ratio = statistics.median(whole_s) / statistics.median(clean_s)

    corpus_s = timed(lambda: run_corpus(loaded, corpus, ablation, target="python_code"))
    dose_s = timed(
        lambda: run_corpus(loaded, corpus, ablation, target="python_code", scales=DOSE_SCALES)
    )
    result = {
        "shape": args.shape,
        "sae": handle.name,
        "feature": feature,
        "text_tokens": int(tokens.shape[1] - 1),
        "runs": args.runs,
        "threads": args.threads,
        "clean_forward_ms_median": round(statistics.median(clean_s) * 1e3, 3),
        "ablated_forward_ms_median": round(statistics.median(ablated_s) * 1e3, 3),
        "ablation_ratio": round(ratio, 3),
        "whole_text_run_ms_median": round(statistics.median(whole_s) * 1e3, 3),
        "whole_text_run_ratio": round(whole_ratio, 3),
        "target": "ablated forward / clean forward <= 1.2",
        "corpus": CORPUS,
        "corpus_texts": len(corpus),
        "corpus_ablation_s": round(corpus_s, 2),
        "corpus_dose_response_s": round(dose_s, 2),
        "corpus_target": "< 60 s",
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = args.results or RESULTS / f"ablation_{args.shape}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
