"""Per-request hooks on a model that many sessions share.

The app keeps one model per source (`st.cache_resource`) and every session's thread runs
forward passes on it. Adding a hook per request would leak: a hook attached by one thread
fires in every other thread's forward until it is removed. So each SAE hook point of a
loaded model gets one permanent hook at load time (`install`), and that hook only dispatches
to the functions the *current* context registered with `using(...)` (a `ContextVar`: each
thread, hence each Streamlit session, has its own). With nothing registered a hook returns
None and the activation passes unchanged, so builds and plain forwards are unaffected.

This module owns that mechanism only; what the functions do (capture an activation, ablate or
steer a feature) belongs to `explorer.live.text` and `explorer.live.interventions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

# activation at the hook -> replacement, or None to leave it unchanged
RequestHook = Callable[[torch.Tensor], torch.Tensor | None]

_REQUEST_HOOKS: ContextVar[Mapping[str, RequestHook] | None] = ContextVar(
    "explorer_request_hooks", default=None
)


def _dispatch(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor | None:
    functions = _REQUEST_HOOKS.get()
    if not functions:
        return None
    function = functions.get(hook.name)
    return None if function is None else function(activation)


def install(model: HookedTransformer, hook_names: Iterable[str]) -> None:
    """Give each hook point one permanent dispatching hook (idempotent). Call at load time,
    before the model is shared."""
    for name in sorted(set(hook_names)):
        point = model.hook_dict[name]
        if not any(handle.user_hook is _dispatch for handle in point.fwd_hooks):
            point.add_hook(_dispatch, is_permanent=True)


@contextmanager
def using(functions: Mapping[str, RequestHook]) -> Iterator[None]:
    """Run the forwards inside the block with `functions` at their hook points, in this
    context only; other threads' forwards on the same model do not see them."""
    token = _REQUEST_HOOKS.set(dict(functions))
    try:
        yield
    finally:
        _REQUEST_HOOKS.reset(token)
