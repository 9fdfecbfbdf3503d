"""Nearest features by decoder direction: cosine similarity of SAE decoder rows.

Owns the torch computation of decoder cosine neighbours for one or more query features,
against every feature of the same SAE (the query itself excluded) and of the other SAEs whose
decoders live in the same space (same `d_in`). The candidates' decoder rows are read in
chunks, so a 100k-feature SAE never needs a normalised copy of its whole decoder; each chunk
is one matrix product and a `topk`, merged with the running best.

It does not load SAEs (callers pass `W_dec` tensors, e.g. from `explorer.sources`) and does
not read the store; co-firing from stored activations is `explorer.store.queries.feature.co_firing`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Float

from explorer.errors import InputError, markdown_escaped

DEFAULT_CHUNK = 8192
EPS = 1e-12


def _unit(rows: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n d"]:
    return rows / torch.linalg.vector_norm(rows, dim=-1, keepdim=True).clamp_min(EPS)


@torch.inference_mode()
def cosine_topk(
    queries: Float[torch.Tensor, "q d_in"],
    candidates: Float[torch.Tensor, "n d_in"],
    k: int,
    exclude: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Float[torch.Tensor, "q k"], torch.Tensor]:
    """The k candidate rows of largest cosine with each query row: (cosines, indices).

    `exclude` ([q], candidate index per query or -1) drops one candidate per query, the
    query itself when both come from the same SAE. Ties keep the lower index first.
    """
    k = min(k, candidates.shape[0] - (exclude is not None))
    unit_queries = _unit(queries.float())  # [q, d_in]
    best_values = torch.full((queries.shape[0], 0), -2.0)
    best_indices = torch.zeros((queries.shape[0], 0), dtype=torch.long)
    for start in range(0, candidates.shape[0], chunk):
        block = _unit(candidates[start : start + chunk].float())  # [chunk, d_in]
        cosines = unit_queries @ block.T  # [q, chunk]
        indices = torch.arange(start, start + block.shape[0]).expand_as(cosines)  # [q, chunk]
        if exclude is not None:
            cosines = cosines.masked_fill(indices == exclude[:, None], -2.0)
        values = torch.cat([best_values, cosines], dim=1)  # [q, k + chunk]
        merged = torch.cat([best_indices, indices], dim=1)
        # stable descending sort keeps the lower index first among equal cosines
        order = values.argsort(dim=1, descending=True, stable=True)[:, :k]  # [q, k]
        best_values = values.gather(1, order)
        best_indices = merged.gather(1, order)
    return best_values, best_indices


def decoder_neighbours(
    decoders: Mapping[str, Float[torch.Tensor, "d_sae d_in"]],
    sae: str,
    features: Sequence[int],
    k: int = 10,
    chunk: int = DEFAULT_CHUNK,
) -> pd.DataFrame:
    """Each query feature's k nearest decoder directions in every SAE of the same d_in.

    Returns query, sae, feature, cosine and rank (1 = nearest, per query and SAE), the
    query's own SAE first, then the others in the order of `decoders`.
    """
    if sae not in decoders:
        raise InputError(
            f"Unknown SAE {markdown_escaped(repr(sae))}; decoders are loaded for "
            f"{markdown_escaped(list(decoders))}."
        )
    own = decoders[sae]
    if not 1 <= k <= 1000:
        raise InputError(f"k must be from 1 to 1000, got {k}.")
    ids = torch.tensor([int(f) for f in features], dtype=torch.long)
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= own.shape[0]):
        raise InputError(
            f"Feature ids must be from 0 to {own.shape[0] - 1} for {markdown_escaped(repr(sae))}."
        )
    queries = own[ids]  # [q, d_in]
    frames = []
    order = [sae, *(name for name in decoders if name != sae)]
    for name in order:
        candidates = decoders[name]
        if candidates.shape[1] != own.shape[1]:
            continue
        exclude = ids if name == sae else None
        cosines, indices = cosine_topk(queries, candidates, k, exclude, chunk)  # [q, k]
        n_queries, n_found = cosines.shape
        frames.append(
            pd.DataFrame(
                {
                    "query": ids.repeat_interleave(n_found).numpy(),
                    "sae": name,
                    "feature": indices.reshape(-1).numpy(),
                    "cosine": cosines.reshape(-1).double().numpy(),
                    "rank": torch.arange(1, n_found + 1).repeat(n_queries).numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
