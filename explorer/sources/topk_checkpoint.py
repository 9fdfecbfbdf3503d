"""Plain PyTorch TopK checkpoints, as research code saves them, converted into SAELens
`TopKSAE`s: reading the file, recognising its layout, checking shapes and `k`, and a
reference encode the conversion is tested against.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.constants import DTYPE_TO_STR
from sae_lens.saes.sae import SAEMetadata
from safetensors import SafetensorError
from safetensors.torch import load_file

from explorer.errors import SourceError, markdown_escaped

# Keys of a TopK checkpoint: encoder weight, encoder bias, decoder weight, decoder bias.
TOPK_LAYOUTS = (
    "encoder.weight [d_sae, d_in], encoder.bias (or latent_bias) [d_sae], "
    "W_dec (or decoder.weight), b_dec (or decoder.bias or pre_bias) [d_in], k",
    "W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], k",
)
DECODER_KEYS = ("W_dec", "decoder.weight")
DECODER_BIAS_KEYS = ("b_dec", "decoder.bias", "pre_bias")
TOPK_SETTINGS = ("k", "d_in", "d_sae", "hook_name", "model_name")
# Training-time buffers some checkpoints carry; they play no part in encoding.
TOPK_IGNORED_TENSORS = frozenset({"stats_last_nonzero", "num_tokens_since_fired"})


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a TopK checkpoint: `torch.save` of a dict of tensors, or a `.safetensors` file
    (with its settings such as k in a `cfg.json` beside it, as EleutherAI sparsify saves)."""
    if not path.is_file():
        raise SourceError(f"The checkpoint {markdown_escaped(path)} does not exist.")
    try:
        if path.suffix == ".safetensors":
            cfg_path = path.with_name("cfg.json")
            settings = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
            return {**settings, **load_file(path)}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        pickle.UnpicklingError,
        SafetensorError,
    ) as error:
        raise SourceError(
            f"Cannot read the checkpoint {markdown_escaped(path)}: {markdown_escaped(error)}. "
            "Expected a file written by "
            "`torch.save` of a dict of tensors (it is read with weights_only=True)."
        ) from error
    if not isinstance(state, dict):
        raise SourceError(
            f"The checkpoint {markdown_escaped(path)} holds a {type(state).__name__}, not a dict "
            "of tensors."
        )
    return state


def topk_sae_from_state_dict(
    state: dict[str, Any], *, hook_name: str | None = None, model_name: str | None = None
) -> TopKSAE:
    """Convert a TopK checkpoint into an equivalent SAELens `TopKSAE` (eval mode).

    Both supported layouts encode `relu(topk((x - b_dec) @ W_enc + b_enc))` and decode
    `acts @ W_dec + b_dec`, which is a TopKSAE with `apply_b_dec_to_input=True` and no
    decoder-norm rescaling. `hook_name` and `model_name` default to the checkpoint's own.
    """
    weights, settings = _split_checkpoint(state)
    W_enc, b_enc, W_dec, b_dec = _topk_weights(weights)
    d_in, d_sae = W_enc.shape
    for key, size in (("d_in", d_in), ("d_sae", d_sae)):
        if settings.get(key) is not None and settings[key] != size:
            raise SourceError(
                f"The checkpoint says {markdown_escaped(key)} = {markdown_escaped(settings[key])}, "
                f"but its weights have {markdown_escaped(key)} = {size}."
            )
    hook_name = hook_name or settings.get("hook_name")
    if not hook_name:
        raise SourceError(
            "The checkpoint does not say which hook it was trained on; name it in the source: "
            "topk:CHECKPOINT@MODEL#HOOK (e.g. #blocks.8.hook_resid_post)."
        )
    dtype = W_enc.dtype if W_enc.dtype in DTYPE_TO_STR else torch.float32
    cfg = TopKSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=_checkpoint_k(settings.get("k"), d_sae),
        dtype=DTYPE_TO_STR[dtype],
        device="meta",  # allocate nothing; the checkpoint's tensors are assigned below
        apply_b_dec_to_input=True,
        rescale_acts_by_decoder_norm=False,
        metadata=SAEMetadata(
            hook_name=hook_name, model_name=model_name or settings.get("model_name")
        ),
    )
    sae = TopKSAE(cfg)
    sae.cfg.device = "cpu"
    tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    sae.load_state_dict(
        {key: value.to(dtype).contiguous() for key, value in tensors.items()}, assign=True
    )
    return sae.to(dtype=dtype, device="cpu").eval()


def _split_checkpoint(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Separate weight tensors from settings (k, d_in, ...), looking into a nested state_dict
    and cfg/config dicts; the innermost value of a setting wins."""
    nested = next(
        (
            state[key]
            for key in ("state_dict", "model_state_dict")
            if isinstance(state.get(key), dict)
        ),
        None,
    )
    layers = [state.get("cfg"), state.get("config"), state, nested]
    settings: dict[str, Any] = {}
    for layer in layers:
        if isinstance(layer, dict):
            settings.update({key: layer[key] for key in TOPK_SETTINGS if key in layer})
    holder = nested if nested is not None else state
    weights = {
        key: value
        for key, value in holder.items()
        if isinstance(value, torch.Tensor)
        and key not in TOPK_SETTINGS
        and key not in TOPK_IGNORED_TENSORS
    }
    return weights, settings


def _topk_weights(
    weights: dict[str, torch.Tensor],
) -> tuple[
    Float[torch.Tensor, "d_in d_sae"],
    Float[torch.Tensor, " d_sae"],
    Float[torch.Tensor, "d_sae d_in"],
    Float[torch.Tensor, " d_in"],
]:
    """Find the encoder and decoder in either layout and bring them to SAELens's shapes."""
    if "encoder.weight" in weights:
        enc_key, b_enc_keys = "encoder.weight", ("encoder.bias", "latent_bias")
    elif "W_enc" in weights:
        enc_key, b_enc_keys = "W_enc", ("b_enc",)
    else:
        raise SourceError(
            "Not a TopK checkpoint layout this explorer knows. Expected either "
            f"({TOPK_LAYOUTS[0]}) or ({TOPK_LAYOUTS[1]}); found "
            f"{markdown_escaped(sorted(weights) or 'no tensors')}."
        )
    encoder = weights[enc_key]
    if encoder.ndim != 2:
        raise SourceError(
            f"{markdown_escaped(enc_key)} should be a matrix; it has shape {list(encoder.shape)}."
        )
    W_enc = encoder.T if enc_key == "encoder.weight" else encoder  # nn.Linear is [out, in]
    d_in, d_sae = W_enc.shape  # [d_in, d_sae]
    b_enc_key, b_enc = _one_of(weights, b_enc_keys, "the encoder bias")
    dec_key, decoder = _one_of(weights, DECODER_KEYS, "the decoder weight")
    b_dec_key, b_dec = _one_of(weights, DECODER_BIAS_KEYS, "the decoder bias")
    W_dec = _decoder_rows(dec_key, decoder, d_in, d_sae)  # [d_sae, d_in]
    for key, tensor, size, dim in (
        (b_enc_key, b_enc, d_sae, "d_sae"),
        (b_dec_key, b_dec, d_in, "d_in"),
    ):
        if tuple(tensor.shape) != (size,):
            raise SourceError(
                f"{markdown_escaped(key)} has shape {list(tensor.shape)}, but the encoder "
                f"{markdown_escaped(enc_key)} "
                f"{list(encoder.shape)} implies [{size}] ({dim})."
            )
    unknown = sorted(set(weights) - {enc_key, *b_enc_keys, *DECODER_KEYS, *DECODER_BIAS_KEYS})
    if unknown:
        raise SourceError(
            f"The checkpoint has tensors a TopK SAE does not use: {markdown_escaped(unknown)}; "
            "converting it would drop them."
        )
    return W_enc, b_enc, W_dec, b_dec


def _one_of(
    weights: dict[str, torch.Tensor], keys: tuple[str, ...], what: str
) -> tuple[str, torch.Tensor]:
    present = [key for key in keys if key in weights]
    if not present:
        raise SourceError(
            f"The checkpoint has no {markdown_escaped(what)} (expected one of "
            f"{markdown_escaped(', '.join(keys))})."
        )
    first = weights[present[0]]
    if any(not torch.equal(weights[key], first) for key in present[1:]):
        raise SourceError(
            f"The checkpoint's {markdown_escaped(' and '.join(present))} differ; "
            f"both are {markdown_escaped(what)}."
        )
    return present[0], first


def _decoder_rows(
    key: str, decoder: torch.Tensor, d_in: int, d_sae: int
) -> Float[torch.Tensor, "d_sae d_in"]:
    """The decoder as [d_sae, d_in]; a square one follows its key (nn.Linear is [out, in])."""
    if decoder.ndim != 2 or sorted(decoder.shape) != sorted((d_in, d_sae)):
        raise SourceError(
            f"{markdown_escaped(key)} has shape {list(decoder.shape)}, but the encoder implies "
            f"[{d_sae}, {d_in}] or [{d_in}, {d_sae}] (d_sae = {d_sae}, d_in = {d_in})."
        )
    if d_in == d_sae:
        return decoder.T if key == "decoder.weight" else decoder
    return decoder if tuple(decoder.shape) == (d_sae, d_in) else decoder.T


def _checkpoint_k(k: Any, d_sae: int) -> int:
    if k is None:
        raise SourceError("The checkpoint has no k (the number of active features per token).")
    if isinstance(k, torch.Tensor):
        if k.numel() != 1:
            raise SourceError(
                f"The checkpoint's k should be one number; it has shape {list(k.shape)}."
            )
        k = k.item()
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= d_sae:
        raise SourceError(
            f"The checkpoint's k = {k!r} must be a whole number from 1 to d_sae = {d_sae}."
        )
    return k


def reference_topk_encode(
    state: dict[str, Any], x: Float[torch.Tensor, "... d_in"]
) -> Float[torch.Tensor, "... d_sae"]:
    """The TopK encoder exactly as the checkpoint's own code computes it, without SAELens.

    encoder.weight layout (sparsify / OpenAI): `relu(topk(encoder(x - b_dec)))`;
    W_enc layout: `relu(topk((x - b_dec) @ W_enc + b_enc))`. Written independently of the
    conversion above so tests can check one against the other.
    """
    tensors = state.get("state_dict", state)
    k = int(tensors["k"] if "k" in tensors else state["k"])
    pre_bias = next(tensors[key] for key in ("b_dec", "pre_bias", "decoder.bias") if key in tensors)
    if "encoder.weight" in tensors:
        bias = tensors["encoder.bias"] if "encoder.bias" in tensors else tensors["latent_bias"]
        pre = torch.nn.functional.linear(x - pre_bias, tensors["encoder.weight"], bias)
    else:
        pre = (x - pre_bias) @ tensors["W_enc"] + tensors["b_enc"]
    top = pre.topk(k, dim=-1)  # [..., k]
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())  # [..., d_sae]


# --------------------------------------------------------------------------- links and helpers
