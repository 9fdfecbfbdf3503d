"""Batched extraction: model forward + SAE encode -> sparse activation rows and statistics.

Owns the compute of a build: tokenizing a corpus into BOS-prefixed sequences, one
`run_with_cache(names_filter=hooks, stop_at_layer=last_layer + 1)` per batch under
`torch.inference_mode()`, every SAE's encode of its hook's real tokens, sparse rows straight
from tensors, per-feature statistics and running top-k accumulated on tensors, decoder logit
lens and SAE quality. It does no I/O: results go to a `BuildSink` (the store writer
implements it).

Positions are model positions: BOS is position 0 and never becomes a row; padding never
does either (only each text's real tokens are encoded; the demo tokenizer pads with BOS).

Rows without a dense pass: a TopK SAE with many features encodes through SAELens's sparse
TopK activation (`encode_rows`), other SAEs through `sae.encode` and `nonzero`; the
reconstruction for explained variance is `sae.decode` of the rows as a sparse tensor
(`decode_rows`), so every real token counts at a cost linear in the rows. Both fast paths
are checked per SAE against the dense SAELens calls before a build uses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from sae_lens import TopKSAE
from sae_lens.saes.topk_sae import TopK

from explorer.build.quality import SpliceLosses, ce_losses, dense_fraction, stratified_sample
from explorer.build.stages import LOGIT_LENS, QUALITY, Stage
from explorer.corpus import Corpus
from explorer.errors import InputError, markdown_escaped
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.sources.unembed import unembed_directions
from explorer.tokenize import (
    TokenizedCorpus,
    batch_plan,
    batch_token_strings,
    padded_batch,
    partial_character_ids,
    tokenize_corpus,
    vocab_strings,
)


@dataclass(frozen=True)
class BuildSettings:
    """What a build extracts; every number is bounded by `validate`."""

    batch_size: int = 32
    max_texts: int | None = None
    hooks: tuple[str, ...] | None = None  # hook names or SAE names; None = every SAE
    topk: int = 20
    logit_lens_k: int = 20
    quality_per_category: int = 16  # CE loss recovered, KL, shrinkage: up to this many texts
    quality_seed: int = 0  # of each category (seeded); 1 + 2 x n_saes extra forwards a text

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 1024:
            raise InputError(f"--batch-size must be between 1 and 1024, got {self.batch_size}.")
        if self.max_texts is not None and self.max_texts < 1:
            raise InputError(f"--max-texts must be at least 1, got {self.max_texts}.")
        if not 1 <= self.topk <= 1000:
            raise InputError(f"topk must be between 1 and 1000, got {self.topk}.")
        if not 1 <= self.quality_per_category <= 10_000:
            raise InputError(
                "quality_per_category must be between 1 and 10000, "
                f"got {self.quality_per_category}."
            )


class BuildSink(Protocol):
    """Where extraction results go; `explorer.store.StoreWriter` is the real one."""

    def add_tokens(
        self, text_id: np.ndarray, pos: np.ndarray, token_id: np.ndarray, token: np.ndarray
    ) -> None: ...

    def add_acts(
        self,
        sae: str,
        feature: np.ndarray,
        text_id: np.ndarray,
        pos: np.ndarray,
        value: np.ndarray,
        token_id: np.ndarray | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class TokenOrdinals:
    """Numbers every real token of a corpus in (text_id, pos) order: `starts[i]` is the
    ordinal of the first real token (pos 1) of the i-th text by text_id. Running top-k keys
    carry ordinals, so ties between equal values go to the smaller (text_id, pos), as the
    store orders them, and a key is one int64."""

    text_ids: np.ndarray  # [n_texts], sorted
    starts: np.ndarray  # [n_texts]

    @classmethod
    def of(cls, corpus: TokenizedCorpus) -> TokenOrdinals:
        order = np.argsort(corpus.text_ids, kind="stable")
        n_tokens = corpus.n_tokens[order]
        starts = np.cumsum(n_tokens) - n_tokens
        return cls(corpus.text_ids[order].astype(np.int64), starts.astype(np.int64))

    def base(self, text_ids: np.ndarray) -> np.ndarray:
        """Ordinal of position 0 of each text (its first real token is at position 1)."""
        return self.starts[np.searchsorted(self.text_ids, text_ids)] - 1

    def decode(self, ordinal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(text_id, pos) of each ordinal; texts without tokens share a start with the next
        text, so the last text at a start is the one holding its tokens."""
        index = np.searchsorted(self.starts, ordinal, side="right") - 1
        return self.text_ids[index], ordinal - self.starts[index] + 1


ORDINAL_BITS = 32  # low bits of a top-k key; a corpus holds fewer than 2**32 tokens


def topk_keys(value: torch.Tensor, ordinal: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered as (value DESC, ordinal ASC): a positive float32's bits order like
    its value and fit in 31 bits, the complement of the ordinal fills the low 32."""
    value_bits = value.float().view(torch.int32).long()
    return (value_bits << ORDINAL_BITS) | ((1 << ORDINAL_BITS) - 1 - ordinal)


def key_values(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(value float32, ordinal) of `topk_keys`; key 0 (an empty slot) gives value 0."""
    value = (keys >> ORDINAL_BITS).int().view(torch.float32)
    ordinal = (1 << ORDINAL_BITS) - 1 - (keys & ((1 << ORDINAL_BITS) - 1))
    return value, ordinal


@dataclass
class FeatureAccumulator:
    """Per-feature statistics and running top-k of one SAE, kept on tensors."""

    d_sae: int
    topk: int
    n_active_tokens: torch.Tensor = field(init=False)
    n_active_texts: torch.Tensor = field(init=False)
    act_sum: torch.Tensor = field(init=False)
    act_max: torch.Tensor = field(init=False)
    top_keys: torch.Tensor = field(init=False)  # [d_sae, topk] `topk_keys`, largest first
    sq_err: float = 0.0
    n_tokens: int = 0
    n_recon_tokens: int = 0
    act_in_sum: torch.Tensor | None = None
    act_in_sq_sum: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.n_active_tokens = torch.zeros(self.d_sae, dtype=torch.long)
        self.n_active_texts = torch.zeros(self.d_sae, dtype=torch.long)
        self.act_sum = torch.zeros(self.d_sae, dtype=torch.float64)
        self.act_max = torch.zeros(self.d_sae)
        self.top_keys = torch.zeros(self.d_sae, self.topk, dtype=torch.long)

    def update(
        self,
        feature: Int[torch.Tensor, " n_rows"],
        value: Float[torch.Tensor, " n_rows"],
        text_row: Int[torch.Tensor, " n_rows"],
        n_batch_texts: int,
        ordinal: Int[torch.Tensor, " n_rows"],
        n_real_tokens: int,
    ) -> None:
        """Fold one batch's sparse rows in (`text_row`: the row's text within the batch,
        whose texts are whole); cost is linear in rows and in texts x d_sae, not in
        tokens x d_sae."""
        self.n_tokens += n_real_tokens
        self.n_active_tokens += torch.bincount(feature, minlength=self.d_sae)
        self.act_sum += torch.bincount(feature, weights=value.double(), minlength=self.d_sae)
        self.act_max = self.act_max.scatter_reduce(0, feature, value, "amax")
        text_feature = text_row * self.d_sae + feature
        per_text = torch.bincount(text_feature, minlength=n_batch_texts * self.d_sae)
        self.n_active_texts += (per_text.view(n_batch_texts, self.d_sae) > 0).sum(0)
        # running top-k: only rows above their feature's current k-th key can enter it
        keys = topk_keys(value, ordinal)
        enters = keys > self.top_keys[feature, -1]
        if enters.any():
            self._merge_topk(feature[enters], keys[enters])

    def _merge_topk(self, feature: torch.Tensor, keys: torch.Tensor) -> None:
        """Each touched feature's current keys and its new ones side by side in one
        [touched, topk + most new] matrix (empty slots 0), then `topk` along rows."""
        counts = torch.bincount(feature, minlength=self.d_sae)
        touched = counts.nonzero()[:, 0]  # [n_touched]
        order = torch.sort(feature, stable=True).indices
        sorted_feature = feature[order]
        slot = torch.arange(len(order)) - (counts.cumsum(0) - counts)[sorted_feature]
        row = torch.zeros(self.d_sae, dtype=torch.long)
        row[touched] = torch.arange(len(touched))
        merged = torch.zeros(len(touched), self.topk + int(counts.max()), dtype=torch.long)
        merged[:, : self.topk] = self.top_keys[touched]
        merged[row[sorted_feature], self.topk + slot] = keys[order]
        self.top_keys[touched] = merged.topk(self.topk, dim=1).values

    def update_reconstruction(
        self,
        acts_in: Float[torch.Tensor, "n_real d_in"],
        recon: Float[torch.Tensor, "n_real d_in"],
    ) -> None:
        acts_in = acts_in.flatten(1).double()
        recon = recon.flatten(1)
        if self.act_in_sum is None:
            self.act_in_sum = torch.zeros(acts_in.shape[1], dtype=torch.float64)
            self.act_in_sq_sum = torch.zeros(acts_in.shape[1], dtype=torch.float64)
        self.sq_err += float(((recon.double() - acts_in) ** 2).sum())
        self.act_in_sum += acts_in.sum(0)
        self.act_in_sq_sum += (acts_in**2).sum(0)
        self.n_recon_tokens += acts_in.shape[0]

    def feature_stats(self, n_texts: int) -> pd.DataFrame:
        """One row per feature; `freq_rank` 1 = most frequent (ties share the lower rank)."""
        n_tokens = max(self.n_tokens, 1)
        n_active = self.n_active_tokens.numpy()
        stats = pd.DataFrame(
            {
                "feature": np.arange(self.d_sae, dtype=np.int64),
                "n_active_tokens": n_active,
                "token_freq": n_active / n_tokens,
                "n_active_texts": self.n_active_texts.numpy(),
                "text_freq": self.n_active_texts.numpy() / max(n_texts, 1),
                "mean_active": np.divide(
                    self.act_sum.numpy(),
                    n_active,
                    out=np.zeros(self.d_sae),
                    where=n_active > 0,
                ),
                "max": self.act_max.numpy().astype(np.float64),
            }
        )
        stats["freq_rank"] = (
            stats["n_active_tokens"].rank(method="min", ascending=False).astype(np.int64)
        )
        return stats

    def top_examples(self, ordinals: TokenOrdinals) -> pd.DataFrame:
        """Running top-k as rows (feature, rank, text_id, pos, value), ranked by value
        (ties by text_id, pos); empty slots dropped."""
        value, ordinal = key_values(self.top_keys)  # [d_sae, topk] each
        filled = (value > 0).numpy()
        feature, rank = np.nonzero(filled)
        text_id, pos = ordinals.decode(ordinal.numpy()[filled])
        return pd.DataFrame(
            {
                "feature": feature.astype(np.int64),
                "rank": rank.astype(np.int64) + 1,
                "text_id": text_id,
                "pos": pos,
                "value": value.numpy()[filled],
            }
        )

    def reconstruction_quality(self) -> tuple[float, float, float]:
        """L0, explained variance and dead fraction over every real token."""
        assert self.act_in_sum is not None and self.act_in_sq_sum is not None
        l0 = float(self.n_active_tokens.sum()) / max(self.n_tokens, 1)
        dead = float((self.n_active_tokens == 0).float().mean())
        ev = explained_variance(
            self.sq_err, self.act_in_sum, self.act_in_sq_sum, self.n_recon_tokens
        )
        return l0, ev, dead


def explained_variance(
    sq_err: float,
    act_in_sum: Float[torch.Tensor, " d_in"],
    act_in_sq_sum: Float[torch.Tensor, " d_in"],
    n_recon_tokens: int,
) -> float:
    """1 - squared reconstruction error / total variance, from sums over the tokens
    (sums of several parts of a corpus add up to the sums of the whole)."""
    n_recon = max(n_recon_tokens, 1)
    total_var = float((act_in_sq_sum - act_in_sum**2 / n_recon).sum())
    return 1.0 - sq_err / total_var


@dataclass
class LogitLens:
    """Top and bottom tokens of `W_dec[f] @ W_U` per feature; arrays are [d_sae, k]."""

    top_token_ids: np.ndarray
    top_logits: np.ndarray
    bottom_token_ids: np.ndarray
    bottom_logits: np.ndarray


@torch.inference_mode()
def _no_stage(name: str, done: int, total: int) -> None:
    pass


def _logit_lenses(
    loaded: LoadedSource, handles: list[SaeHandle], k: int, stage: Stage
) -> dict[str, LogitLens]:
    lenses = {}
    for done, handle in enumerate(handles):
        stage(LOGIT_LENS, done, len(handles))
        lenses[handle.name] = logit_lens(loaded, handle, k)
    return lenses


def logit_lens(loaded: LoadedSource, handle: SaeHandle, k: int, chunk: int = 2048) -> LogitLens:
    """Decoder logit lens of every feature of one SAE, in chunks of features.

    See `explorer.sources.unembed.unembed_directions` for the convention (the final
    layer norm's weight, then `W_U`).
    """
    W_dec = handle.sae.W_dec  # [d_sae, d_model]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in LogitLens.__dataclass_fields__}
    for start in range(0, W_dec.shape[0], chunk):
        logits = unembed_directions(loaded.model, W_dec[start : start + chunk])  # [chunk, d_vocab]
        top_values, top_ids = logits.topk(k, dim=1)  # [chunk, k], largest first
        low_values, low_ids = (-logits).topk(k, dim=1)  # [chunk, k], most negative first
        parts["top_token_ids"].append(top_ids.numpy())
        parts["top_logits"].append(top_values.numpy())
        parts["bottom_token_ids"].append(low_ids.numpy())
        parts["bottom_logits"].append(-low_values.numpy())
    return LogitLens(**{name: np.concatenate(arrays) for name, arrays in parts.items()})


def select_saes(loaded: LoadedSource, hooks: tuple[str, ...] | None) -> list[SaeHandle]:
    if not hooks:
        return list(loaded.saes)
    chosen = [h for h in loaded.saes if h.hook_name in hooks or h.name in hooks]
    unknown = set(hooks) - {h.hook_name for h in chosen} - {h.name for h in chosen}
    if unknown:
        valid = ", ".join(f"{h.name} ({h.hook_name})" for h in loaded.saes)
        raise InputError(
            f"Unknown hook(s) {markdown_escaped(', '.join(sorted(unknown)))}; this "
            f"source has {markdown_escaped(valid)}."
        )
    return chosen


@dataclass
class ExtractionResult:
    """Everything a build computed besides the rows streamed to the sink."""

    texts: pd.DataFrame  # corpus texts with n_tokens
    saes: list[SaeHandle]
    feature_stats: dict[str, pd.DataFrame]
    top_examples: dict[str, pd.DataFrame]
    logit_lens: dict[str, LogitLens]
    quality: dict[str, dict[str, float]]
    vocab: np.ndarray
    n_tokens: int
    n_rows: dict[str, int]
    seconds: float
    truncated_texts: int


Progress = Callable[[int, int, float], None]  # tokens done, tokens total, seconds elapsed


@torch.inference_mode()
def extract(
    loaded: LoadedSource,
    corpus: Corpus,
    sink: BuildSink | None,
    settings: BuildSettings | None = None,
    progress: Progress | None = None,
    stage: Stage | None = None,
) -> ExtractionResult:
    """Run the model and SAEs over the corpus; stream rows to `sink` (None = compute only).
    `progress` follows the forward passes, `stage` the steps after them (the quality sample's
    batches, then each SAE's logit lens)."""
    stage = stage or _no_stage
    settings = settings or BuildSettings()
    settings.validate()
    if settings.max_texts is not None:
        corpus = corpus.head(settings.max_texts)
    handles = select_saes(loaded, settings.hooks)
    texts = corpus.texts.copy()
    tokenized = tokenize_corpus(loaded, texts)
    texts["n_tokens"] = tokenized.n_tokens
    vocab = vocab_strings(loaded)
    started = time.perf_counter()
    plan = batch_plan(tokenized, settings.batch_size)
    accumulators, ordinals = accumulate(
        loaded, handles, tokenized, plan, sink, settings.topk, vocab, progress
    )
    seconds = time.perf_counter() - started
    sample = quality_sample(texts, settings)
    losses = quality_losses(loaded, handles, tokenized, sample, stage=stage)
    quality = {}
    for handle in handles:
        accumulator = accumulators[handle.name]
        l0, ev, dead = accumulator.reconstruction_quality()
        quality[handle.name] = {
            "l0": l0,
            "explained_variance": ev,
            "dead_fraction": dead,
            "dense_fraction": dense_fraction(
                accumulator.n_active_tokens.numpy(), accumulator.n_tokens
            ),
            **sample_quality(losses[handle.hook_name], len(sample)),
        }
    total_tokens = int(tokenized.n_tokens.sum())
    return ExtractionResult(
        texts=texts,
        saes=handles,
        feature_stats={n: a.feature_stats(len(texts)) for n, a in accumulators.items()},
        top_examples={n: a.top_examples(ordinals) for n, a in accumulators.items()},
        logit_lens=_logit_lenses(loaded, handles, settings.logit_lens_k, stage),
        quality=quality,
        vocab=vocab,
        n_tokens=total_tokens,
        n_rows={n: int(a.n_active_tokens.sum()) for n, a in accumulators.items()},
        seconds=seconds,
        truncated_texts=tokenized.truncated,
    )


@torch.inference_mode()
def accumulate(
    loaded: LoadedSource,
    handles: list[SaeHandle],
    tokenized: TokenizedCorpus,
    plan: Sequence[np.ndarray],
    sink: BuildSink | None,
    topk: int,
    vocab: np.ndarray,
    progress: Progress | None = None,
) -> tuple[dict[str, FeatureAccumulator], TokenOrdinals]:
    """The forward passes of `plan`: tokens and sparse activations go to `sink`, per-feature
    statistics, running top-k and reconstruction sums to one accumulator per SAE.

    Only real tokens are encoded (no padding, no BOS). Explained variance sums every real
    token: the reconstruction is decoded from the sparse rows (`decode_rows`). Tensors stay
    on the model's device; only the sparse rows and the hook's activations come back to
    the CPU. Also returns the corpus's token ordinals, which the top-k keys hold.
    """
    hooks = sorted({h.hook_name for h in handles})
    stop_at = max(h.layer for h in handles) + 1
    device = loaded.model.cfg.device
    accumulators = {h.name: FeatureAccumulator(h.sae.cfg.d_sae, topk) for h in handles}
    codecs = {h.name: RowCodec.of(h.sae) for h in handles}
    ordinals = TokenOrdinals.of(tokenized)
    total_tokens = int(sum(tokenized.n_tokens[members].sum() for members in plan))
    done = 0
    started = time.perf_counter()
    pad_id = loaded.tokenizer.pad_token_id
    partial_ids = partial_character_ids(vocab)  # once, not per token of every batch
    for members in plan:
        text_ids, tokens, real = padded_batch(tokenized, members, pad_id)
        _, cache = loaded.model.run_with_cache(
            tokens, names_filter=hooks, stop_at_layer=stop_at
        )  # cache[hook]: [batch, pos, d_model]
        rows, cols = real.nonzero(as_tuple=True)  # the real tokens, in text order
        n_real = len(rows)
        if sink is not None:
            token_ids = tokens[rows, cols].numpy()
            strings = batch_token_strings(
                loaded.tokenizer, vocab, partial_ids, rows.numpy(), token_ids
            )
            sink.add_tokens(text_ids[rows.numpy()], cols.numpy(), token_ids, strings)
        token_ordinal = torch.from_numpy(ordinals.base(text_ids))[rows] + cols  # [n_real]
        real_on_device = real.to(device)
        for handle in handles:
            acts_in = cache[handle.hook_name][real_on_device]  # [n_real, d_in], no padding
            codec = codecs[handle.name]
            sae_rows = codec.rows(acts_in)  # (token index into acts_in, feature, value)
            recon = codec.decode(sae_rows, n_real)
            token, feature, value = sae_rows
            accumulator = accumulators[handle.name]
            accumulator.update_reconstruction(acts_in.cpu(), recon.cpu())
            token, feature, value = token.cpu(), feature.cpu(), value.cpu()
            accumulator.update(
                feature, value, rows[token], len(members), token_ordinal[token], n_real
            )
            if sink is not None:
                sink.add_acts(
                    handle.name,
                    feature.numpy(),
                    text_ids[rows[token].numpy()],
                    cols[token].numpy(),
                    value.numpy(),
                    token_ids[token.numpy()],
                )
        done += n_real
        if progress is not None:
            progress(done, total_tokens, time.perf_counter() - started)
    return accumulators, ordinals


Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # token, feature, value [n_rows] each


def encode_rows(sae: Any, x: Float[torch.Tensor, "n d_in"], sparse: bool) -> Rows:
    """The positive activations of `sae` on `x` as rows (token index into x, feature,
    value), in row-major order. `sparse` (see `sparse_topk_matches`) runs a TopK SAE's
    encode with SAELens's own `TopK(k, use_sparse_activations=True)`, which returns the rows
    as a sparse tensor; otherwise `sae.encode` gives the dense [n, d_sae] activations and
    `nonzero` finds the rows, a pass over tokens x d_sae."""
    if sparse:
        sae_in = sae.process_sae_in(x)
        hidden_pre = sae.hook_sae_acts_pre(sae_in @ sae.W_enc + sae.b_enc)  # as TopKSAE.encode
        if sae.cfg.rescale_acts_by_decoder_norm:
            hidden_pre = hidden_pre * sae.W_dec.norm(dim=-1)
        with torch.sparse.check_sparse_tensor_invariants(enable=False):  # built valid
            acts = TopK(sae.cfg.k, use_sparse_activations=True)(hidden_pre).coalesce()
        token, feature = acts.indices()
        value = acts.values()
        positive = value > 0  # TopK keeps k values per token, and ReLU may zero some
        return token[positive], feature[positive], value[positive]
    dense = sae.encode(x)
    token, feature = dense.nonzero(as_tuple=True)
    return token, feature, dense[token, feature]


# Below this many features a dense encode then `nonzero` is as fast or faster (demo bundle,
# d_sae 1024, k 32: 24k against 21k tokens/s); at GPT-2 small's 24,576 the sparse TopK
# encode takes 116 ms against 150 ms per 700 tokens (bench/README.md).
SPARSE_ENCODE_MIN_D_SAE = 4096


def use_sparse_encode(sae: Any) -> bool:
    """Whether the build encodes `sae` with `encode_rows(..., sparse=True)`."""
    return sae.cfg.d_sae >= SPARSE_ENCODE_MIN_D_SAE and sparse_topk_matches(sae)


@torch.inference_mode()
def sparse_topk_matches(sae: Any, n_tokens: int = 16) -> bool:
    """Whether `encode_rows(sae, x, sparse=True)` gives exactly the rows of `sae.encode`:
    only for SAELens's `TopKSAE` itself (subclasses such as BatchTopK encode otherwise),
    checked on random inputs."""
    if type(sae) is not TopKSAE or getattr(sae.cfg, "reshape_activations", "none") != "none":
        return False
    x = _probe_input(sae, n_tokens)
    expected = encode_rows(sae, x, sparse=False)
    got = encode_rows(sae, x, sparse=True)
    return all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def decode_rows(
    sae: Any,
    token: Int[torch.Tensor, " n_rows"],
    feature: Int[torch.Tensor, " n_rows"],
    value: Float[torch.Tensor, " n_rows"],
    n_tokens: int,
) -> Float[torch.Tensor, "n_tokens d_in"]:
    """`sae.decode` of the activations given as sparse rows (row-major, as `nonzero` gives
    them): SAELens decoders multiply `feature_acts @ W_dec`, which a sparse COO tensor does
    in time linear in the rows instead of tokens x d_sae."""
    acts = torch.sparse_coo_tensor(
        torch.stack([token, feature]),
        value,
        (n_tokens, sae.cfg.d_sae),
        is_coalesced=True,
        check_invariants=False,
    )
    return sae.decode(acts)


def dense_acts(
    sae: Any, token: torch.Tensor, feature: torch.Tensor, value: torch.Tensor, n_tokens: int
) -> torch.Tensor:
    """The [n_tokens, d_sae] activations of the rows, for a decoder that needs them dense."""
    acts = torch.zeros(n_tokens, sae.cfg.d_sae, dtype=value.dtype, device=value.device)
    acts[token, feature] = value
    return acts


@dataclass(frozen=True)
class RowCodec:
    """How a build encodes one SAE to rows and decodes them back (the fast paths this SAE
    passed; see `use_sparse_encode` and `sparse_decode_matches`)."""

    sae: Any
    sparse_encode: bool
    sparse_decode: bool

    @classmethod
    def of(cls, sae: Any) -> RowCodec:
        return cls(sae, use_sparse_encode(sae), sparse_decode_matches(sae))

    def rows(self, x: torch.Tensor) -> Rows:
        return encode_rows(self.sae, x, self.sparse_encode)

    def decode(self, rows: Rows, n_tokens: int) -> torch.Tensor:
        if self.sparse_decode:
            return decode_rows(self.sae, *rows, n_tokens)
        return self.sae.decode(dense_acts(self.sae, *rows, n_tokens))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) for x of [n, d_in]."""
        return self.decode(self.rows(x), len(x))


@torch.inference_mode()
def sparse_decode_matches(sae: Any, n_tokens: int = 8) -> bool:
    """Whether `decode_rows` gives `sae.decode` of the dense activations for this SAE (an
    architecture whose decode needs a dense tensor raises or differs: the build then
    decodes densely)."""
    x = _probe_input(sae, n_tokens)
    rows = encode_rows(sae, x, sparse=False)
    try:
        sparse = decode_rows(sae, *rows, n_tokens)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False
    expected = sae.decode(sae.encode(x))
    return sparse.shape == expected.shape and bool(
        torch.allclose(sparse, expected, rtol=1e-4, atol=1e-5)
    )


def _probe_input(sae: Any, n_tokens: int) -> torch.Tensor:
    """Seeded random inputs for checking a fast path against SAELens: [n_tokens, d_in], or
    [n_tokens, n_heads, d_head] for hook_z SAEs, on the SAE's device and dtype."""
    generator = torch.Generator().manual_seed(0)
    param = next(sae.parameters())
    x = torch.randn(n_tokens, sae.cfg.d_in, generator=generator).to(param.device, param.dtype)
    d_head = getattr(sae, "d_head", None)
    if getattr(sae.cfg, "reshape_activations", "none") == "hook_z" and d_head:
        return x.reshape(n_tokens, sae.cfg.d_in // d_head, d_head)
    return x


def quality_sample(texts: pd.DataFrame, settings: BuildSettings) -> np.ndarray:
    """Positions (rows of `texts`, the corpus's texts with a category column) of the texts the
    spliced forwards run on: `stratified_sample` of the categories with the settings'
    quality_per_category and quality_seed."""
    return stratified_sample(
        texts["category"].astype(str).tolist(),
        settings.quality_per_category,
        settings.quality_seed,
    )


def sample_quality(losses: SpliceLosses, n_texts: int) -> dict[str, float]:
    """The `saes` columns measured on the quality sample: ce_loss_recovered, kl_divergence,
    l2_ratio and quality_texts (the sample's size)."""
    return {
        "ce_loss_recovered": losses.ce_loss_recovered,
        "kl_divergence": losses.kl_divergence,
        "l2_ratio": losses.l2_ratio,
        "quality_texts": n_texts,
    }


def quality_losses(
    loaded: LoadedSource,
    handles: list[SaeHandle],
    tokenized: TokenizedCorpus,
    sample: np.ndarray,
    batch_size: int = 8,
    stage: Stage | None = None,
) -> dict[str, SpliceLosses]:
    """`SpliceLosses` per hook over the texts at positions `sample` of the corpus (see
    `quality_sample`): batches of similar length, so little padding is run, pooled with each
    batch weighted by its predicted (losses, KL) or real (L2 ratio) tokens."""
    subset = TokenizedCorpus(tokenized.text_ids[sample], [tokenized.ids[i] for i in sample], 0)
    device = loaded.model.cfg.device
    saes = {h.hook_name: h.sae for h in handles}
    parts: dict[str, list[SpliceLosses]] = {hook: [] for hook in saes}
    codecs = {id(sae): RowCodec.of(sae) for sae in saes.values()}

    def reconstruct(sae: Any, x: torch.Tensor) -> torch.Tensor:
        return codecs[id(sae)].reconstruct(x)

    plan = batch_plan(subset, batch_size)
    stage = stage or _no_stage
    for done, members in enumerate(plan):
        stage(QUALITY, done, len(plan))
        _, tokens, real = padded_batch(subset, members, loaded.tokenizer.pad_token_id)
        for hook, losses in ce_losses(
            loaded.model, saes, tokens.to(device), real.to(device), reconstruct
        ).items():
            parts[hook].append(losses)
    return {hook: SpliceLosses.pooled(batches) for hook, batches in parts.items()}
