"""Sidebar settings that live in the URL, so a what-if view can be shared as a link.

Owns the two-way binding between sidebar widgets and `st.query_params`: on a session's
first run of a page each widget starts from its query parameter (validated; a bad value
shows a `st.warning` naming the parameter and falls back to the default), and after every
run the parameters hold the current non-default values. Linked values are read in the
project's words: whole numbers through `explorer.errors.bounded_int`, other numbers as ASCII
decimals (no unicode digits, no nan or inf), and a parameter the link repeats is warned about
(`url_value`) instead of silently taking its last value. `specialist_settings_sidebar` is
the shared sidebar of the specialist pages (one parameter per `SpecialistSettings` field,
same name); the `url_*` helpers bind one page-specific widget each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from functools import partial
from typing import Any, TypeVar

import streamlit as st

from explorer.analysis.specialists import MEASURE_INFO, MEASURES, SpecialistSettings
from explorer.errors import InputError, bounded_int, markdown_escaped, quoted
from explorer.methods_doc import methods_link

T = TypeVar("T")
KEY_PREFIX = "url_"
# Ranges of the numeric settings, read from the dataclass (None: unbounded); widgets use them
# and a URL value outside is refused.
BOUNDS: dict[str, tuple[float | None, float | None]] = SpecialistSettings.bounds()


def _key(param: str) -> str:
    return KEY_PREFIX + param


def url_value(param: str) -> str | None:
    """The link's value of `param` (None when absent). A parameter given more than once
    (`?feature=1&feature=2`) shows a warning naming its values and the one used, the last."""
    values = st.query_params.get_all(param)
    if len(values) > 1:
        shown = ", ".join(quoted(value, 40) for value in values[:5])
        more = f" and {len(values) - 5} more" if len(values) > 5 else ""
        st.warning(
            f"The link gives {markdown_escaped(param)} {len(values)} times "
            f"({shown}{more}); using the last, "
            f"{quoted(values[-1], 40)}."
        )
    return values[-1] if values else None


def _start_from_url(param: str, default: T, parse: Callable[[str], T]) -> None:
    """Put the parameter's value (or `default`) into the widget's state, once per session."""
    key = _key(param)
    if key in st.session_state:
        return
    raw = url_value(param)
    if raw is None:
        st.session_state[key] = default
        return
    try:
        st.session_state[key] = parse(raw)
        return
    except InputError as error:  # its message is escaped where it is raised
        st.warning(
            f"Ignored {markdown_escaped(param)}={quoted(raw)} from the link: "
            f"{error} Using the default, {markdown_escaped(repr(default))}."
        )
    except ValueError as error:
        st.warning(
            f"Ignored {markdown_escaped(param)}={quoted(raw)} from the link: "
            f"{markdown_escaped(error)} Using the default, {markdown_escaped(repr(default))}."
        )
    st.session_state[key] = default


def _to_url(param: str, value: Any, default: Any) -> None:
    if value == default:
        if param in st.query_params:
            del st.query_params[param]
    else:
        st.query_params[param] = str(value)


def parse_float(raw: str, name: str = "The value") -> float:
    """A linked number: ASCII digits with an optional sign, point and exponent (`0.5`,
    `-2`, `1e-3`); unicode digits, nan, inf and overflowing values are refused."""
    text = raw.strip()
    if text.isascii() and len(text) <= 40:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None and math.isfinite(value):
            return value
    raise InputError(
        f"{markdown_escaped(name)} must be a number such as 0.5; {quoted(raw, 40)} is not one."
    )


def _parser(default: Any, name: str = "The value") -> Callable[[str], Any]:
    """Parse a parameter to the type of its default (numbers must be plain ASCII decimals)."""
    if isinstance(default, bool):
        return str
    if isinstance(default, int):
        return partial(bounded_int, name, low=None, high=None)
    if isinstance(default, float):
        return partial(parse_float, name=name)
    return str


def _field_parser(name: str, defaults: SpecialistSettings) -> Callable[[str], Any]:
    """Parse one field and check it alone (the other fields at their defaults)."""
    parse = _parser(getattr(defaults, name), name)
    low, high = BOUNDS.get(name, (None, None))

    def parse_field(raw: str) -> Any:
        value = parse(raw)
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{name} must lie in [{low}, {high if high is not None else 'inf'}].")
        replace(defaults, **{name: value})
        return value

    return parse_field


def _bounds(name: str) -> dict[str, Any]:
    low, high = BOUNDS[name]
    return {"min_value": low, "max_value": high}


def specialist_settings_sidebar() -> SpecialistSettings:
    """The specialist measure and its thresholds, in the sidebar and the URL."""
    defaults = SpecialistSettings()
    for name in SpecialistSettings.field_names():
        _start_from_url(name, getattr(defaults, name), _field_parser(name, defaults))
    with st.sidebar:
        st.subheader("Specialists")
        measure = st.session_state[_key("measure")]
        st.selectbox(
            "Measure",
            list(MEASURES),
            format_func=MEASURES.__getitem__,
            key=_key("measure"),
            help=MEASURE_INFO[measure].help if measure in MEASURE_INFO else None,
        )
        st.radio(
            "Contrast each category with",
            ["family", "corpus"],
            format_func={"family": "its family", "corpus": "the whole corpus"}.get,
            key=_key("contrast"),
            horizontal=True,
            help="Its family: a prose category against the other prose texts, an operation "
            "against the other arithmetic texts. " + methods_link("families"),
        )
        st.number_input(
            "Minimum support (texts)",
            step=1,
            key=_key("min_support"),
            **_bounds("min_support"),
            help="Active texts of the category a cell needs to be tested (strong texts for "
            "the notebook score). " + methods_link("support"),
        )
        st.number_input(
            "Minimum selectivity",
            step=0.05,
            key=_key("min_selectivity"),
            **_bounds("min_selectivity"),
            help=MEASURE_INFO["selectivity"].help,
        )
        st.number_input(
            "FDR (Benjamini-Hochberg)",
            step=0.01,
            format="%.4f",
            key=_key("fdr"),
            **_bounds("fdr"),
            help="Selectivity, AUROC and enrichment specialists need a q-value at most this. "
            + methods_link("fdr"),
        )
        with st.expander("Notebook score"):
            st.radio(
                "Strong threshold is",
                ["relative", "absolute"],
                key=_key("strong_mode"),
                horizontal=True,
                help="Relative: a fraction of the feature's largest text activation.",
            )
            st.number_input(
                "Strong threshold",
                step=0.05,
                format="%.3f",
                key=_key("strong_threshold"),
                **_bounds("strong_threshold"),
                help="A text is strong when its activation (mean over its tokens) reaches it.",
            )
            st.number_input(
                "Minimum score (strong inside - outside)",
                step=1,
                key=_key("min_score"),
                **_bounds("min_score"),
                help=MEASURE_INFO["score"].help,
            )
        with st.expander("Dominance"):
            st.slider("Category share above", step=0.05, key=_key("share"), **_bounds("share"))
            st.slider(
                "Every other category below",
                step=0.05,
                key=_key("other_share"),
                **_bounds("other_share"),
            )
        with st.expander("AUROC, enrichment and the test"):
            st.slider("Minimum AUROC", step=0.01, key=_key("min_auroc"), **_bounds("min_auroc"))
            st.number_input(
                "Minimum enrichment",
                step=0.5,
                key=_key("min_enrichment"),
                **_bounds("min_enrichment"),
            )
            st.radio(
                "Test",
                ["fisher", "chi2"],
                format_func={"fisher": "Fisher exact (one-sided)", "chi2": "chi-squared"}.get,
                key=_key("test"),
                horizontal=True,
            )
        with st.expander("Controls"):
            st.number_input(
                "Label permutations (chance baseline)",
                step=10,
                key=_key("permutations"),
                **_bounds("permutations"),
                help="Shuffles of each family's labels; the baseline is computed once per "
                "store and settings. " + methods_link("chance-baseline"),
            )
            st.number_input("Permutation seed", step=1, key=_key("seed"), **_bounds("seed"))
            st.slider(
                "Token detector: top token's share of its active tokens",
                step=0.05,
                key=_key("token_share"),
                **_bounds("token_share"),
                help=methods_link("token-confound"),
            )
            st.slider(
                "Token detector: AUROC margin",
                step=0.01,
                key=_key("token_margin"),
                **_bounds("token_margin"),
            )
            st.radio(
                "Score operations at",
                ["text", "equals"],
                format_func={"text": "the whole text", "equals": "the = tokens"}.get,
                key=_key("operation_position"),
                horizontal=True,
                help="Arithmetic texts: score the operation family with each text's "
                "activation at its = tokens, so operator-token detectors stop passing as "
                "operation specialists. " + methods_link("operation-position"),
            )
    values = {name: st.session_state[_key(name)] for name in SpecialistSettings.field_names()}
    try:
        settings = SpecialistSettings(**values)
    except InputError as error:
        st.warning(f"{error} Using the default thresholds until this is fixed.")
        return defaults
    for name, default in asdict(defaults).items():
        _to_url(name, values[name], default)
    return settings


def url_selectbox(
    label: str, param: str, options: Sequence[str], default: str, **kwargs: Any
) -> str:
    """A sidebar selectbox bound to `param`; an unknown value falls back to `default`."""

    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"choose one of {', '.join(options)}.")
        return raw

    _start_from_url(param, default, parse)
    if st.session_state[_key(param)] not in options:  # e.g. another store was opened
        st.session_state[_key(param)] = default
    value = st.sidebar.selectbox(label, list(options), key=_key(param), **kwargs)
    _to_url(param, value, default)
    return value


def url_radio(label: str, param: str, options: dict[str, str], default: str) -> str:
    """A sidebar radio over `options` (value -> label) bound to `param`."""

    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"choose one of {', '.join(options)}.")
        return raw

    _start_from_url(param, default, parse)
    value = st.sidebar.radio(label, list(options), format_func=options.get, key=_key(param))
    _to_url(param, value, default)
    return value


def url_int(label: str, param: str, default: int, low: int, high: int) -> int:
    """A sidebar whole number in [low, high] bound to `param`."""

    def parse(raw: str) -> int:
        return bounded_int(param, raw, low, high)

    _start_from_url(param, default, parse)
    value = st.sidebar.number_input(label, min_value=low, max_value=high, step=1, key=_key(param))
    _to_url(param, value, default)
    return int(value)


def url_float(
    label: str, param: str, default: float, low: float, high: float, **kwargs: Any
) -> float:
    """A sidebar number in [low, high] bound to `param`."""

    def parse(raw: str) -> float:
        value = parse_float(raw, param)
        if not low <= value <= high:
            raise InputError(
                f"{markdown_escaped(param)} must be a number from {low:g} to "
                f"{high:g}; got {value:g}."
            )
        return value

    _start_from_url(param, float(default), parse)
    value = st.sidebar.number_input(
        label, min_value=float(low), max_value=float(high), key=_key(param), **kwargs
    )
    _to_url(param, value, float(default))
    return float(value)


def url_text(label: str, param: str, default: str, check: Callable[[str], T], **kwargs) -> T:
    """A sidebar text input bound to `param`, returning `check(text)`; text that `check`
    refuses (with `InputError`) shows a warning and `check(default)` is used."""

    def parse(raw: str) -> str:
        check(raw)
        return raw

    _start_from_url(param, default, parse)
    text = st.sidebar.text_input(label, key=_key(param), max_chars=500, **kwargs)
    try:
        checked = check(text)
    except InputError as error:
        st.warning(f"{error} Using {markdown_escaped(repr(default))} until this is fixed.")
        return check(default)
    _to_url(param, text, default)
    return checked


def url_text_query(label: str, param: str, max_chars: int, **kwargs: Any) -> str:
    """A text input on the page bound to `param`: it starts from the link's value (cut to
    `max_chars`), and the URL follows what is typed (no parameter when empty)."""
    key = _key(param)
    if key not in st.session_state:
        st.session_state[key] = (url_value(param) or "")[:max_chars]
    text = st.text_input(label, key=key, max_chars=max_chars, **kwargs)
    _to_url(param, text, "")
    return text
