"""Per-feature charts draw at most MAX_MARKS marks, keep every specialist, and say so."""

from __future__ import annotations

import numpy as np
import pandas as pd

from explorer.charts.marks import MAX_MARKS, thin_marks


def features(n: int, n_specialists: int) -> pd.DataFrame:
    specialist = np.zeros(n, dtype=bool)
    specialist[np.random.default_rng(1).choice(n, n_specialists, replace=False)] = True
    return pd.DataFrame({"feature": np.arange(n), "is_specialist": specialist})


def test_small_frames_are_drawn_whole() -> None:
    frame = features(100, 5)
    shown, caption = thin_marks(frame, frame["is_specialist"])
    assert shown is frame and caption == ""


def test_a_gpt2_sized_sae_keeps_every_specialist_and_samples_the_rest() -> None:
    frame = features(24_576, 700)
    shown, caption = thin_marks(frame, frame["is_specialist"])
    assert len(shown) == MAX_MARKS
    assert shown["is_specialist"].sum() == 700  # every specialist drawn
    assert shown["feature"].is_monotonic_increasing  # rows keep their order
    assert shown["feature"].is_unique
    assert caption.startswith("2,000 marks stand for 24,576 features: all 700 specialists and")
    assert "a seeded random 1,300 of the other 23,876" in caption
    again, _ = thin_marks(frame, frame["is_specialist"])
    assert again["feature"].tolist() == shown["feature"].tolist()  # same sample each rerun


def test_more_specialists_than_the_limit_are_all_kept() -> None:
    frame = features(20_000, 2_500)
    shown, caption = thin_marks(frame, frame["is_specialist"])
    assert len(shown) == 2_500 and shown["is_specialist"].all()
    assert "a seeded random 0 of the other 17,500" in caption


def test_without_keep_it_samples_uniformly() -> None:
    frame = features(12_000, 0)
    shown, caption = thin_marks(frame, limit=1_000, what="(feature, token) pairs")
    assert len(shown) == 1_000
    assert caption.startswith("1,000 marks stand for 12,000 (feature, token) pairs: a seeded")
