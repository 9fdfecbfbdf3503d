"""User-facing errors of the explorer.

Every error a user can cause (a bad corpus file, an unknown SAE, a feature id out of range,
no network) is raised as an `ExplorerError` subclass whose message says what went wrong and
what to do instead. The CLI prints the message and exits with status 2; the app shows it with
`st.error`. Internal invariants use `assert`, never these classes. `check_finite` is the
one check of numeric settings that several settings dataclasses share; `bounded_int` the one
parser and range check of every whole number a user gives (typed, linked or passed to a
query); `quoted` is how a message quotes what the user typed.
"""

import math
import re
from numbers import Integral, Real

# What would start Markdown in a quoted value: links and images ([text](url)), code spans,
# maths, and the escape character itself. (A bare URL still shows as a link to itself.)
_MARKDOWN_ACTIVE = re.compile(r"([\\`\[\]$])")


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
            raise InputError(f"{name} must be a finite number, got {value!r}.")


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
        raise InputError(f"{name} must be an integer{span}; {shown} is not one.")
    if (low is not None and number < low) or (high is not None and number > high):
        raise InputError(f"{name} must be an integer{span}; {shown} is out of range.")
    return number


def quoted(value: object, limit: int = 80) -> str:
    """A user's value as a message quotes it: the repr of its first `limit` characters, with
    the characters that start Markdown links, images, code or maths backslash-escaped. The
    app shows messages as Markdown (`st.error`, `st.warning`), so a typed or linked value
    such as `![x](https://...)` shows as typed instead of loading an image."""
    text = value if isinstance(value, str) else str(value)
    return markdown_escaped(repr(text[:limit]))


def markdown_escaped(text: str) -> str:
    """`text` with the characters that start Markdown links, images, code or maths
    backslash-escaped, for a message that shows a path or value the user gave."""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", text)
