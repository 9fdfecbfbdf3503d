"""Deployment settings, read from environment variables.

Owns the names, defaults and validation of the variables a deployment sets:

- `EXPLORER_CACHE_DIR` (default `cache`): where generated files go; the default store is
  `<cache dir>/demo.duckdb`.
- `EXPLORER_STORE` (default `<cache dir>/demo.duckdb`): the store a session starts on, e.g. a
  prebuilt store on a read-only deployment.
- `EXPLORER_SOURCE` (default `demo`): the source a session starts on, as `Source.parse` reads.
- `EXPLORER_PUBLIC_DEMO` (`1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, default off): the
  public demo mode: source and store fixed to the two above, no saved labels or ablation
  runs, typed text of at most `PUBLIC_TEXT_CHARS` characters, at most `PUBLIC_LIVE_SLOTS`
  live model runs at once, and corpus runs within `PUBLIC_LIVE_LIMITS`.

Streamlit's `.streamlit/config.toml` cannot carry these: Streamlit checks every option
against its own list and drops an unknown one with the warning '"explorer.publicDemo" is not
a valid config option' (`streamlit.config._set_option`), so the app could never read it.
`.streamlit/secrets.toml` (and Community Cloud's "Secrets" box, which writes that file) can:
at startup Streamlit copies root-level string and number secrets into `os.environ`, so
`EXPLORER_PUBLIC_DEMO = "1"` there works like the environment variable; a TOML boolean
(`= true`) is not copied, and `explorer.ui.resources.app_settings` reads it from
`st.secrets` instead. A bad value raises `SettingsError` naming the variable and the
accepted values. Parsing is cached per distinct set of raw values, so the variables are read
on each call (cheap) but parsed once. No streamlit here.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from explorer.errors import ExplorerError, markdown_escaped

CACHE_DIR_VAR = "EXPLORER_CACHE_DIR"
STORE_VAR = "EXPLORER_STORE"
SOURCE_VAR = "EXPLORER_SOURCE"
PUBLIC_DEMO_VAR = "EXPLORER_PUBLIC_DEMO"
VARIABLES = (CACHE_DIR_VAR, STORE_VAR, SOURCE_VAR, PUBLIC_DEMO_VAR)
DEFAULT_CACHE_DIR = "cache"
DEFAULT_SOURCE = "demo"
DEMO_STORE_NAME = "demo.duckdb"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})
PUBLIC_TEXT_CHARS = 500  # typed text in the public demo (MAX_TEXT_CHARS elsewhere)
PUBLIC_LIVE_SLOTS = 2  # live model runs at once in the public demo
LIVE_WAIT_S = 2.0  # how long a live run waits for a slot before "busy, try again"
MAX_PATH_CHARS = 4096


@dataclass(frozen=True)
class LiveLimits:
    """How big one corpus run (an ablation over every text) may be; the public demo's are
    `PUBLIC_LIVE_LIMITS`, chosen so two at once (`PUBLIC_LIVE_SLOTS`) stay under 1.5 GB RSS
    (bench/README.md). `explorer.live.runs.run_corpus` enforces them."""

    max_features: int = 32
    """Features one intervention changes."""
    max_dose_scales: int = 6
    """Scales of the dose-response (each is one more pass over the corpus)."""
    corpus_batch_size: int = 32
    """Texts per forward pass: the logits of a batch are texts x 128 x 4096 floats."""
    heap_mmap_bytes: int | None = None
    """glibc's mmap threshold (`mallopt(M_MMAP_THRESHOLD)`) while live runs go; None leaves
    the allocator as it is. glibc's default threshold grows up to 32 MB with the first large
    freed block, after which the per-batch tensors are carved from heaps it keeps: a dose-
    response run over the demo corpus held about 1 GB that way although its tensors need
    about 140 MB at any time. A fixed threshold gives blocks this big back when freed."""


PUBLIC_LIVE_LIMITS = LiveLimits(
    max_features=16, max_dose_scales=6, corpus_batch_size=8, heap_mmap_bytes=256 * 1024
)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


@cache
def bound_heap(threshold: int) -> bool:
    """Set glibc's mmap threshold to `threshold` bytes, once per process (see
    `LiveLimits.heap_mmap_bytes`); False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


class SettingsError(ExplorerError):
    """An environment variable (or secret) of the deployment has a value it cannot take."""


@dataclass(frozen=True)
class Settings:
    """What a deployment configures; `from_environ` reads it."""

    cache_dir: Path = Path(DEFAULT_CACHE_DIR)
    store: str = f"{DEFAULT_CACHE_DIR}/{DEMO_STORE_NAME}"
    source: str = DEFAULT_SOURCE
    public_demo: bool = False

    @property
    def live_limits(self) -> LiveLimits | None:
        """Bounds on one corpus run; None: no bounds (a researcher's own machine)."""
        return PUBLIC_LIVE_LIMITS if self.public_demo else None

    @property
    def live_slots(self) -> int | None:
        """Live model runs allowed at once; None: no limit (a researcher's own machine)."""
        return PUBLIC_LIVE_SLOTS if self.public_demo else None

    def text_chars(self, default: int) -> int:
        """The longest typed text a page accepts, given its own limit `default`."""
        return min(default, PUBLIC_TEXT_CHARS) if self.public_demo else default


def from_environ(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings named by `environ` (default `os.environ`); a bad value: SettingsError."""
    environ = os.environ if environ is None else environ
    return _parse(tuple(environ.get(name) for name in VARIABLES))


@cache
def _parse(raw: tuple[str | None, ...]) -> Settings:
    cache_dir, store, source, public_demo = raw
    cache_path = Path(_path(CACHE_DIR_VAR, cache_dir) or DEFAULT_CACHE_DIR)
    return Settings(
        cache_dir=cache_path,
        store=_path(STORE_VAR, store) or str(cache_path / DEMO_STORE_NAME),
        source=(source or "").strip() or DEFAULT_SOURCE,
        public_demo=parse_flag(PUBLIC_DEMO_VAR, public_demo),
    )


def parse_flag(name: str, value: str | bool | None) -> bool:
    """`1/true/yes/on` -> True, `0/false/no/off` or unset -> False; else SettingsError."""
    if value is None or isinstance(value, bool):
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(
        f"{markdown_escaped(name)}={markdown_escaped(repr(str(value)[:40]))} is not a yes/no "
        "value: use one of "
        f"{', '.join(sorted(TRUE_WORDS))} (on) or {', '.join(sorted(FALSE_WORDS - {''}))} (off)."
    )


def _path(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_PATH_CHARS or "\x00" in value:
        raise SettingsError(
            f"{markdown_escaped(name)} is not a usable path ({len(value):,} characters)."
        )
    return value.strip()
