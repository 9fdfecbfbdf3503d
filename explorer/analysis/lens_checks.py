"""Checks and selections over a whole SAE's decoder logit lens: consistency and diversity.

Owns two analyses of the logit lens page. The consistency check asks, per feature, whether
its promoted tokens are what follows its max-activating contexts: for each stored top
example, the logit rank (1 = largest) of the next token, and of the activating token itself,
in the feature's logit effect over the whole vocabulary; the hit rate is the share of
examples whose next token is among the k most promoted. A feature is output-like when that
share reaches a threshold, input-like when its activating tokens are promoted more often than
its next tokens. The same ranks for a seeded random direction per feature, scaled to the
decoder row's norm, are the chance baseline. The diverse selection walks features in a
ranking and keeps each one whose decoder cosine with every feature kept before it is below a
threshold (greedy). `explorer.analysis.similarity` answers nearest-neighbour queries; this
module needs the full pairwise matrix of a few thousand candidates instead.

Inputs are tensors and the DataFrame of `explorer.store.queries.lens.top_examples_with_next`; the
unembedding is passed as a function (`explorer.sources.unembed.unembed_directions` bound
to the model), so no model, store or streamlit is needed here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from explorer.errors import InputError, markdown_escaped

Unembed = Callable[[Float[torch.Tensor, "n d_model"]], Float[torch.Tensor, "n d_vocab"]]

OUTPUT_LIKE, INPUT_LIKE, NEITHER, FEW = "output-like", "input-like", "neither", "few examples"
KINDS = (OUTPUT_LIKE, INPUT_LIKE, NEITHER, FEW)
SAE_SERIES, RANDOM_SERIES = "SAE decoder", "random direction"
MAX_K = 1000
MAX_CANDIDATES = 5000
LOGITS_PER_CHUNK = 1 << 24  # floats of one [features, d_vocab] block (64 MB)


@dataclass(frozen=True)
class ConsistencySettings:
    """k: promoted tokens that count as a hit; threshold: hit rate marking a feature output-
    or input-like; min_examples: top examples with a next token a feature needs to be marked
    at all; seed: of the random baseline directions."""

    k: int = 10
    threshold: float = 0.5
    min_examples: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K:
            raise InputError(f"k must be a whole number from 1 to {MAX_K}, got {self.k!r}.")
        if not 0 < self.threshold <= 1:
            raise InputError(f"The hit-rate threshold must be in (0, 1], got {self.threshold!r}.")
        if (
            isinstance(self.min_examples, bool)
            or not isinstance(self.min_examples, int)
            or self.min_examples < 1
        ):
            raise InputError(f"min_examples must be at least 1, got {self.min_examples!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"The seed must be a non-negative whole number, got {self.seed!r}.")


def token_ranks(
    logits: Float[torch.Tensor, "n d_vocab"], token_ids: torch.Tensor
) -> Float[torch.Tensor, "n e"]:
    """Rank of each token in its row's logits: 1 + the tokens with a strictly larger logit.

    `token_ids` is [n, e] with -1 where there is no token; those ranks are NaN.
    """
    ascending = logits.sort(dim=1).values  # [n, d_vocab]
    values = logits.gather(1, token_ids.clamp_min(0))  # [n, e]
    above = logits.shape[1] - torch.searchsorted(ascending, values, right=True)  # [n, e]
    ranks = (above + 1).double()
    return ranks.masked_fill(token_ids < 0, float("nan"))


def random_directions(
    decoder: Float[torch.Tensor, "d_sae d_model"], seed: int
) -> Float[torch.Tensor, "d_sae d_model"]:
    """One Gaussian direction per decoder row, scaled to that row's norm; same seed, same
    directions."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(decoder.shape, generator=generator, dtype=torch.float32)  # [d_sae, d]
    norms = torch.linalg.vector_norm(decoder.detach().float(), dim=1, keepdim=True)  # [d_sae, 1]
    return noise / torch.linalg.vector_norm(noise, dim=1, keepdim=True) * norms


def _padded(examples: pd.DataFrame, features: np.ndarray, column: str) -> torch.Tensor:
    """[len(features), max examples per feature] token ids of `column`, -1 where missing."""
    slot = examples.groupby("feature").cumcount().to_numpy()
    row = np.searchsorted(features, examples["feature"].to_numpy())
    ids = np.full((len(features), int(slot.max()) + 1), -1, dtype=np.int64)
    values = examples[column]
    present = values.notna().to_numpy()
    ids[row[present], slot[present]] = values[present].astype(np.int64).to_numpy()
    return torch.from_numpy(ids)


@torch.inference_mode()
def _ranks(
    directions: Float[torch.Tensor, "n d_model"],
    unembed: Unembed,
    token_ids: Sequence[torch.Tensor],
) -> list[Float[torch.Tensor, "n e"]]:
    """Ranks of each [n, e] id tensor in the logits of the n directions, in feature chunks."""
    d_vocab = unembed(directions[:1]).shape[1]
    chunk = max(1, LOGITS_PER_CHUNK // d_vocab)
    parts: list[list[torch.Tensor]] = [[] for _ in token_ids]
    for start in range(0, directions.shape[0], chunk):
        logits = unembed(directions[start : start + chunk]).float()  # [chunk, d_vocab]
        for part, ids in zip(parts, token_ids, strict=True):
            part.append(token_ranks(logits, ids[start : start + chunk]))
    return [torch.cat(part) for part in parts]


def _hits(ranks: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: share of the present tokens with rank <= k, and their mean rank."""
    present = ~torch.isnan(ranks)
    count = present.sum(dim=1).double()
    hits = ((ranks <= k) & present).sum(dim=1).double()
    total = torch.where(present, ranks, torch.zeros_like(ranks)).sum(dim=1)
    return (hits / count).numpy(), (total / count).numpy()  # NaN where no token


def consistency(
    examples: pd.DataFrame,
    decoder: Float[torch.Tensor, "d_sae d_model"],
    unembed: Unembed,
    settings: ConsistencySettings = ConsistencySettings(),
) -> pd.DataFrame:
    """Per feature with stored examples: do its promoted tokens follow its top contexts?

    `examples` has feature, token_id and next_token_id (null at a text's end), as
    `explorer.store.queries.lens.top_examples_with_next`. Returns one row per feature: feature,
    n_examples, n_next (examples with a next token), hit_rate (share of next tokens among the
    k most promoted), mean_next_rank, input_hit_rate and mean_input_rank (the activating
    tokens), random_hit_rate and random_mean_rank (the next tokens in the logits of the
    feature's random direction), and kind: "few examples" (fewer than min_examples with a
    next token), else output-like (hit_rate >= threshold and >= input_hit_rate), input-like
    (input_hit_rate >= threshold and > hit_rate) or neither. Ranks are 1-based over the
    whole vocabulary.
    """
    columns = [
        "feature", "n_examples", "n_next", "hit_rate", "mean_next_rank", "input_hit_rate",
        "mean_input_rank", "random_hit_rate", "random_mean_rank", "kind",
    ]  # fmt: skip
    if examples.empty:
        return pd.DataFrame(columns=columns)
    features = np.unique(examples["feature"].to_numpy().astype(np.int64))
    if features[-1] >= decoder.shape[0]:
        raise InputError(
            f"Feature {markdown_escaped(features[-1])} is out of range for a decoder of "
            f"{decoder.shape[0]} rows."
        )
    examples = examples.sort_values(["feature", "rank"] if "rank" in examples else ["feature"])
    next_ids = _padded(examples, features, "next_token_id")  # [n, e]
    input_ids = _padded(examples, features, "token_id")  # [n, e]
    rows = torch.from_numpy(features)
    decoder_rows = decoder.detach().float()[rows]  # [n, d_model]
    next_ranks, input_ranks = _ranks(decoder_rows, unembed, [next_ids, input_ids])
    baseline = random_directions(decoder, settings.seed)[rows]  # [n, d_model]
    (random_ranks,) = _ranks(baseline, unembed, [next_ids])
    hit_rate, mean_next_rank = _hits(next_ranks, settings.k)
    input_hit_rate, mean_input_rank = _hits(input_ranks, settings.k)
    random_hit_rate, random_mean_rank = _hits(random_ranks, settings.k)
    n_next = (next_ids >= 0).sum(dim=1).numpy()
    few = n_next < settings.min_examples
    output_like = (hit_rate >= settings.threshold) & (hit_rate >= input_hit_rate)
    input_like = (input_hit_rate >= settings.threshold) & ~output_like
    return pd.DataFrame(
        {
            "feature": features,
            "n_examples": (input_ids >= 0).sum(dim=1).numpy(),
            "n_next": n_next,
            "hit_rate": hit_rate,
            "mean_next_rank": mean_next_rank,
            "input_hit_rate": input_hit_rate,
            "mean_input_rank": mean_input_rank,
            "random_hit_rate": random_hit_rate,
            "random_mean_rank": random_mean_rank,
            "kind": np.select(
                [few, output_like, input_like], [FEW, OUTPUT_LIKE, INPUT_LIKE], NEITHER
            ),
        },
        columns=columns,
    )


@torch.inference_mode()
def example_ranks(
    examples: pd.DataFrame,
    decoder: Float[torch.Tensor, "d_sae d_model"],
    unembed: Unembed,
    feature: int,
    k: int,
) -> pd.DataFrame:
    """One feature's rows of `examples` with input_rank and next_rank (the activating and the
    next token's rank in the feature's logits; NaN without a token) and next_hit (next_rank
    <= k)."""
    if not 0 <= feature < decoder.shape[0]:
        raise InputError(f"Feature {feature} is out of range: choose 0 to {decoder.shape[0] - 1}.")
    rows = examples[examples["feature"] == feature].reset_index(drop=True)
    if rows.empty:
        return rows.assign(input_rank=[], next_rank=[], next_hit=[])
    ids = [
        torch.from_numpy(rows[column].fillna(-1).to_numpy(dtype=np.int64)[None])  # [1, e]
        for column in ("token_id", "next_token_id")
    ]
    logits = unembed(decoder.detach().float()[feature : feature + 1]).float()  # [1, d_vocab]
    input_rank, next_rank = (token_ranks(logits, part)[0].numpy() for part in ids)
    return rows.assign(input_rank=input_rank, next_rank=next_rank, next_hit=next_rank <= k)


def consistency_summary(table: pd.DataFrame) -> dict[str, float]:
    """SAE-level numbers of a `consistency` table: features checked (with a next token),
    mean hit rate of the decoder and of the random baseline, the share of features whose hit
    rate beats their random direction's, the median over features of the mean next-token rank
    for each, and the number of features of each kind (keyed by the kind)."""
    checked = table[table["n_next"] > 0]
    summary = {
        "n_features": len(checked),
        "mean_hit_rate": float(checked["hit_rate"].mean()) if len(checked) else float("nan"),
        "mean_random_hit_rate": (
            float(checked["random_hit_rate"].mean()) if len(checked) else float("nan")
        ),
        "share_beating_random": (
            float((checked["hit_rate"] > checked["random_hit_rate"]).mean())
            if len(checked)
            else float("nan")
        ),
        "median_next_rank": float(checked["mean_next_rank"].median()),
        "median_random_rank": float(checked["random_mean_rank"].median()),
    }
    for kind in KINDS:
        summary[kind] = int((table["kind"] == kind).sum())
    return summary


def hit_rate_histogram(table: pd.DataFrame, bins: int = 20) -> pd.DataFrame:
    """The hit rates of the decoder and of the random baseline in `bins` equal bins over
    [0, 1] (1 falls in the last): series, bin, low, high, count, fraction (of that series'
    features with a next token)."""
    if not 1 <= bins <= 200:
        raise InputError(f"bins must be from 1 to 200, got {bins}.")
    checked = table[table["n_next"] > 0]
    edges = np.linspace(0.0, 1.0, bins + 1)
    frames = []
    for series, column in ((SAE_SERIES, "hit_rate"), (RANDOM_SERIES, "random_hit_rate")):
        counts, _ = np.histogram(checked[column].to_numpy(dtype=float), bins=edges)
        frames.append(
            pd.DataFrame(
                {
                    "series": series,
                    "bin": np.arange(bins),
                    "low": edges[:-1],
                    "high": edges[1:],
                    "count": counts.astype(np.int64),
                    "fraction": counts / len(checked) if len(checked) else np.zeros(bins),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@torch.inference_mode()
def diverse_features(
    decoder: Float[torch.Tensor, "d_sae d_model"], candidates: Sequence[int], threshold: float
) -> pd.DataFrame:
    """Greedy diverse selection over `candidates` (best first).

    A candidate is chosen when its decoder cosine with every feature chosen before it is below
    `threshold`. Returns one row per candidate in the given order: position (1 = first),
    feature, chosen, max_cosine (the largest cosine with the features chosen before it; NaN
    for the first) and closest (that chosen feature, -1 for the first).
    """
    if not 0 < threshold <= 1:
        raise InputError(f"The cosine threshold must be in (0, 1], got {threshold!r}.")
    ids = np.asarray([int(f) for f in candidates], dtype=np.int64)
    if len(ids) > MAX_CANDIDATES:
        raise InputError(f"Give at most {MAX_CANDIDATES} candidates, got {len(ids)}.")
    if len(np.unique(ids)) != len(ids):
        raise InputError("Each candidate feature may appear once.")
    if len(ids) and (ids.min() < 0 or ids.max() >= decoder.shape[0]):
        raise InputError(f"Candidate features must be from 0 to {decoder.shape[0] - 1}.")
    rows = torch.nn.functional.normalize(decoder.detach().float()[torch.from_numpy(ids)], dim=1)
    cosines = (rows @ rows.T).numpy()  # [n, n]
    n = len(ids)
    best = np.full(n, -np.inf)  # largest cosine with the features chosen so far
    closest = np.full(n, -1, dtype=np.int64)
    chosen = np.zeros(n, dtype=bool)
    max_cosine = np.full(n, np.nan)
    closest_at_turn = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if i:
            max_cosine[i], closest_at_turn[i] = best[i], closest[i]
        if best[i] < threshold:
            chosen[i] = True
            closer = cosines[i] > best
            best = np.where(closer, cosines[i], best)
            closest = np.where(closer, ids[i], closest)
    return pd.DataFrame(
        {
            "position": np.arange(1, n + 1),
            "feature": ids,
            "chosen": chosen,
            "max_cosine": max_cosine,
            "closest": closest_at_turn,
        }
    )
