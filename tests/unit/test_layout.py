"""The house rules of the layout, checked on the source: arrows point down.

Only explorer/ui/ imports streamlit; build/ and live/ never import each other; store/ imports
no analysis, charts, ui, build or live; analysis/ imports no charts or ui; sources/ imports
nothing above it; tests never import bench; SQL text appears only under explorer/store/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package (a folder or a module of explorer/) -> packages it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "explorer.store": ("explorer.analysis", "explorer.charts", "explorer.ui", "explorer.build",
                       "explorer.live", "explorer.sources"),
    "explorer.sources": ("explorer.analysis", "explorer.charts", "explorer.ui", "explorer.build",
                         "explorer.live", "explorer.store"),
    "explorer.tokenize": ("explorer.build", "explorer.live", "explorer.ui", "explorer.charts"),
    "explorer.build": ("explorer.live", "explorer.analysis", "explorer.charts", "explorer.ui"),
    "explorer.live": ("explorer.build", "explorer.charts", "explorer.ui"),
    "explorer.analysis": ("explorer.charts", "explorer.ui", "explorer.build"),
    "explorer.charts": ("explorer.ui", "explorer.build", "explorer.live"),
}  # fmt: skip
# the one exception: the SAE reference type of the store's schema is the SAE type sources use too
ALLOWED = {"explorer.sources": ("explorer.store.schema",)}
SQL = re.compile(r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+INTO\b|\bCREATE\s+(TABLE|VIEW)\b")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def explorer_files() -> list[Path]:
    return sorted((ROOT / "explorer").rglob("*.py"))


def test_the_check_sees_the_library() -> None:
    names = {module_name(path) for path in explorer_files()}
    assert {"explorer.store.reader", "explorer.build.extract", "explorer.live.text"} <= names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_arrows_point_down(package: str) -> None:
    wrong = {
        module_name(path): sorted(
            imported
            for imported in imports(path)
            for forbidden in FORBIDDEN[package]
            if within(imported, forbidden)
            and not any(within(imported, ok) for ok in ALLOWED.get(package, ()))
        )
        for path in explorer_files()
        if within(module_name(path), package)
    }
    assert not {module: found for module, found in wrong.items() if found}


def test_only_the_ui_package_imports_streamlit() -> None:
    wrong = [
        module_name(path)
        for path in explorer_files()
        if not within(module_name(path), "explorer.ui")
        and any(within(imported, "streamlit") for imported in imports(path))
    ]
    assert not wrong


def test_tests_never_import_bench() -> None:
    wrong = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if any(within(imported, "bench") for imported in imports(path))
    ]
    assert not wrong


def test_no_sql_outside_the_store_package() -> None:
    wrong = []
    for path in explorer_files():
        if within(module_name(path), "explorer.store"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and SQL.search(node.value)
            ):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not wrong, f"SQL text outside explorer/store/: {wrong}"


def test_pages_never_build_sql() -> None:
    wrong = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "app_pages").glob("*.py"))
        if SQL.search(path.read_text())
    ]
    assert not wrong
