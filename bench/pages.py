"""Every page of the app in a real browser, beside a minimal two-page Streamlit app.

For each page of the explorer (and each of `bench/minimal_app`, the framework's floor) it
times, with Playwright driving Debian's chromium:

- **first visit**: a fresh server (`tests.app_server.app_server`), a fresh browser context,
  the page's URL opened: the server imports the page's modules and fills its caches;
- **shared link**: on a warm server (every page visited once), the page's URL opened in a
  new browser context (a new Streamlit session);
- **warm navigation**: on the warm server, a click on the page's sidebar link from the page
  before it (median of `--nav-runs` clicks);
- **widget change**: on the page, the first select box of the main area (else of the
  sidebar, else a radio button) set to another option.

A page is *ready* when the app said its script run finished (a `script_finished` message on
the websocket, decoded with Streamlit's own protobuf) and the page shows its main heading
with no running status widget and no stale element. Both apps are measured in the same run,
`--repeats` times, alternating, so a busy machine slows both; the ratios to the minimal app
are the figures to compare across runs.

Also recorded, per explorer server: its peak and current RSS (`/proc/PID/status`) and whether
torch is mapped into it (`/proc/PID/maps`), after the first visit of each page and after a
server visited only the pages that need no model (`STORE_PAGES`).

    python -m bench.pages --store cache/demo.duckdb --label demo
    python -m bench.pages --store cache/bench/gpt2_scale.duckdb --label gpt2_220m --repeats 1
    python -m bench.pages --store cache/demo.duckdb --label demo_before --app-root /tmp/before

`--app-root` runs another checkout of the app (e.g. `git archive` of an earlier commit) with
this environment, for before/after figures. Results go to `bench/results/pages_<label>.json`.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import statistics
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from bench.store_queries import machine
from tests.app_server import app_server

REPO_ROOT = Path(__file__).resolve().parents[1]
MINIMAL_APP = REPO_ROOT / "bench/minimal_app/streamlit_app.py"
# The minimal app's pages that make the floor (a title, a select box, a line of text), and
# its page with one chart and one table: a new browser loads those elements' code on first
# use, which a page drawing them cannot avoid (session 11: ~0.85 s of a shared link).
FLOOR_PAGES = ("", "two")
CHART_TABLE_PAGE = "chart-table"
SCREENSHOTS = REPO_ROOT / "cache/bench/pages_screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1400, "height": 1200}
# Pages that read the store only: they load no model unless the user runs typed text.
STORE_PAGES = (
    "specialists",
    "frequency",
    "tokens",
    "rankings",
    "taxonomy",
    "search",
    "atlas",
    "compare",
)
RUN_ENDED = (
    ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY,
    ForwardMsg.ScriptFinishedStatus.FINISHED_WITH_COMPILE_ERROR,
)
# Ready: the page's heading shown, no run going, nothing stale, and no element still a
# skeleton (Streamlit draws a widget or chart whose code is still loading as `stSkeleton`,
# for up to a second in a new browser context; before session 11 a page counted as ready
# with its widgets and charts still grey boxes).
READY_JS = """(heading) => {
    const shown = Array.from(document.querySelectorAll("h1"))
        .some((h) => h.textContent.includes(heading));
    return shown && !document.querySelector("[data-testid='stStatusWidget']")
        && !document.querySelector("[data-stale='true']")
        && !document.querySelector("[data-testid='stSkeleton']");
}"""

# The browser's main-thread tasks over 50 ms (the Long Tasks API), summed from a reset: how
# long the page's own drawing (charts, grids, Markdown) kept the browser busy.
BUSY_JS = """(reset) => {
    if (!window.__benchBusy) {
        window.__benchBusy = [];
        new PerformanceObserver((list) => {
            for (const entry of list.getEntries()) window.__benchBusy.push(entry.duration);
        }).observe({type: "longtask"});
    }
    const total = window.__benchBusy.reduce((a, b) => a + b, 0) / 1000;
    if (reset) window.__benchBusy.length = 0;
    return total;
}"""
BUSY_SETTLE_MS = 300  # after a page is ready, before its long tasks are read (not timed)

logger = logging.getLogger("bench.pages")


NAVIGATION_SPLIT = (
    "navigation_to_run_end",
    "navigation_after_run_end",
    "navigation_browser_busy",
)


@dataclass(frozen=True)
class PageSpec:
    url_path: str  # "" for the default page
    title: str  # its sidebar link
    heading: str  # text its main heading contains


def app_pages(script: Path) -> list[PageSpec]:
    """Every `st.Page` of an app's entry, with the heading its script sets (`st.title`)."""
    pages = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page":
            keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            page_file = script.parent / ast.literal_eval(node.args[0])
            url_path = "" if keywords.get("default") else keywords["url_path"]
            pages.append(PageSpec(url_path, keywords["title"], page_heading(page_file)))
    return pages


def page_heading(page_file: Path) -> str:
    """The literal of the page's `st.title(...)`; for a formatted title, its last literal
    part (the feature page's title is "<sae> · feature <n>")."""
    for node in ast.walk(ast.parse(page_file.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "title":
            argument = node.args[0]
            if isinstance(argument, ast.Constant):
                return argument.value
            parts = [
                v.value for v in getattr(argument, "values", []) if isinstance(v, ast.Constant)
            ]
            return max(parts, key=len).strip()
    raise ValueError(f"{page_file} sets no st.title")


class RunWatcher:
    """Counts the script runs a browser page's websocket reports as finished."""

    def __init__(self, page) -> None:
        self.finished = 0
        self.finished_at = 0.0  # perf_counter() when the last run's end arrived
        page.on("websocket", self._watch)

    def _watch(self, websocket) -> None:
        websocket.on("framereceived", self._frame)

    def _frame(self, payload: bytes | str) -> None:
        if isinstance(payload, bytes):
            message = ForwardMsg.FromString(payload)
            kind = message.WhichOneof("type")
            if kind == "script_finished" and message.script_finished in RUN_ENDED:
                self.finished += 1
                self.finished_at = time.perf_counter()


def wait_ready(page, watcher: RunWatcher, runs_before: int, heading: str, timeout_s: float):
    """Block until a script run after `runs_before` finished and the page shows `heading`
    with nothing running or stale."""
    deadline = time.monotonic() + timeout_s
    while watcher.finished <= runs_before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no script run finished within {timeout_s:g} s")
        page.wait_for_timeout(5)
    left_ms = max(1.0, (deadline - time.monotonic()) * 1000)
    page.wait_for_function(READY_JS, arg=heading, timeout=left_ms, polling=5)


def page_errors(page) -> list[str]:
    return page.locator(
        "[data-testid='stException'], [data-testid='stAlertContentError']"
    ).all_inner_texts()


def server_memory(pid: int) -> dict[str, object]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", status, re.M))
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {
        "peak_rss_mb": round(int(fields["VmHWM"]) / 1024),
        "rss_mb": round(int(fields["VmRSS"]) / 1024),
        "torch_loaded": "libtorch" in maps,
    }


def screenshot(page, name: str) -> None:
    """A full-page screenshot of a page that did not get ready, to cache/bench/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with suppress(Exception):
        path = SCREENSHOTS / f"{name}_{int(time.time())}.png"
        page.screenshot(path=str(path), full_page=True)
        logger.info("screenshot %s", path)


class Bench:
    def __init__(
        self, browser, env: dict[str, str], timeout_s: float, warm_timeout_s: float
    ) -> None:
        self.browser = browser
        self.env = env
        self.timeout_s = timeout_s  # a first visit (the page fills its caches)
        self.warm_timeout_s = warm_timeout_s  # a click or widget change on a warm page

    def open(self, url: str, spec: PageSpec):
        """A new context and page on `url`/`spec`; returns (context, page, watcher, seconds).
        A page that does not get ready is screenshotted to cache/bench/ and the error raised."""
        context = self.browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        watcher = RunWatcher(page)
        started = time.perf_counter()
        try:
            page.goto(f"{url}/{spec.url_path}")
            wait_ready(page, watcher, 0, spec.heading, self.timeout_s)
        except Exception:
            screenshot(page, f"not_ready_{spec.url_path or 'home'}")
            context.close()
            raise
        return context, page, watcher, time.perf_counter() - started

    def first_visits(self, script: Path, pages: list[PageSpec]) -> dict[str, dict]:
        results = {}
        for spec in pages:
            with app_server(self.env, script=script, start_seconds=180) as (url, process):
                try:
                    context, page, _, seconds = self.open(url, spec)
                    results[spec.url_path] = {
                        "seconds": round(seconds, 3),
                        "errors": page_errors(page),
                        **server_memory(process.pid),
                    }
                    context.close()
                except Exception as error:  # a page that never got ready: say so, go on
                    results[spec.url_path] = {
                        "seconds": None,
                        "errors": [f"not ready: {str(error)[:300]}"],
                        **server_memory(process.pid),
                    }
            logger.info("first visit /%s: %s", spec.url_path, results[spec.url_path])
        return results

    def store_pages_server(self, script: Path, pages: list[PageSpec]) -> dict[str, object]:
        """A fresh server visited on every page that needs no model: its memory after."""
        store_pages = [spec for spec in pages if spec.url_path in STORE_PAGES]
        with app_server(self.env, script=script, start_seconds=180) as (url, process):
            context = self.browser.new_context(viewport=VIEWPORT)
            for spec in store_pages:
                page = context.new_page()
                watcher = RunWatcher(page)
                page.goto(f"{url}/{spec.url_path}")
                wait_ready(page, watcher, 0, spec.heading, self.timeout_s)
                page.close()
            context.close()
            return {"pages": [spec.url_path for spec in store_pages], **server_memory(process.pid)}

    def warm_server(self, script: Path, pages: list[PageSpec], nav_runs: int) -> dict:
        results: dict[str, dict] = {spec.url_path: {} for spec in pages}
        with app_server(self.env, script=script, start_seconds=180) as (url, process):
            ready = []
            for spec in pages:  # warm every page's caches
                try:
                    context, _, _, seconds = self.open(url, spec)
                    context.close()
                    ready.append(spec)
                    logger.info("warmed /%s in %.2f s", spec.url_path, seconds)
                except Exception as error:
                    logger.warning("/%s never got ready: %s", spec.url_path, str(error)[:300])
            for spec in ready:
                try:
                    context, page, _, seconds = self.open(url, spec)
                    results[spec.url_path]["shared_link"] = round(seconds, 3)
                    context.close()
                except Exception as error:
                    results[spec.url_path]["errors"] = [f"not ready: {str(error)[:300]}"]
                logger.info("shared link /%s: %s", spec.url_path, results[spec.url_path])
            if not ready:
                return {"pages": results, "server_after_all_pages": server_memory(process.pid)}
            context, page, watcher, _ = self.open(url, ready[-1])
            for _ in range(nav_runs):
                for spec in ready:
                    try:
                        seconds, split = self.navigate_split(page, watcher, spec)
                        row = results[spec.url_path]
                        row.setdefault("navigation_runs", []).append(seconds)
                        for name, value in split.items():
                            row.setdefault(f"{name}_runs", []).append(value)
                    except Exception as error:
                        logger.warning("navigation to /%s: %s", spec.url_path, str(error)[:300])
            for spec in ready:
                row = results[spec.url_path]
                for name in ("navigation", *NAVIGATION_SPLIT):
                    if row.get(f"{name}_runs"):
                        row[name] = round(statistics.median(row[f"{name}_runs"]), 3)
                try:
                    self.navigate(page, watcher, spec)
                    row["widget"], row["widget_change"] = self.change_widget(page, watcher, spec)
                    row["errors"] = row.get("errors", []) + page_errors(page)
                except Exception as error:
                    row["errors"] = row.get("errors", []) + [f"widget: {str(error)[:300]}"]
                logger.info("/%s: %s", spec.url_path, row)
            context.close()
            memory = server_memory(process.pid)
        return {"pages": results, "server_after_all_pages": memory}

    def navigate_split(
        self, page, watcher: RunWatcher, spec: PageSpec
    ) -> tuple[float, dict[str, float]]:
        """`navigate`, and where its time went (`NAVIGATION_SPLIT`): the seconds until the
        run's end arrived on the websocket (the server's run, and the browser's work that
        shares the two cores with it), those after it until the page was ready, and the
        browser's main-thread long tasks over the navigation."""
        page.evaluate(BUSY_JS, True)
        seconds = self.navigate(page, watcher, spec)
        ready_at = time.perf_counter()
        to_finished = max(0.0, seconds - (ready_at - watcher.finished_at))
        page.wait_for_timeout(BUSY_SETTLE_MS)
        busy = page.evaluate(BUSY_JS, False)
        split = {
            "navigation_to_run_end": round(to_finished, 3),
            "navigation_after_run_end": round(seconds - to_finished, 3),
            "navigation_browser_busy": round(busy, 3),
        }
        return seconds, split

    def navigate(self, page, watcher: RunWatcher, spec: PageSpec) -> float:
        # By its address: a link's text also holds its icon's name ("homeHome").
        link = page.locator(f"a[data-testid='stSidebarNavLink'][href$='/{spec.url_path}']")
        if not link.first.is_visible():
            with suppress(Exception):
                page.locator("[data-testid='stSidebarNavViewButton']").click(timeout=2_000)
        runs = watcher.finished
        started = time.perf_counter()
        link.first.click()
        try:
            wait_ready(page, watcher, runs, spec.heading, self.warm_timeout_s)
        except Exception:
            screenshot(page, f"nav_not_ready_{spec.url_path or 'home'}")
            raise
        return round(time.perf_counter() - started, 3)

    def change_widget(self, page, watcher: RunWatcher, spec: PageSpec):
        """Set the first select box of the main area (else the sidebar's) to another option,
        else click another radio option; (what was changed, seconds) or (None, None)."""
        main = page.locator("[data-testid='stMain']")
        sidebar = page.locator("[data-testid='stSidebar']")
        for area, where in ((main, "main"), (sidebar, "sidebar")):
            boxes = area.locator("[data-testid='stSelectbox']")
            if boxes.count():
                box = boxes.first
                label = box.locator("label").first.inner_text()
                box.get_by_role("combobox").click()
                options = page.get_by_role("option")
                options.first.wait_for(timeout=10_000)
                choice = options.filter(has_not=page.locator("[aria-selected='true']"))
                unselected = page.locator("[role='option'][aria-selected='false']")
                target = unselected.first if unselected.count() else choice.first
                return f"select box {label!r} ({where})", self.timed(
                    page, watcher, spec, target.click
                )
        radios = main.locator("[data-testid='stRadio'] label:has(input:not(:checked))")
        if radios.count():
            return "radio", self.timed(page, watcher, spec, radios.first.click)
        return None, None

    def timed(self, page, watcher: RunWatcher, spec: PageSpec, action: Callable[[], None]):
        runs = watcher.finished
        started = time.perf_counter()
        action()
        wait_ready(page, watcher, runs, spec.heading, self.warm_timeout_s)
        return round(time.perf_counter() - started, 3)


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    app_script = args.app_root / "streamlit_app.py"
    apps = {"minimal": MINIMAL_APP, "explorer": app_script}
    env = {"EXPLORER_SOURCE": args.source, "EXPLORER_STORE": str(args.store.absolute())}
    repeats: list[dict] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        bench = Bench(browser, env, args.timeout, args.warm_timeout)
        for repeat in range(args.repeats):
            one: dict[str, dict] = {}
            for name, script in apps.items():
                pages = app_pages(script)
                if name == "explorer" and args.pages:
                    pages = [spec for spec in pages if (spec.url_path or "home") in args.pages]
                logger.info("repeat %d, %s app: %d pages", repeat + 1, name, len(pages))
                one[name] = {
                    "first_visit": bench.first_visits(script, pages)
                    if "first" in args.phases
                    else {},
                    **bench.warm_server(script, pages, args.nav_runs),
                }
                if name == "explorer" and "store" in args.phases:
                    with suppress(Exception):
                        one[name]["store_pages_server"] = bench.store_pages_server(script, pages)
                partial = args.results_path.with_suffix(".partial.json")
                partial.write_text(json.dumps(repeats + [one], indent=2) + "\n")
            repeats.append(one)
        browser.close()
    return {
        "label": args.label,
        "store": str(args.store),
        "store_bytes": args.store.stat().st_size,
        "source": args.source,
        "app_root": str(args.app_root),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "repeats": repeats,
        "summary": summarise(repeats),
    }


def summarise(repeats: list[dict]) -> dict:
    """Per page: the median over repeats of each timing, and its ratio to the minimal app's
    median of the same timing (over its floor pages, `FLOOR_PAGES`) in the same repeats; and
    the same medians of its page with a chart and a table."""

    def floor(kind: str, paths: tuple[str, ...]) -> float | None:
        values = []
        for one in repeats:
            minimal = one["minimal"]
            if kind == "first_visit":
                visits = minimal["first_visit"]
                values += [visits[p]["seconds"] for p in paths if p in visits]
            else:
                rows = [minimal["pages"][p] for p in paths if p in minimal["pages"]]
                values += [row[kind] for row in rows if row.get(kind) is not None]
        return statistics.median(values) if values else None

    kinds = ("first_visit", "shared_link", "navigation", "widget_change")

    def medians(paths: tuple[str, ...]) -> dict[str, float]:
        values = {kind: floor(kind, paths) for kind in kinds}
        return {kind: round(value, 3) for kind, value in values.items() if value is not None}

    floors = medians(FLOOR_PAGES)
    chart_page = medians((CHART_TABLE_PAGE,))
    pages: dict[str, dict] = {}
    for path in repeats[0]["explorer"]["pages"]:
        row: dict[str, object] = {}
        for kind in kinds:
            if kind == "first_visit":
                visits = [one["explorer"]["first_visit"].get(path, {}) for one in repeats]
                values = [v["seconds"] for v in visits if v.get("seconds") is not None]
            else:
                values = [one["explorer"]["pages"][path].get(kind) for one in repeats]
                values = [v for v in values if v is not None]
            if values and kind in floors:
                row[kind] = round(statistics.median(values), 3)
                row[f"{kind}_over_minimal"] = round(row[kind] / floors[kind], 2)
        for name in NAVIGATION_SPLIT:  # seconds, no ratio: where warm navigation went
            values = [one["explorer"]["pages"][path].get(name) for one in repeats]
            values = [v for v in values if v is not None]
            if values:
                row[name] = round(statistics.median(values), 3)
        row["widget"] = repeats[0]["explorer"]["pages"][path].get("widget")
        row["first_visit_peak_rss_mb"] = max(
            (
                one["explorer"]["first_visit"][path]["peak_rss_mb"]
                for one in repeats
                if path in one["explorer"]["first_visit"]
            ),
            default=None,
        )
        row["errors"] = sorted(
            {e for one in repeats for e in one["explorer"]["pages"][path].get("errors", [])}
        )
        pages[path or "home"] = row
    return {
        "minimal_app": floors,
        "minimal_chart_and_table": chart_page,
        "pages": pages,
        "store_pages_server": [
            one["explorer"]["store_pages_server"]
            for one in repeats
            if "store_pages_server" in one["explorer"]
        ],
        "server_after_all_pages": [one["explorer"]["server_after_all_pages"] for one in repeats],
    }


def _split_medians(rows: list[dict]) -> dict[str, float]:
    """The median of each navigation timing over `rows` (pages' results)."""
    medians = {}
    for name in ("navigation", *NAVIGATION_SPLIT):
        values = [row[name] for row in rows if row.get(name) is not None]
        if values:
            medians[name] = round(statistics.median(values), 3)
    return medians


def markdown_table(result: dict) -> str:
    """The README's table of one run: each page's medians in seconds and, in brackets, their
    ratio to the minimal app's in the same run."""
    summary = result["summary"]
    floors = summary["minimal_app"]
    kinds = ("first_visit", "shared_link", "navigation", "widget_change")
    lines = [
        f"{result['label']}: `{result['store']}` ({result['store_bytes'] / 2**20:,.0f} MB), "
        f"source `{result['source']}`, app `{result['app_root']}`, measured "
        f"{result['measured_at']}, {len(result['repeats'])} repeat(s), load average "
        f"{result['load_average']}. Seconds (x the minimal app in the same run).",
        "",
        "| page | first visit | shared link | warm navigation | widget change | widget "
        "| peak RSS after its first visit |",
        "|---|---|---|---|---|---|---|",
        "| *minimal app* | "
        + " | ".join(f"{floors[kind]:.2f}" if kind in floors else "-" for kind in kinds)
        + " | select box | |",
    ]
    chart_page = summary.get("minimal_chart_and_table") or {}
    if chart_page:  # results from session 11 on
        lines.append(
            "| *minimal page with a chart and a table* | "
            + " | ".join(
                f"{chart_page[kind]:.2f} ({chart_page[kind] / floors[kind]:.1f}x)"
                if kind in chart_page and kind in floors
                else "-"
                for kind in kinds
            )
            + " | select box | |"
        )
    for page, row in summary["pages"].items():
        cells = [
            f"{row[kind]:.2f} ({row[f'{kind}_over_minimal']:.1f}x)" if kind in row else "-"
            for kind in kinds
        ]
        errors = " **errors**" if row["errors"] else ""
        lines.append(
            f"| {page}{errors} | "
            + " | ".join(cells)
            + f" | {row['widget'] or '-'} | {row['first_visit_peak_rss_mb'] or '-'} MB |"
        )
    if any(name in row for row in summary["pages"].values() for name in NAVIGATION_SPLIT):
        lines += [
            "",
            "Warm navigation, where its time went (medians, seconds): until the run's end "
            "reached the browser, after it until the page was ready, and the browser's "
            "main-thread tasks over 50 ms during it (drawing charts, grids, Markdown).",
            "",
            "| page | warm navigation | to the run's end | after it | browser busy |",
            "|---|---|---|---|---|",
        ]
        minimal = [one["minimal"]["pages"] for one in result["repeats"]]
        floor_rows = [pages[p] for pages in minimal for p in FLOOR_PAGES if p in pages]
        rows = {"*minimal app*": _split_medians(floor_rows)}
        chart_rows = [pages[CHART_TABLE_PAGE] for pages in minimal if CHART_TABLE_PAGE in pages]
        if chart_rows:
            rows["*minimal page with a chart and a table*"] = _split_medians(chart_rows)
        rows.update(summary["pages"])
        for page, row in rows.items():
            cells = [row.get(name) for name in ("navigation", *NAVIGATION_SPLIT)]
            lines.append(
                f"| {page} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |"
            )
    for server in summary["store_pages_server"]:
        lines.append(
            f"\nServer after visiting only {', '.join(server['pages'])}: peak RSS "
            f"{server['peak_rss_mb']} MB, RSS {server['rss_mb']} MB, torch loaded: "
            f"{server['torch_loaded']}."
        )
    for server in summary["server_after_all_pages"]:
        lines.append(
            f"\nWarm server after every page: peak RSS {server['peak_rss_mb']} MB, torch "
            f"loaded: {server['torch_loaded']}."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, nargs="+", help="print results files as tables")
    parser.add_argument("--store", type=Path)
    parser.add_argument("--source", default="demo")
    parser.add_argument("--label", help="names the results file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nav-runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds a page may take")
    parser.add_argument(
        "--warm-timeout", type=float, default=120, help="seconds a warm click may take"
    )
    parser.add_argument(
        "--phases",
        nargs="*",
        choices=("first", "store"),
        default=["first", "store"],
        help="besides the warm server: first visits (a server per page) and the store-only "
        "server's memory",
    )
    parser.add_argument("--app-root", type=Path, default=REPO_ROOT)
    parser.add_argument("--pages", nargs="+", help="only these url paths ('home' for /)")
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    if args.table:
        print("\n\n".join(markdown_table(json.loads(path.read_text())) for path in args.table))
        return
    if args.store is None or args.label is None:
        parser.error("--store and --label are required to run")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = args.results or REPO_ROOT / f"bench/results/pages_{args.label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    args.results_path = path
    result = run(args)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
