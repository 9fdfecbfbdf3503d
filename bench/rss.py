"""Peak memory (RSS) of the app in public demo mode, and of loading one source.

`python -m bench.rss` starts a headless `streamlit run streamlit_app.py` with
`EXPLORER_PUBLIC_DEMO=1` on the demo bundle and store, visits every page with headless
chromium (Playwright, Debian's /usr/bin/chromium), runs one typed-text highlight on the token
page and one ablation on a stored text, and samples the RSS of the server's process tree
(psutil) every 0.2 s throughout. It records the peak against the 1 GB target, the RSS after
start-up and after each step, in bench/results/rss_public_demo.json.

`python -m bench.rss --worst-case` measures instead the heaviest load the public demo lets
visitors make: two browser sessions (the two live-model slots) each start, at the same time,
the heaviest ablation run the demo allows (a corpus run with the dose-response, the most
features the demo accepts, every text), against the 1.5 GB target, in
bench/results/rss_public_demo_worst_case.json.

`python -m bench.rss --store-pages [PAGE ...] --store STORE` measures instead a server that
serves store pages only (no public-demo mode, no model): the pages visited in order in one
session (default `STORE_PAGES`, every page the entry serves without the model libraries), the
process's peak (VmHWM) and resident RSS after each and whether libtorch is mapped, in
bench/results/rss_store_pages_<store name>.json.

`python -m bench.rss --load SPEC` measures instead what `explorer.sources.memory` estimates: the
peak RSS growth of `load_source(SPEC)` in a fresh process after the app's imports (sampled every
2 ms), beside the estimate.

    python -m bench.rss                              # -> bench/results/rss_public_demo.json
    python -m bench.rss --screenshots /tmp/shots     # also a full-page PNG of every page
    python -m bench.rss --load demo                  # load calibration, printed as JSON
    python -m bench.rss --worst-case                 # two heaviest runs at once
    python -m bench.rss --store-pages                # every store page, no model
    python -m bench.rss --store-pages --each-alone   # each on a fresh server of its own,
                                                     # after the minimal app's (the floor)
    python -m bench.rss --store-pages --tag s8       # -> rss_store_pages_<store>_s8.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import psutil

from explorer.settings import PUBLIC_LIVE_LIMITS, PUBLIC_LIVE_SLOTS
from tests.app_server import AppServerError, app_server, free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TARGET_MB = 1000  # 1 GB; every figure here is in decimal MB (10^6 bytes)
WORST_CASE_TARGET_MB = 1500  # the two heaviest allowed runs at once
MB = 1e6
SAMPLE_S = 0.2
PAGE_TIMEOUT_MS = 600_000
# url path -> the page's title, as registered in streamlit_app.py
PAGES = {
    "": "SAE feature explorer",
    "feature": "· feature",
    "specialists": "Specialist heatmaps",
    "frequency": "Frequency vs specialization",
    "tokens": "Token highlighting",
    "rankings": "Rankings and relations",
    "taxonomy": "Token taxonomy",
    "logit-lens": "Logit lens",
    "search": "Search features",
    "compare": "Compare SAEs",
    "ablation": "Ablation lab",
}
# The pages a server serves without the model libraries (the entry's STORE_PAGES but Methods),
# in the order `--store-pages` visits them by default: Frequency first, as in the first record.
STORE_PAGES = (
    "frequency",
    "compare",
    "specialists",
    "taxonomy",
    "tokens",
    "rankings",
    "search",
    "atlas",
)
MINIMAL_APP = ROOT / "bench" / "minimal_app" / "streamlit_app.py"
TYPED_TEXT = "def add(a, b):\n    return a + b  # see https://example.com"


def tree_rss(process: psutil.Process) -> int:
    """RSS of a process and all its children, in bytes (0 once it is gone)."""
    total = 0
    try:
        for member in [process, *process.children(recursive=True)]:
            try:
                total += member.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return 0
    return total


class RssSampler:
    """Samples a process tree's RSS every `SAMPLE_S` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.process))
            self.samples += 1
            self._stop.wait(SAMPLE_S)

    def now(self) -> int:
        return tree_rss(self.process)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def demo_server(port: int, store: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run streamlit_app.py` in public demo mode; yields its URL and process."""
    env = {"EXPLORER_PUBLIC_DEMO": "1", "EXPLORER_SOURCE": "demo", "EXPLORER_STORE": str(store)}
    try:
        with app_server(env, port) as served:
            yield served
    except AppServerError as exc:
        raise SystemExit(str(exc)) from None


def wait_until_idle(page, timeout_s: float = 180) -> None:
    """Wait until the app's script run is over (no 'Running' status widget) and settled."""
    deadline = time.monotonic() + timeout_s
    page.wait_for_timeout(500)
    while page.locator("[data-testid='stStatusWidget']").count() and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    page.wait_for_timeout(1000)


def visit(page, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", level=1).filter(has_text=title).first.wait_for(
        timeout=PAGE_TIMEOUT_MS
    )
    wait_until_idle(page)
    if page.locator("[data-testid='stException']").count():
        raise SystemExit(f"{url} shows a traceback")


def typed_highlight(page, url: str) -> None:
    visit(page, f"{url}/tokens", PAGES["tokens"])
    page.get_by_text("Typed text", exact=True).click()
    wait_until_idle(page)
    page.get_by_label("Text", exact=True).fill(TYPED_TEXT)
    page.get_by_role("button", name="Run", exact=True).click()
    page.locator("[data-testid='stHtml'] span[title]").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    wait_until_idle(page)


def ablation_run(page, url: str) -> None:
    visit(page, f"{url}/ablation", PAGES["ablation"])
    page.get_by_role("button", name="Run on the text").click()
    page.get_by_text("mean change in loss", exact=True).wait_for(timeout=PAGE_TIMEOUT_MS)
    wait_until_idle(page)


def start_heaviest_run(page, url: str) -> None:
    """Open the ablation lab on the most features the public demo allows and start a corpus
    run with the dose-response over every text (returns once the run has started)."""
    features = ",".join(map(str, range(PUBLIC_LIVE_LIMITS.max_features)))
    visit(page, f"{url}/ablation?features={features}", PAGES["ablation"])
    page.get_by_role("tab", name="Over the corpus").click()
    dose = page.get_by_text("Dose-response over scales", exact=False).first
    dose.wait_for(timeout=PAGE_TIMEOUT_MS)
    dose.click()
    page.get_by_role("button", name="Run over every text").click(timeout=PAGE_TIMEOUT_MS)


def finish_heaviest_run(page) -> None:
    page.get_by_text("Dose-response", exact=True).wait_for(timeout=PAGE_TIMEOUT_MS * 5)
    wait_until_idle(page)
    if page.locator("[data-testid='stException']").count():
        raise SystemExit("the ablation lab shows a traceback")


def measure_worst_case(store: Path, port: int, sessions: int) -> dict:
    """Peak RSS while `sessions` browser sessions run the heaviest allowed request at once."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    steps: list[dict] = []
    started = time.perf_counter()
    with demo_server(port, store) as (url, process), RssSampler(process.pid) as rss:
        time.sleep(1)
        steps.append({"step": "server started", "rss_mb": round(rss.now() / MB, 1)})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pages = [browser.new_context().new_page() for _ in range(sessions)]
            for page in pages:  # load every page first, so the runs start together
                visit(page, f"{url}/ablation", PAGES["ablation"])
            steps.append({"step": "ablation lab open", "rss_mb": round(rss.now() / MB, 1)})
            for page in pages:
                start_heaviest_run(page, url)
            run_started = time.perf_counter()
            for page in pages:
                finish_heaviest_run(page)
            run_seconds = time.perf_counter() - run_started
            steps.append(
                {"step": f"{sessions} heaviest runs done", "rss_mb": round(rss.now() / MB, 1)}
            )
            browser.close()
        time.sleep(2 * SAMPLE_S)
        peak, samples = rss.peak, rss.samples
    peak_mb = round(peak / MB, 1)
    return {
        "what": f"peak RSS of the streamlit server's process tree, public demo mode, while "
        f"{sessions} sessions each run a corpus ablation with the dose-response at once",
        "limits": asdict(PUBLIC_LIVE_LIMITS),
        "store": str(store),
        "peak_rss_mb": peak_mb,
        "target_mb": WORST_CASE_TARGET_MB,
        "passed": peak_mb <= WORST_CASE_TARGET_MB,
        "runs_seconds": round(run_seconds, 1),
        "steps": steps,
        "samples": samples,
        "sample_interval_s": SAMPLE_S,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "platform": platform.platform(),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }


def measure_app(store: Path, port: int, screenshots: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    built_store = not store.exists()
    steps: list[dict] = []
    started = time.perf_counter()
    with demo_server(port, store) as (url, process), RssSampler(process.pid) as rss:
        time.sleep(1)
        steps.append({"step": "server started", "rss_mb": round(rss.now() / MB, 1)})
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            actions = [(f"page /{path}", path, title) for path, title in PAGES.items()]
            for name, path, title in actions:
                visit(page, f"{url}/{path}", title)
                steps.append({"step": name, "rss_mb": round(rss.now() / MB, 1)})
                if screenshots:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    shot = screenshots / f"{path or 'home'}.png"
                    page.screenshot(path=str(shot), full_page=True)
            typed_highlight(page, url)
            steps.append({"step": "typed-text highlight", "rss_mb": round(rss.now() / MB, 1)})
            ablation_run(page, url)
            steps.append({"step": "ablation text run", "rss_mb": round(rss.now() / MB, 1)})
            if screenshots:
                page.screenshot(path=str(screenshots / "ablation_run.png"), full_page=True)
            browser.close()
        time.sleep(2 * SAMPLE_S)
        peak = rss.peak
        samples = rss.samples
    peak_mb = round(peak / MB, 1)
    return {
        "what": "peak RSS of the streamlit server's process tree, public demo mode",
        "store": str(store),
        "store_built_during_run": built_store,
        "peak_rss_mb": peak_mb,
        "target_mb": TARGET_MB,
        "passed": peak_mb <= TARGET_MB,
        "steps": steps,
        "samples": samples,
        "sample_interval_s": SAMPLE_S,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "platform": platform.platform(),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }


LOAD_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, threading, time
    import psutil
    import explorer.sources.demo_bundle  # what the app has imported before any load
    from explorer.sources.memory import estimate_source
    from explorer.sources.source import load_source

    spec = sys.argv[1]
    process = psutil.Process()
    gc.collect()
    base = peak = process.memory_info().rss
    done = False

    def sample():
        global peak
        while not done:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    started = time.perf_counter()
    loaded = load_source(spec)
    seconds = time.perf_counter() - started
    done = True
    thread.join()
    estimate = estimate_source(spec)
    print(json.dumps({
        "spec": spec,
        "rss_after_imports_mb": round(base / 1e6, 1),
        "weights_mb": round(estimate.weight_bytes / 1e6, 1),
        "estimated_peak_growth_mb": round(estimate.needed_bytes / 1e6, 1),
        "measured_peak_growth_mb": round((peak - base) / 1e6, 1),
        "measured_over_weights": round((peak - base) / estimate.weight_bytes, 3),
        "load_s": round(seconds, 2),
    }))
    """
)


def wait_until_settled(page, timeout_s: float, quiet_s: float = 3.0) -> None:
    """Wait until no spinner or running status shows and the page's element count has not
    changed for `quiet_s` (a page can be between two cached steps with neither showing)."""
    deadline = time.monotonic() + timeout_s
    busy = "[data-testid='stSpinner'], [data-testid='stStatusWidget']"
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = page.locator("[data-testid='stElementContainer']").count()
        if count != last or page.locator(busy).count():
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        page.wait_for_timeout(250)


def measure_store_pages(
    store: Path, port: int, pages: list[str], shots: Path | None, script: Path | None = None
) -> dict:
    """One server on `store` (EXPLORER_STORE, no public demo), `pages` visited in order; with
    `script`, that Streamlit app instead of the explorer (the minimal app: the floor)."""
    from playwright.sync_api import sync_playwright

    steps = []
    env = {"EXPLORER_STORE": str(store)}
    served = app_server(env, port, start_seconds=180, **({"script": script} if script else {}))
    with served as (url, process), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        for name in pages:
            started = time.perf_counter()
            page.goto(f"{url}/{name}")
            page.get_by_role("heading", level=1).first.wait_for(timeout=PAGE_TIMEOUT_MS)
            wait_until_settled(page, timeout_s=PAGE_TIMEOUT_MS / 1000)
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            status = Path(f"/proc/{process.pid}/status").read_text()
            kb = {key: int(status.split(f"{key}:")[1].split()[0]) for key in ("VmHWM", "VmRSS")}
            steps.append(
                {
                    "page": name,
                    "seconds_to_idle": round(time.perf_counter() - started, 1),
                    "peak_rss_mb": round(kb["VmHWM"] / 1024),
                    "rss_mb": round(kb["VmRSS"] / 1024),
                    "libtorch_mapped": "libtorch" in Path(f"/proc/{process.pid}/maps").read_text(),
                }
            )
            print(steps[-1], flush=True)
        browser.close()
    return {
        "store": str(store),
        "store_mb": round(store.stat().st_size / 1e6, 1),
        "steps": steps,
        "peak_rss_mb": max(step["peak_rss_mb"] for step in steps),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": list(os.getloadavg()),
    }


def measure_each_page_alone(store: Path, pages: list[str]) -> dict:
    """`measure_store_pages` of each page on a fresh server of its own: what one page costs
    a server, imports included, without the pages before it; first the minimal Streamlit app
    (`bench/minimal_app`, page "minimal"), the framework's floor in the same run."""
    floor = measure_store_pages(store, free_port(), [""], None, script=MINIMAL_APP)
    runs = [measure_store_pages(store, free_port(), [page], None) for page in pages]
    steps = [{**floor["steps"][0], "page": "minimal"}] + [run["steps"][0] for run in runs]
    return {
        "store": str(store),
        "store_mb": runs[0]["store_mb"],
        "what": "each page on a fresh store-only server of its own",
        "steps": steps,
        "peak_rss_mb": max(step["peak_rss_mb"] for step in steps),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": list(os.getloadavg()),
    }


def measure_load(spec: str) -> dict:
    """Peak RSS growth of one `load_source(spec)` in a fresh process, beside the estimate."""
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, spec],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, default=ROOT / "cache" / "demo.duckdb")
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--screenshots", type=Path, help="folder for a PNG of every page")
    parser.add_argument(
        "--results",
        type=Path,
        help="the results file (default: one per mode in bench/results/, named in the docstring)",
    )
    parser.add_argument("--load", metavar="SPEC", help="measure one source's load instead")
    parser.add_argument(
        "--store-pages",
        nargs="*",
        metavar="PAGE",
        help=f"a store-only server on these pages (none: {', '.join(STORE_PAGES)})",
    )
    parser.add_argument(
        "--each-alone",
        action="store_true",
        help="with --store-pages: each page on a fresh server of its own (what it costs alone)",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="with --store-pages: a suffix of the result's file name (e.g. s8 -> ..._s8.json)",
    )
    parser.add_argument(
        "--worst-case", action="store_true", help="two heaviest allowed runs at once instead"
    )
    args = parser.parse_args()
    if args.load:
        print(json.dumps(measure_load(args.load), indent=2))
        return
    if args.store_pages is not None:
        store = args.store.absolute()
        pages = args.store_pages or list(STORE_PAGES)
        suffix = f"_{args.tag}" if args.tag else ""
        if args.each_alone:
            result = measure_each_page_alone(store, pages)
            mode = "_each_alone"
        else:
            result = measure_store_pages(store, args.port or free_port(), pages, args.screenshots)
            mode = ""
        out = args.results or RESULTS / f"rss_store_pages_{store.stem}{mode}{suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"peak RSS {result['peak_rss_mb']} MB -> {out}")
        return
    if args.worst_case:
        sessions = PUBLIC_LIVE_SLOTS
        result = measure_worst_case(args.store.absolute(), args.port or free_port(), sessions)
        results = args.results or RESULTS / "rss_public_demo_worst_case.json"
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(result, indent=2) + "\n")
        for step in result["steps"]:
            print(f"{step['step']:<28} {step['rss_mb']:>8.1f} MB")
        verdict = "ok" if result["passed"] else "MISSED"
        print(
            f"peak RSS {result['peak_rss_mb']:.1f} MB "
            f"(target <= {WORST_CASE_TARGET_MB} MB): {verdict}"
        )
        return
    result = measure_app(args.store.absolute(), args.port or free_port(), args.screenshots)
    results = args.results or RESULTS / "rss_public_demo.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    for step in result["steps"]:
        print(f"{step['step']:<28} {step['rss_mb']:>8.1f} MB")
    verdict = "ok" if result["passed"] else "MISSED"
    print(f"peak RSS {result['peak_rss_mb']:.1f} MB (target <= {TARGET_MB} MB): {verdict}")


if __name__ == "__main__":
    main()
