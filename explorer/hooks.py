"""TransformerLens hook-name conventions the explorer relies on.

Owns reading a hook name: which block it sits in (`blocks.8.hook_resid_pre` -> 8), and, for
residual-stream hooks, the block boundary where that residual is the stream entering a
block, so a forward can stop there (`stop_at_layer`) to read it or resume there
(`start_at_layer`) with a replacement, with no hooks on the shared model. It loads nothing.
"""

from __future__ import annotations

import re

# Residual-stream hooks and their boundary relative to their block's index.
_RESIDUAL_OFFSET = {"hook_resid_pre": 0, "hook_resid_post": 1}
_BLOCK_HOOK = re.compile(r"blocks\.(\d+)\.(.+)")


def block_of(hook_name: str) -> int | None:
    """The index of the block a hook sits in, or None for hooks outside the blocks."""
    match = _BLOCK_HOOK.fullmatch(hook_name)
    return int(match.group(1)) if match else None


def residual_boundary(hook_name: str) -> int | None:
    """For `blocks.L.hook_resid_pre` L, for `blocks.L.hook_resid_post` L + 1: the boundary
    whose incoming residual stream equals the hook's activation. None for other hooks."""
    match = _BLOCK_HOOK.fullmatch(hook_name)
    if match is None or match.group(2) not in _RESIDUAL_OFFSET:
        return None
    return int(match.group(1)) + _RESIDUAL_OFFSET[match.group(2)]
