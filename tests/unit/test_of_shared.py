"""`cached.of_shared`: a page's view of a shared result is computed once per object and name,
handed out so that no caller's change reaches the kept frame, and forgotten with the object."""

from __future__ import annotations

import gc

import pandas as pd

from explorer.ui import cached


class Shared:
    """Stands for a `Specialists` result every session reads (weak-referenceable)."""


def test_computed_once_per_object_and_name_and_forgotten_with_the_object():
    calls = []

    def compute(tag: str) -> pd.DataFrame:
        calls.append(tag)
        return pd.DataFrame({"x": [1, 2]})

    first, second = Shared(), Shared()
    one = cached.of_shared(first, "view", lambda: compute("a"))
    again = cached.of_shared(first, "view", lambda: compute("b"))
    cached.of_shared(first, "other view", lambda: compute("c"))
    cached.of_shared(second, "view", lambda: compute("d"))
    assert calls == ["a", "c", "d"]
    assert again.equals(one)
    one.loc[0, "x"] = 99  # a caller's change stays with its copy
    one["y"] = 0
    assert cached.of_shared(first, "view", lambda: compute("e")).to_dict("list") == {"x": [1, 2]}
    kept = {key for key in cached._OF_SHARED if key[0] == id(first)}
    assert len(kept) == 2
    del first
    gc.collect()
    assert not kept & set(cached._OF_SHARED)
    assert calls == ["a", "c", "d"]
