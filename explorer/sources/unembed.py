"""The loaded model's unembedding of residual-stream directions: the direct logit effect
`directions @ W_U`, after the final layer norm's weight when the model has one. The build's
stored logit lens and the app's live lens both go through `unembed_directions`.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer


def through_final_norm(
    model: HookedTransformer, directions: Float[torch.Tensor, "n d_model"]
) -> Float[torch.Tensor, "n d_model"]:
    """Residual directions scaled by ln_final's weight (unchanged if the model has none)."""
    directions = directions.detach().float()
    ln_weight = getattr(model.ln_final, "w", None)
    if ln_weight is not None:
        directions = directions * ln_weight.detach().float()  # [n, d_model]
    return directions


@torch.inference_mode()
def unembed_directions(
    model: HookedTransformer, directions: Float[torch.Tensor, "n d_model"]
) -> Float[torch.Tensor, "n d_vocab"]:
    """Direct logit effect of residual directions: through ln_final's weight, then W_U."""
    return through_final_norm(model, directions) @ model.W_U.detach().float()  # [n, d_vocab]
