"""Pages that only read a store never import torch, transformer-lens or sae-lens.

Those libraries hold most of a server's memory (~690 MB resident with the model code
imported, against ~120-200 MB for Streamlit, DuckDB and pandas). A page that needs no model
must not pull them in through an import chain (the sidebar's state, the resources, the
cached analysis tables), so a process that serves only such pages stays small. Each check
runs in a fresh interpreter, since this test process has long imported them.
"""

from __future__ import annotations

import ast
import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL_LIBRARIES = ("torch", "transformer_lens", "sae_lens", "transformers")
# Pages that import no model library: they read the store, and the live parts of the last
# four (a typed text; an atlas map the store does not keep, laid out from the loaded
# decoders) load the model through `current_source()` only when asked to.
STORE_PAGES = (
    "specialists",
    "frequency",
    "compare",
    "taxonomy",
    "methods",
    "tokens",
    "rankings",
    "search",
    "atlas",
)


def imported_modules(script: Path) -> list[str]:
    """The explorer modules a page script imports at its top level (`from explorer.ui import
    x` names the module explorer.ui.x when x is a module)."""
    modules = []
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("explorer"):
            modules.append(node.module)
            package = ROOT / node.module.replace(".", "/")
            modules += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (package / f"{alias.name}.py").is_file()
            ]
        elif isinstance(node, ast.Import):
            modules += [a.name for a in node.names if a.name.startswith("explorer")]
    return modules


# Every check imports the entry's modules first, so one interpreter imports them once and
# forks a child per check, which imports the rest and reports the model libraries it then
# holds: a child is the fresh interpreter of that check (an import only ever adds modules),
# and the quick loop starts one interpreter (~2 s of CPU) instead of eleven.
IMPORTER = """
import importlib, json, os, sys, traceback
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            for name in json.loads(line):
                importlib.import_module(name)
            answer = sorted(set(json.loads(sys.argv[2])) & set(sys.modules))
        except BaseException:
            answer = {"error": traceback.format_exc()}
        os.write(write, json.dumps(answer).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    print(b"".join(chunks).decode() or json.dumps({"error": "the child died"}), flush=True)
"""


class _Importer:
    """The interpreter above, with the entry's modules imported; `check(modules)` forks it."""

    def __init__(self, base: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", IMPORTER, json.dumps(base), json.dumps(MODEL_LIBRARIES)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
        assert self._answer() == "ready"

    def _answer(self):
        ready, _, _ = select.select([self.process.stdout], [], [], 300)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()
            raise AssertionError(
                f"the import checker stopped: {self.process.stderr.read()[-2000:]}"
            )
        return json.loads(line)

    def check(self, modules: list[str]) -> list[str]:
        self.process.stdin.write(json.dumps(modules) + "\n")
        self.process.stdin.flush()
        answer = self._answer()
        assert not isinstance(answer, dict), answer["error"][-2000:]
        return answer

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()
        self.process.stderr.close()


_IMPORTERS: list[_Importer] = []


@pytest.fixture(scope="module", autouse=True)
def _close_the_importer():
    yield
    while _IMPORTERS:
        _IMPORTERS.pop().close()


def libraries_after_import(modules: list[str]) -> list[str]:
    """Which model libraries a fresh interpreter holds after importing `modules` (after the
    entry's modules, which every check imports first)."""
    if not _IMPORTERS:
        _IMPORTERS.append(_Importer(imported_modules(ROOT / "streamlit_app.py")))
    return _IMPORTERS[0].check(modules)


def test_the_page_list_names_real_pages():
    for page in STORE_PAGES:
        assert (ROOT / "app_pages" / f"{page}.py").is_file(), page


def test_a_live_part_imports_the_model_libraries_under_their_lock(monkeypatch):
    """A store page reaches the model only through `loaded_source` (via `current_source`),
    which imports sae-lens and transformer-lens under the entry's lock before loading: the
    entry does not import them before these pages, and two sessions importing them at once
    from different ends would deadlock (see `import_model_libraries`)."""
    from explorer.ui import resources

    calls = []
    monkeypatch.setattr(resources, "import_model_libraries", lambda: calls.append("import"))
    monkeypatch.setattr(resources, "memory_estimate", lambda spec: _Estimate())
    monkeypatch.setattr(resources, "_loaded_source", lambda spec: calls.append(f"load {spec}"))
    resources.loaded_source("demo")
    assert calls == ["import", "load demo"]


class _Estimate:
    def describe(self) -> str:
        return "a few MB"


def test_the_entry_skips_the_model_libraries_on_exactly_these_pages():
    """The entry imports sae-lens and transformer-lens (under a lock) before every page but
    the store pages; its list must be this one."""
    tree = ast.parse((ROOT / "streamlit_app.py").read_text())
    lists = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(target, "id", "") == "STORE_PAGES" for target in node.targets)
    ]
    assert lists == [STORE_PAGES]


def test_the_entry_and_its_sidebar_import_no_model_library():
    assert libraries_after_import(imported_modules(ROOT / "streamlit_app.py")) == []


@pytest.mark.parametrize("page", STORE_PAGES)
def test_a_store_page_imports_no_model_library(page):
    modules = imported_modules(ROOT / "streamlit_app.py")
    modules += imported_modules(ROOT / "app_pages" / f"{page}.py")
    assert libraries_after_import(modules) == []


@pytest.mark.slow  # a fresh interpreter imports torch (~20 s)
def test_the_check_sees_a_model_library():
    """The check can fail: a module that needs the model does import torch."""
    assert "torch" in libraries_after_import(["explorer.sources.unembed"])
