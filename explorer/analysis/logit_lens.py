"""The decoder logit lens of one feature, computed from the loaded model and SAE.

Owns `W_dec[f] @ W_U` over the whole vocabulary for one feature (after the final layer
norm's weight when the model has one, as the residual stream passes through it before the
unembedding; the same convention as the build's `explorer.extract.logit_lens`, whose top and
bottom tokens the store keeps). The feature page bins these logits into a histogram.
No store, no streamlit.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from explorer.errors import InputError
from explorer.sources import LoadedSource


@torch.inference_mode()
def unembed_directions(
    model: HookedTransformer, directions: Float[torch.Tensor, "n d_model"]
) -> Float[torch.Tensor, "n d_vocab"]:
    """Direct logit effect of residual directions: through ln_final's weight, then W_U."""
    directions = directions.detach().float()
    ln_weight = getattr(model.ln_final, "w", None)
    if ln_weight is not None:
        directions = directions * ln_weight.detach().float()  # [n, d_model]
    return directions @ model.W_U.detach().float()  # [n, d_vocab]


@torch.inference_mode()
def feature_logits(loaded: LoadedSource, sae: str, feature: int) -> np.ndarray:
    """The direct logit effect of one feature's decoder direction, [d_vocab] float32."""
    handle = loaded.sae(sae)
    W_dec = handle.sae.W_dec  # [d_sae, d_model]
    if not 0 <= feature < W_dec.shape[0]:
        raise InputError(
            f"Feature {feature} is out of range for SAE {sae!r}: choose 0 to {W_dec.shape[0] - 1}."
        )
    return unembed_directions(loaded.model, W_dec[feature : feature + 1])[0].numpy()
