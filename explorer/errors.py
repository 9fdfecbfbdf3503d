"""User-facing errors of the explorer.

Every error a user can cause (a bad corpus file, an unknown SAE, a feature id out of range,
no network) is raised as an `ExplorerError` subclass whose message says what went wrong and
what to do instead. The CLI prints the message and exits with status 2; the app shows it with
`st.error`. Internal invariants use `assert`, never these classes. `check_finite` is the
one check of numeric settings that several settings dataclasses share; `bounded_int` the one
parser and range check of every whole number a user gives (typed, linked or passed to a
query); `quoted` is how a message quotes what the user typed. Untrusted text is escaped
here too: `markdown_escaped` before Markdown, `csv_safe` before a CSV export.
"""

import math
import re
import unicodedata
from numbers import Integral, Real

import pandas as pd

# What Markdown (CommonMark + GitHub's tables and strikethrough), Streamlit's directives and
# KaTeX treat as markup anywhere in a line: the escape character, emphasis, code, links and
# images, maths, HTML and entities, headings, tables, strikethrough; `_` only where it can
# open or close emphasis (not inside a word, as in `snake_case`). CommonMark takes a
# backslash before any ASCII punctuation as that character, literally. GitHub's bare-URL
# links take their text as written, escapes included, so the `:` of `://` and the `.` of
# `www.` are escaped too: a URL shows as text, not as a link.
_MARKDOWN_ACTIVE = re.compile(
    r"([\\`*\[\](){}!$<>#|~&]|(?<![^\W_])_|_(?![^\W_])|:(?=//)|(?<=\bwww)\.)", re.IGNORECASE
)
# What is markup only at the start of a line: list items, setext underlines, ordered lists.
_LINE_START = re.compile(r"^(?:([-+=])|(\d+)\.)")
_LINE_BREAK = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")


class ExplorerError(Exception):
    """An error caused by user input or the environment, with an actionable message."""


class CorpusError(ExplorerError):
    """A corpus file or rule set cannot be read; the message names the file, row and column."""


class SourceError(ExplorerError):
    """A model or SAE source cannot be loaded (unknown name, no network, bad checkpoint)."""


class StoreError(ExplorerError):
    """A feature store cannot be built, opened or queried (bad path, corrupted file)."""


class InputError(ExplorerError):
    """A value typed or chosen by the user is out of range (feature id, text length, scale)."""


def check_finite(settings: object, names: tuple[str, ...]) -> None:
    """InputError unless each named attribute of `settings` is a finite real number (not a
    bool)."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise InputError(
                f"{markdown_escaped(name)} must be a finite number, got "
                f"{markdown_escaped(repr(value))}."
            )


INT_CAP = 10**18


def decimal_int(text: str) -> int | None:
    """`int(text)` when `text` is ASCII digits only (not '٣' or '²', which `int` or
    `str.isdecimal` would take), else None. Numbers of more than 18 digits come back as
    `INT_CAP` (10**18), above every id, count and position here; `int` itself would refuse
    strings of over 4,300 digits."""
    if not (text.isascii() and text.isdigit()):
        return None
    return INT_CAP if len(text.lstrip("0")) > 18 else int(text)


def bounded_int(
    name: str, value: object, low: int | None, high: int | None = None, *, text: bool = True
) -> int:
    """`value` as an int from `low` to `high` (None: no bound that side), or an `InputError`
    in the one wording every whole-number setting uses: "{name} must be an integer from {low}
    to {high}; {value} is not one." (or "... is out of range."). `value` is an int (numpy ints
    too, not a bool) or text: ASCII digits with an optional leading minus and surrounding
    spaces; unicode digits, signs elsewhere, decimals, exponents and empty text are refused.
    With `text=False` (a library call, where a str is a mistake, not typed input) text is
    refused too."""
    span = {
        (True, True): f" from {low} to {high}",
        (True, False): f" of at least {low}",
        (False, True): f" of at most {high}",
        (False, False): "",
    }[low is not None, high is not None]
    if isinstance(value, str) and text:
        stripped = value.strip()
        digits = decimal_int(stripped.removeprefix("-"))
        number = None if digits is None else (-digits if stripped.startswith("-") else digits)
        shown = quoted(value, 40)
    else:
        is_int = not isinstance(value, bool) and isinstance(value, Integral)
        number = int(value) if is_int else None
        shown = str(number) if is_int else markdown_escaped(repr(value)[:40])
    if number is None:
        raise InputError(f"{markdown_escaped(name)} must be an integer{span}; {shown} is not one.")
    if (low is not None and number < low) or (high is not None and number > high):
        raise InputError(
            f"{markdown_escaped(name)} must be an integer{span}; {shown} is out of range."
        )
    return number


def quoted(value: object, limit: int = 80) -> str:
    """A user's value as a message quotes it: the repr of its first `limit` characters,
    `markdown_escaped`. The
    app shows messages as Markdown (`st.error`, `st.warning`), so a typed or linked value
    such as `![x](https://...)` shows as typed instead of loading an image."""
    text = value if isinstance(value, str) else str(value)
    return markdown_escaped(repr(text[:limit]))


def markdown_escaped(text: object) -> str:
    """`text` shown literally by Markdown: every character Markdown or KaTeX reads as markup
    (backslash, backtick, `*_[](){}!$<>#|~&`, and `-`, `+`, `=` or `1.` at the start)
    backslash-escaped, line breaks as spaces, and invisible characters (control and format
    characters, such as U+202E which reverses the text after it) as `\\u202e`. The only way
    text from the corpus, a link or a user enters a Markdown message (`st.error`,
    `st.markdown`, `help=`, the message of an `ExplorerError`)."""
    flat = _LINE_BREAK.sub(" ", str(text))
    visible = "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in ("Cc", "Cf") else char
        for char in flat
    )
    escaped = _MARKDOWN_ACTIVE.sub(r"\\\1", visible)
    return _LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\.", escaped)


_ESCAPED_PUNCTUATION = re.compile(r"\\([!-/:-@\[-`{-~])")


def plain_text(message: object) -> str:
    """A message as a terminal shows it: the backslash escapes `markdown_escaped` put before
    punctuation removed (CommonMark reads them the same way), invisible characters still
    shown as `\\u202e`. The CLI prints every `ExplorerError` through it."""
    return _ESCAPED_PUNCTUATION.sub(r"\1", str(message))


# A spreadsheet reads a cell starting with one of these as a formula (or, for tab and
# carriage return, a cell that may be trimmed down to one): OWASP's "CSV injection".
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell that a spreadsheet would read as a formula (starting with
    `=`, `+`, `-`, `@`, a tab or a carriage return) prefixed with `'`, as OWASP advises, so
    a label or a corpus token opens as the text it is; numbers are left alone. Every CSV the
    explorer exports goes through it."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            cells = safe[column]
            formula = cells.map(
                lambda cell: isinstance(cell, str) and cell.startswith(_FORMULA_START)
            )
            safe.loc[formula.astype(bool), column] = "'" + cells[formula.astype(bool)]
    return safe
