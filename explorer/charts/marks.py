"""How many marks a per-feature chart draws, and what they stand for.

Owns `thin_marks`: a chart with one point per feature stays readable and fast in the browser
up to a few thousand marks (Altair refuses more than 5,000 rows by default, and 98,304
features of four GPT-2-small SAEs would ship megabytes of JSON on every rerun). Above the
limit every feature the caller marks as worth keeping (specialists, labelled features) is
drawn, and the others are a seeded random sample of the rest, with a sentence saying how many
marks stand for how many features. Below the limit the frame is returned as is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# 5,000 marks kept the Frequency scatter at GPT-2 shape busy drawing for 0.62 s of a 0.92 s warm
# navigation (bench/README.md, session 10); a seeded sample of 2,000 shows the same cloud
MAX_MARKS = 2_000


def thin_marks(
    frame: pd.DataFrame,
    keep: pd.Series | None = None,
    limit: int = MAX_MARKS,
    seed: int = 0,
    what: str = "features",
) -> tuple[pd.DataFrame, str]:
    """`frame` cut to at most `limit` rows (plus every row `keep` marks, when those alone
    exceed it) and a caption; the caption is "" when nothing was left out. Rows keep their
    order; the sample is the same for the same frame and seed."""
    if len(frame) <= limit:
        return frame, ""
    kept = np.zeros(len(frame), dtype=bool) if keep is None else keep.fillna(False).to_numpy(bool)
    rest = np.flatnonzero(~kept)
    room = max(limit - int(kept.sum()), 0)
    chosen = np.sort(
        np.random.default_rng(seed).choice(rest, size=min(room, len(rest)), replace=False)
    )
    shown = kept.copy()
    shown[chosen] = True
    caption = (
        f"{int(shown.sum()):,} marks stand for {len(frame):,} {what}: "
        + (f"all {int(kept.sum()):,} specialists and " if keep is not None else "")
        + f"a seeded random {len(chosen):,} of the other {len(rest):,} (drawing every one "
        "would slow the page; the tables and exports hold them all)."
    )
    return frame.loc[shown], caption
