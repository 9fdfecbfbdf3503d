"""Find features for a concept: from a category of the corpus, or from a few typed examples.

Owns the two concept scores of the rankings page, both weighted by activation strength so
that a feature must fire *more* on the concept than it usually does, and strongly:

- from a category (`category_concept`): the mean text activation inside the category minus
  the mean outside it, times the one-vs-rest AUROC of the text activation (how cleanly the
  feature separates the category's texts from the rest). Computed from the precomputed
  per-category rows of `explorer.store.queries.relations.category_contrast`, never from `acts`.
- from typed examples (`example_concept`): the feature's mean activation per token over the
  examples' tokens (zeros included), against its corpus mean per token (`mean_active x
  token_freq` of `feature_stats`); score = example mean x ln(example mean / corpus mean), the
  example mean weighting the log lift, so that frequent features (high corpus mean) and
  faint ones (low example mean) do not dominate. A feature that never fires on the corpus
  takes the SAE's smallest positive corpus mean as its own.

`parse_examples` bounds what a user types. Pure pandas/numpy: the live encoding is
`explorer.live.text.encode_text`, the SQL is in `explorer.store.queries.relations`; nothing drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from explorer.analysis.specialists import auroc_from_ranks
from explorer.errors import InputError, bounded_int

if TYPE_CHECKING:
    from explorer.analysis.text_activations import TextActivations

MAX_EXAMPLES = 10
MAX_EXAMPLE_CHARS = 500
MAX_CONCEPT_FEATURES = 500


def category_concept(contrast: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k features that fire most on one category relative to the rest, best first.

    `contrast` is `relation_queries.category_contrast`. Adds mean_out (mean text activation
    over the other texts), auroc (one vs rest), coverage (share of the category's texts where
    the feature fires), share (of the texts where it fires, those in the category) and
    concept_score = (mean_in - mean_out) x auroc. Only features with a positive score are
    kept (ties by feature id); a category holding every text gives none.
    """
    k = bounded_int("The number of features", k, 1, MAX_CONCEPT_FEATURES, text=False)
    n_in = contrast["n_in"].to_numpy(np.float64)
    n_out = contrast["n_total"].to_numpy(np.float64) - n_in
    mean_in = contrast["mean_in"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        outside_sum = contrast["act_sum"].to_numpy(np.float64) - mean_in * n_in
        mean_out = np.where(n_out > 0, np.maximum(outside_sum, 0.0) / n_out, np.nan)
        share = contrast["in_active"] / contrast["n_active"].where(contrast["n_active"] > 0)
    auroc = auroc_from_ranks(
        contrast["in_active"].to_numpy(np.int64),
        contrast["n_in"].to_numpy(np.int64),
        contrast["n_active"].to_numpy(np.int64),
        contrast["n_total"].to_numpy(np.int64),
        contrast["active_rank_sum"].to_numpy(np.float64),
    )
    scored = contrast.assign(
        mean_out=mean_out,
        auroc=auroc,
        coverage=contrast["in_active"] / contrast["n_in"],
        share=share,
        concept_score=(mean_in - mean_out) * auroc,
    )
    scored = scored[scored["concept_score"] > 0]
    return scored.sort_values(["concept_score", "feature"], ascending=[False, True]).head(k)[
        ["feature", "concept_score", "mean_in", "mean_out", "auroc", "coverage", "share",
         "in_active", "n_in"]
    ].reset_index(drop=True)  # fmt: skip


def parse_examples(text: str) -> list[str]:
    """One example per non-blank line (kept as typed): 1 to `MAX_EXAMPLES` lines of at most
    `MAX_EXAMPLE_CHARS` characters each, else an `InputError` saying what to change."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("Type at least one example: one example text per line.")
    if len(lines) > MAX_EXAMPLES:
        raise InputError(f"Give at most {MAX_EXAMPLES} examples (lines), got {len(lines)}.")
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_EXAMPLE_CHARS:
            raise InputError(
                f"Example {number} has {len(line):,} characters; give at most "
                f"{MAX_EXAMPLE_CHARS} per line."
            )
    return lines


def stack_examples(examples: Sequence[TextActivations]) -> tuple[pd.DataFrame, int]:
    """The examples' activations as one frame (example, pos, feature, value; example = its
    index) and their total number of real tokens."""
    frames = [text.acts.assign(example=i) for i, text in enumerate(examples)]
    acts = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    columns = ["example", "pos", "feature", "value"]
    acts = acts.reindex(columns=columns)
    return acts, sum(len(text.tokens) for text in examples)


def example_concept(
    acts: pd.DataFrame, n_tokens: int, frequency: pd.DataFrame, k: int
) -> pd.DataFrame:
    """The k features that fire most on the examples relative to the corpus, best first.

    `acts`: example, pos, feature, value (the examples' nonzero activations, `stack_examples`);
    `n_tokens`: the examples' real tokens; `frequency`: feature, token_freq, mean_active of
    the same SAE (`Store.frequency_table` rows). Returns feature, concept_score,
    example_mean, corpus_mean, lift (example_mean / corpus_mean, with the floor of the module
    docstring), n_examples (examples where it fires), active_share (of the examples' tokens);
    only features with a positive score (lift > 1), ties by feature id.
    """
    k = bounded_int("The number of features", k, 1, MAX_CONCEPT_FEATURES, text=False)
    if n_tokens < 1:
        raise InputError("The examples have no tokens: type some text.")
    grouped = acts.groupby("feature")
    found = pd.DataFrame(
        {
            "example_mean": grouped["value"].sum() / n_tokens,
            "n_examples": grouped["example"].nunique(),
            "active_share": grouped.size() / n_tokens,
        }
    )
    corpus = frequency.set_index("feature")
    corpus_mean = corpus["mean_active"] * corpus["token_freq"]
    positive = corpus_mean[corpus_mean > 0]
    floor = float(positive.min()) if len(positive) else 1.0
    found["corpus_mean"] = corpus_mean.reindex(found.index).fillna(0.0)
    found["lift"] = found["example_mean"] / np.maximum(found["corpus_mean"], floor)
    found["concept_score"] = found["example_mean"] * np.log(found["lift"])
    found = found[found["concept_score"] > 0].rename_axis("feature").reset_index()
    found["feature"] = found["feature"].astype(np.int64)
    return found.sort_values(["concept_score", "feature"], ascending=[False, True]).head(k)[
        ["feature", "concept_score", "example_mean", "corpus_mean", "lift", "n_examples",
         "active_share"]
    ].reset_index(drop=True)  # fmt: skip
