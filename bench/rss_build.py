"""Peak RSS of a build at GPT-2-small shape, at several corpus sizes.

Each build runs in its own interpreter (so one's peak cannot hide the next's): the
GPT-2-small-shaped random model and four 24,576-feature TopK SAEs of
`bench.build_throughput.gpt2_small_shaped`, `build_store` over `bundled+arithmetic:N` into a
fresh file, then the process's peak RSS (`ru_maxrss`, DuckDB included) and the rows written.
A build holds per-batch buffers and DuckDB's sort; its peak should not grow with the corpus.

    python -m bench.rss_build --sizes 200 800      # writes bench/results/rss_build_gpt2.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads(2)
from bench.build_throughput import gpt2_small_shaped
from explorer.build.extract import BuildSettings
from explorer.build.single import build_store
from explorer.store.reader import Store
loaded = gpt2_small_shaped()
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "store.duckdb"
    started = time.perf_counter()
    build_store(loaded, sys.argv[1], path, settings=BuildSettings(batch_size=8))
    seconds = time.perf_counter() - started
    with Store.open(path) as store:
        counts = store.table_counts()
print(json.dumps({
    "corpus": sys.argv[1], "tokens": counts["tokens"], "acts_rows": counts["acts"],
    "build_seconds": round(seconds, 1),
    "peak_rss_mb_after_model_load": round(after_load / 1024),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 800])
    parser.add_argument(
        "--results", type=Path, default=REPO_ROOT / "bench/results/rss_build_gpt2.json"
    )
    args = parser.parse_args()
    runs = []
    for size in args.sizes:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, f"bundled+arithmetic:{size}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    result = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": runs}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
