"""Text from the corpus, a link or a user reaches Markdown only through `markdown_escaped`.

Unit tests of `markdown_escaped` and `quoted` (every character Markdown, Streamlit or KaTeX
reads as markup comes out literal), and a static check over app_pages/ and explorer/: every
value formatted into an f-string that goes to a Markdown sink (`st.markdown`, `st.error`,
`st.caption`, ..., a widget's label or `help=`) or into the message of a raised
`ExplorerError` (pages show those with `st.error`) is escaped, a number, a project constant,
the message of a caught `ExplorerError` (escaped where it was raised), or on the reviewed
allow-lists below, each with its reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.errors import markdown_escaped, plain_text, quoted

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("app_pages/*.py"), *ROOT.glob("explorer/**/*.py")])
ESCAPERS = {"markdown_escaped", "quoted"}
# Calls that build the project's own Markdown: a link to a Methods section (its anchor and the
# section's title come from docs/methods.md, never from a user).
PROJECT_MARKDOWN = {"methods_link"}
# Streamlit calls whose first argument is shown as Markdown.
MARKDOWN_SINKS = {
    "markdown",
    "info",
    "warning",
    "error",
    "success",
    "caption",
    "write",
    "title",
    "header",
    "subheader",
    "toast",
}
# Widgets whose label (first argument or `label=`) Streamlit shows as Markdown.
LABELLED = {
    "button",
    "checkbox",
    "color_picker",
    "date_input",
    "download_button",
    "expander",
    "file_uploader",
    "form_submit_button",
    "link_button",
    "metric",
    "multiselect",
    "number_input",
    "page_link",
    "pills",
    "popover",
    "radio",
    "segmented_control",
    "select_slider",
    "selectbox",
    "slider",
    "text_area",
    "text_input",
    "time_input",
    "toggle",
}
NUMBER_CALLS = {"len", "int", "float", "round", "abs"}
# A format spec with a number's presentation type or grouping (`:,`, `:.3f`, `:+.4f`, `:d`)
# raises for a str, so the value is a number.
NUMBER_SPEC = re.compile(r"[,_]|[bcdeEfFgGnoxX%]$")
# Reviewed: names (the last name of the expression, `self.k` -> `k`) that hold numbers
# wherever they are formatted into a message: ids, counts, sizes, ranks, seeds and
# thresholds, parsed by `bounded_int` / `url_int` / `url_float` or computed.
NUMBER_NAMES = {
    "batch_size",
    "bins",
    "colno",
    "count",
    "d_in",
    "d_sae",
    "dim",
    "done",
    "fdr",
    "feature",
    "first",
    "high",
    "index",
    "k",
    "last",
    "limit",
    "lineno",
    "low",
    "max_dose_scales",
    "max_features",
    "max_rank",
    "max_texts",
    "max_value",
    "min_auroc",
    "min_enrichment",
    "min_examples",
    "min_share",
    "min_support",
    "n",
    "n_bins",
    "n_features",
    "n_hidden",
    "n_in",
    "n_out",
    "n_saes",
    "n_shards",
    "n_texts",
    "n_tokens",
    "number",
    "other_share",
    "p_threshold",
    "per_category",
    "per_sae",
    "permutations",
    "quality_per_category",
    "run_id",
    "seed",
    "share",
    "shuffles",
    "size",
    "step",
    "strong_threshold",
    "support",
    "text_id",
    "threads",
    "threshold",
    "token_id",
    "topk",
    "upper",
    "width",
    "workers",
}
# Reviewed: text the project writes itself, Markdown on purpose.
PROJECT_TEXT = {
    "heading": "a page's own heading, from constants and numbers",
    "links": "Markdown links to feature pages, built from feature ids",
    "run_title(run_id)": "'Run **#3**': the ledger id in bold",
    "run_title(saved)": "'Run **#3**': the ledger id in bold",
    "score_title": "the measure's title, from the MEASURES constant",
    "replication_note": "ui.specialist_views.replication_choice: the store's name escaped, a "
    "Methods link",
    "title": "a chart or page title from constants",
    "verdict": "'hurts' or 'does not hurt'",
    "_gb(available.bytes)": "a number of GB",
    "_gb(estimate_source('demo').needed_bytes)": "a number of GB",
    "'s' if len(missing) > 1 else ''": "a plural ending",
    "', '.join(map(str, missing))": "the missing shards' numbers",
    "chosen['conclusion']": "analysis.frequency.conclusion: a sentence of numbers",
    "info.anchor": "a measure's docs anchor, from the MEASURES constant",
    "quality_sample_note(store.saes(), store.meta())": "a sentence of the store's numbers",
    "info.name": "a measure's name, from the MEASURES constant",
}
# Reviewed: (file, value) pairs escaped a line or two above the message.
ESCAPED_ABOVE = {
    ("explorer/errors.py", "shown"): "quoted(value) or markdown_escaped(repr(value))",
    ("explorer/errors.py", "span"): "' from {low} to {high}': numbers",
    ("explorer/live/text.py", "shown"): "quoted(item, 40)",
    ("explorer/ui/params.py", "shown"): "a join of quoted(value, 40)",
    ("explorer/ui/params.py", "more"): "' and {n} more': a number",
}


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def _call_name(node: ast.Call) -> str:
    return getattr(node.func, "id", getattr(node.func, "attr", ""))


def is_number(node: ast.expr) -> bool:
    """True when `node` can only be a number (or is a literal)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Sub | ast.FloorDiv | ast.Div | ast.Pow):
            return True
        return is_number(node.left) and is_number(node.right)
    if isinstance(node, ast.Attribute) and node.attr in ("shape", "dtype", "ndim"):
        return True
    if isinstance(node, ast.Call):
        name = _call_name(node)
        if name in NUMBER_CALLS:
            return True
        if name in ("list", "min", "max") and all(is_number(a) for a in node.args):
            return True
        if name == "max" and isinstance(node.func, ast.Attribute):
            return True  # pandas/numpy reductions: a number
    if isinstance(node, ast.Subscript):
        return is_number(node.value) or _last_name(node) in NUMBER_NAMES
    return _last_name(node) in NUMBER_NAMES


def is_constant(node: ast.expr) -> bool:
    """True for the project's own constants (UPPER_CASE), items and joins of them, and the
    name of a Python type."""
    if isinstance(node, ast.Name):
        return node.id.isupper()
    if isinstance(node, ast.Attribute):
        return node.attr.isupper() or node.attr == "__name__"
    if isinstance(node, ast.Subscript):
        return is_constant(node.value)
    if isinstance(node, ast.Dict):  # e.g. {**RANKINGS, **SCORE_RANKINGS}
        keys = [key for key in node.keys if key is not None]
        return all(is_constant(part) or is_number(part) for part in [*keys, *node.values])
    if isinstance(node, ast.BinOp):
        return is_constant(node.left) and (is_constant(node.right) or is_number(node.right))
    if isinstance(node, ast.Call) and _call_name(node) in ("join", "sorted", "get_args", "map"):
        return all(
            is_constant(arg) or is_number(arg) or (isinstance(arg, ast.Name) and arg.id == "str")
            for arg in node.args
        )
    return False


def is_plain(node: ast.expr) -> bool:
    """A number, a constant or the project's own text: safe even inside a code span."""
    return is_number(node) or is_constant(node) or ast.unparse(node) in PROJECT_TEXT


def is_safe(value: ast.FormattedValue) -> bool:
    node = value.value
    if isinstance(node, ast.Call) and _call_name(node) in ESCAPERS | PROJECT_MARKDOWN:
        return True
    if is_number(node) or is_constant(node) or ast.unparse(node) in PROJECT_TEXT:
        return True
    if value.format_spec is not None:
        spec = "".join(
            part.value for part in value.format_spec.values if isinstance(part, ast.Constant)
        )
        return bool(NUMBER_SPEC.search(spec))
    return False


def error_classes() -> set[str]:
    """`ExplorerError` and every class defined here that derives from it."""
    trees = [ast.parse(path.read_text()) for path in SOURCES]
    names = {"ExplorerError"}
    grown = True
    while grown:
        grown = False
        for tree in trees:
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ClassDef)
                    and node.name not in names
                    and any(_last_name(base) in names for base in node.bases)
                ):
                    names.add(node.name)
                    grown = True
    return names


def markdown_arguments(tree: ast.AST, streamlit: bool, errors: set[str]) -> list[ast.expr]:
    """The arguments of `tree` that end up as Markdown."""
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        raised = isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
        if raised and _call_name(node.exc) in errors:
            found += node.exc.args[:1]
        if not (streamlit and isinstance(node, ast.Call)):
            continue
        name = _call_name(node)
        if isinstance(node.func, ast.Attribute) and name in MARKDOWN_SINKS | LABELLED:
            found += node.args[:1]
            found += [k.value for k in node.keywords if k.arg in ("body", "label")]
        found += [k.value for k in node.keywords if k.arg == "help"]
    return found


def caught_messages(tree: ast.AST, errors: set[str]) -> set[int]:
    """The formatted values (by `id`) that are the message of an `ExplorerError` caught by
    `except SomeExplorerError as error` (`{error}` or `{str(error)}`): escaped where raised."""
    found = set()
    for handler in ast.walk(tree):
        if not (isinstance(handler, ast.ExceptHandler) and handler.name and handler.type):
            continue
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if not all(_last_name(caught) in errors for caught in types):
            continue
        for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
            if isinstance(node, ast.FormattedValue):
                inner = node.value
                if isinstance(inner, ast.Call) and _call_name(inner) == "str" and inner.args:
                    inner = inner.args[0]
                if isinstance(inner, ast.Name) and inner.id == handler.name:
                    found.add(id(node))
    return found


def unescaped_values() -> list[str]:
    """`path:line: expression` for every value formatted into Markdown unescaped."""
    errors = error_classes()
    problems = []
    for path in SOURCES:
        source = path.read_text()
        tree = ast.parse(source)
        streamlit = "import streamlit" in source
        caught = caught_messages(tree, errors)
        for argument in markdown_arguments(tree, streamlit, errors):
            for node in unescaped_nodes(argument):
                if not isinstance(node, ast.JoinedStr):
                    continue
                for value, in_code in values_and_code_spans(node):
                    if id(value) in caught:
                        continue
                    where = f"{path.relative_to(ROOT)}:{value.value.lineno}"
                    if in_code and not is_plain(value.value):  # a backslash shows as itself
                        problems.append(f"{where}: {ast.unparse(value.value)} in a code span")
                    elif (
                        not is_safe(value)
                        and (
                            str(path.relative_to(ROOT)),
                            ast.unparse(value.value),
                        )
                        not in ESCAPED_ABOVE
                    ):
                        problems.append(f"{where}: {ast.unparse(value.value)}")
    return sorted(set(problems))


def unescaped_nodes(node: ast.AST) -> list[ast.AST]:
    """`node` and its descendants, except what is inside a call of an escaping function."""
    if isinstance(node, ast.Call) and _call_name(node) in ESCAPERS:
        return []
    return [node, *(n for child in ast.iter_child_nodes(node) for n in unescaped_nodes(child))]


def values_and_code_spans(node: ast.JoinedStr) -> list[tuple[ast.FormattedValue, bool]]:
    """Each formatted value of an f-string, and whether it sits inside a `code span`."""
    found, ticks = [], 0
    for part in node.values:
        if isinstance(part, ast.Constant):
            ticks += str(part.value).count("`")
        elif isinstance(part, ast.FormattedValue):
            found.append((part, ticks % 2 == 1))
    return found


def test_every_value_formatted_into_markdown_is_escaped() -> None:
    assert unescaped_values() == []


def test_the_static_check_finds_an_unescaped_category() -> None:
    tree = ast.parse(
        "import streamlit as st\n"
        "st.info(f'No feature fires more on {category} texts ({n_texts:,}).')\n"
        "st.info(f'No feature fires more on {markdown_escaped(category)} texts.')\n"
        "raise InputError(f'Need two texts inside {category!r}, got {n}.')\n"
        "raise InputError(f'Need two texts inside {quoted(category)}.')\n"
        "st.markdown(f'It hurts `{markdown_escaped(category)}` texts.')\n"
    )
    arguments = markdown_arguments(tree, True, {"InputError"})
    flagged = [
        (ast.unparse(value.value), in_code)
        for argument in arguments
        for node in ast.walk(argument)
        if isinstance(node, ast.JoinedStr)
        for value, in_code in values_and_code_spans(node)
        if in_code or not is_safe(value)
    ]
    assert flagged == [
        ("category", False),
        ("category", False),
        ("markdown_escaped(category)", True),
    ]


PAYLOAD = "![x](http://127.0.0.1:9/t.png) $x^2$ **b**"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (PAYLOAD, r"\!\[x\]\(http\://127.0.0.1:9/t.png\) \$x^2\$ \*\*b\*\*"),
        ("see www.example.com", r"see www\.example.com"),  # no bare-URL link either
        ("`code` <b>&amp;</b> ~~s~~ a|b #h", r"\`code\` \<b\>\&amp;\</b\> \~\~s\~\~ a\|b \#h"),
        ("_em_ snake_case __init__", r"\_em\_ snake_case \_\_init\_\_"),
        ("back\\slash", "back\\\\slash"),
        ("- item", r"\- item"),
        ("+ item", r"\+ item"),
        ("12. item", r"12\. item"),
        ("line\n# heading\r\n> quote", r"line \# heading \> quote"),
        ("\u202eedoc", r"\\u202eedoc"),
        ("a\u200bb", r"a\\u200bb"),
        ("L2.resid_post", "L2.resid_post"),
        (3, "3"),
    ],
)
def test_markdown_escaped_leaves_no_markup(text, shown) -> None:
    assert markdown_escaped(text) == shown


def test_every_ascii_markup_character_is_escaped_where_it_can_act() -> None:
    """Each of Markdown's and KaTeX's markup characters, alone between spaces, comes back
    behind a backslash; letters, digits and spaces come back as they are."""
    for char in "\\`*_[](){}!$<>#|~&":
        assert markdown_escaped(f"a {char} b") == f"a \\{char} b", char
    assert markdown_escaped("plain words 123") == "plain words 123"


def test_quoted_is_the_escaped_repr_of_the_first_characters() -> None:
    assert quoted(PAYLOAD, 9) == markdown_escaped(repr(PAYLOAD[:9]))
    assert quoted("it's") == markdown_escaped(repr("it's"))


@pytest.mark.parametrize(
    "text",
    ["![x](http://h/t.png) $x^2$ **b**", "a\\b_c", "L2.resid_post", "1. item", "C:\\p\\[x]"],
)
def test_plain_text_undoes_the_escaping_for_the_terminal(text) -> None:
    assert plain_text(markdown_escaped(text)) == text


def test_the_cli_prints_messages_without_markdown_escapes(tmp_path, capsys) -> None:
    missing = tmp_path / "no [such] store (x).duckdb"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "\\[" not in err and "\\(" not in err
