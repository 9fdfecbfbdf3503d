"""The Hugging Face hub side of the registry source: SAELens registry look-ups, a quick probe
of whether the hub answers, and the offline switch that makes a cold cache fail in a second
with a message naming the offline alternatives instead of hanging on retries.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal, TypeVar

import httpx2
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import get_session
from sae_lens.loading.pretrained_saes_directory import (
    PretrainedSAELookup,
    get_pretrained_saes_directory,
)

from explorer.errors import SourceError, markdown_escaped

OFFLINE_ALTERNATIVES = (
    "the `demo` source (the bundled demo model and SAEs, always available), "
    "SAELens folders on disk (`local:PATH[,PATH...][@MODEL]`), or a TopK checkpoint "
    "(`topk:CHECKPOINT@MODEL#HOOK`); MODEL may be `demo` or `demo:tiny`"
)
HUB_PROBE_TIMEOUT_S = 3.0
HubState = Literal["online", "unreachable", "disabled"]
T = TypeVar("T")


def list_registry_releases(model_name: str | None = None) -> list[str]:
    """SAELens's pretrained releases (read from its bundled YAML, no network), by name."""
    directory = get_pretrained_saes_directory()
    return sorted(
        release
        for release, lookup in directory.items()
        if model_name is None or lookup.model == model_name
    )


def _registry_lookup(release: str, sae_ids: tuple[str, ...]) -> PretrainedSAELookup:
    """The registry entry of `release`; unknown names raise SourceError with close matches."""
    directory = get_pretrained_saes_directory()
    if release not in directory:
        closest = difflib.get_close_matches(release, directory, n=5, cutoff=0.5)
        raise SourceError(
            f"Unknown SAELens release {markdown_escaped(repr(release))}. Closest: "
            f"{markdown_escaped(', '.join(closest) or 'none')}. "
            f"See list_registry_releases() for all {len(directory)} releases."
        )
    lookup = directory[release]
    valid_ids = list(lookup.saes_map)
    for sae_id in sae_ids:
        if sae_id not in lookup.saes_map:
            closest = difflib.get_close_matches(sae_id, valid_ids, n=5, cutoff=0.5)
            raise SourceError(
                f"Unknown sae_id {markdown_escaped(repr(sae_id))} in the release "
                f"{markdown_escaped(release)}. "
                f"Closest: {markdown_escaped(', '.join(closest) or 'none')}. "
                f"Its {len(valid_ids)} ids include: {markdown_escaped(', '.join(valid_ids[:5]))}."
            )
    return lookup


# --------------------------------------------------------------------------- the hub


def _hub_state() -> HubState:
    """Whether hub downloads can be tried: switched off by the user, unreachable, or online."""
    if _HUB_OFFLINE.user_setting():
        return "disabled"
    return "online" if _hub_reachable() else "unreachable"


def _hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the hub endpoint answers (any HTTP status) within about `timeout_s`.

    The probe runs in a daemon thread so that a hanging DNS lookup, which the HTTP timeout
    does not cover, cannot stall the caller.
    """
    outcome: list[bool] = []
    done = threading.Event()

    def probe() -> None:
        try:
            get_session().head(hf_constants.ENDPOINT, timeout=timeout_s)
            outcome.append(True)
        except (OSError, httpx2.HTTPError):
            outcome.append(False)
        finally:
            done.set()

    threading.Thread(target=probe, name="hub-probe", daemon=True).start()
    done.wait(timeout_s + 1)
    return outcome == [True]


def _from_hub(load: Callable[[], T], what: str, hub_state: HubState) -> T:
    """Run a hub download; without the hub it reads the local cache only, so it fails fast.

    huggingface_hub retries unreachable hosts for about 20 s per file; in offline mode it
    answers from the cache or raises at once.
    """
    try:
        if hub_state == "online":
            return load()
        with _HUB_OFFLINE.forced():
            return load()
    except (OSError, httpx2.HTTPError) as error:
        if hub_state == "online":
            problem = f"downloading it from the Hugging Face hub failed ({error})"
        else:
            reason = (
                "the hub is switched off (HF_HUB_OFFLINE)"
                if hub_state == "disabled"
                else f"the Hugging Face hub ({hf_constants.ENDPOINT}) cannot be reached"
            )
            problem = f"{reason} and it is not in the local cache ({hf_constants.HF_HUB_CACHE})"
        raise SourceError(
            f"Cannot load {markdown_escaped(what)}: {markdown_escaped(problem)}. Offline "
            f"alternatives: {OFFLINE_ALTERNATIVES}."
        ) from error
    except (ValueError, KeyError) as error:
        raise SourceError(
            f"Cannot load {markdown_escaped(what)}: {markdown_escaped(error)}"
        ) from error


class _HubOfflineSwitch:
    """Puts huggingface_hub into offline mode while any load needs it (thread-safe).

    transformers and SAELens both download through huggingface_hub, which reads
    `constants.HF_HUB_OFFLINE` on every request. The switch is only forced on when the hub
    is unreachable, so other threads' downloads lose nothing while it is on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._user_setting = False

    def user_setting(self) -> bool:
        with self._lock:
            return self._user_setting if self._depth else hf_constants.HF_HUB_OFFLINE

    @contextmanager
    def forced(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._user_setting = hf_constants.HF_HUB_OFFLINE
                hf_constants.HF_HUB_OFFLINE = True
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    hf_constants.HF_HUB_OFFLINE = self._user_setting


_HUB_OFFLINE = _HubOfflineSwitch()


# --------------------------------------------------------------------------- TopK checkpoints
