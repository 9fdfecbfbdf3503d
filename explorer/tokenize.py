"""Tokens shared by builds and live runs: BOS-prefixed token ids of a corpus, the token
strings a page shows, texts cut into padded batches and the mask of their real tokens.

Owns the conventions every other module follows: BOS is position 0 and never becomes a row,
padding never does either, and a token's string is what the tokenizer decodes for it alone.
It runs no model and no SAE.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool

from explorer.sources.source import LoadedSource

REPLACEMENT = "\ufffd"  # what a decoder shows for bytes that are not a whole character


@dataclass
class TokenizedCorpus:
    """BOS-prefixed token ids per text, truncated to the model's context."""

    text_ids: np.ndarray  # [n_texts]
    ids: list[list[int]]  # each starts with BOS
    truncated: int  # how many texts were cut at n_ctx

    @property
    def n_tokens(self) -> np.ndarray:
        """Real tokens per text (BOS excluded)."""
        return np.array([len(ids) - 1 for ids in self.ids], dtype=np.int64)


def tokenize_corpus(loaded: LoadedSource, texts: pd.DataFrame) -> TokenizedCorpus:
    tokenizer = loaded.tokenizer
    n_ctx = loaded.model.cfg.n_ctx
    bos = tokenizer.bos_token_id
    encoded = tokenizer(texts["text"].tolist(), add_special_tokens=False)["input_ids"]
    ids = [[bos, *tokens][:n_ctx] for tokens in encoded]
    truncated = sum(len(tokens) + 1 > n_ctx for tokens in encoded)
    return TokenizedCorpus(texts["text_id"].to_numpy(), ids, truncated)


def vocab_strings(loaded: LoadedSource) -> np.ndarray:
    """Display string of every token id (decoded, so byte-level markers become spaces)."""
    tokenizer = loaded.tokenizer
    d_vocab = loaded.model.cfg.d_vocab
    return np.array([tokenizer.decode([token_id]) for token_id in range(d_vocab)], dtype=object)


def token_strings(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    """Display strings of one text's tokens, joining to the text.

    Decoded one at a time, a byte-level token that holds part of a multi-byte character
    (é, emoji, CJK) shows the replacement character. Such texts are decoded by prefix
    instead: each character appears once, on the token that completes it, and the tokens
    holding its first bytes show ''.
    """
    single = [tokenizer.decode([int(token_id)]) for token_id in token_ids]
    if not any(REPLACEMENT in piece for piece in single):
        return single
    strings: list[str] = []
    done = ""
    for end in range(1, len(token_ids) + 1):
        text = tokenizer.decode([int(token_id) for token_id in token_ids[:end]])
        if end < len(token_ids) and text.endswith(REPLACEMENT):
            strings.append("")  # a character still missing bytes
        elif text.startswith(done):
            strings.append(text[len(done) :])
            done = text
        else:  # a decoder that rewrites earlier text: keep the token's own string
            strings.append(single[end - 1])
            done = text
    return strings


def partial_character_ids(vocab: np.ndarray) -> np.ndarray:
    """[d_vocab] bool: the token ids whose own string shows a partial character."""
    return np.fromiter((REPLACEMENT in piece for piece in vocab), bool, len(vocab))


def batch_token_strings(
    tokenizer: Any,
    vocab: np.ndarray,
    partial_ids: np.ndarray,
    rows: np.ndarray,
    token_ids: np.ndarray,
) -> np.ndarray:
    """Display strings of a batch's real tokens (`rows`: each token's row, in text order):
    the vocabulary's strings, except in the texts holding a token of `partial_ids`
    (`partial_character_ids`), which `token_strings` decodes whole."""
    strings = vocab[token_ids]
    for row in np.unique(rows[partial_ids[token_ids]]):
        in_row = rows == row
        strings[in_row] = token_strings(tokenizer, token_ids[in_row])
    return strings


def batch_plan(corpus: TokenizedCorpus, batch_size: int) -> list[np.ndarray]:
    """The forward passes of a build: corpus indices of each batch, texts of similar length
    together (less padding). Texts are sorted by token count (stable, so ties keep corpus
    order) and cut into runs of `batch_size`; sharded builds take whole batches of this plan
    (see `explorer.build.shards`)."""
    order = np.argsort([len(ids) for ids in corpus.ids], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def padded_batches(
    corpus: TokenizedCorpus, batch_size: int, pad_id: int
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Batches of texts of similar length (less padding): text ids, tokens, real-token mask."""
    for members in batch_plan(corpus, batch_size):
        yield padded_batch(corpus, members, pad_id)


def padded_batch(
    corpus: TokenizedCorpus, members: np.ndarray, pad_id: int
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Text ids, padded tokens [batch, pos] and real-token mask of the texts at `members`."""
    lengths = torch.tensor([len(corpus.ids[i]) for i in members])
    tokens = torch.full((len(members), int(lengths.max())), pad_id, dtype=torch.long)
    for row, i in enumerate(members):
        tokens[row, : lengths[row]] = torch.tensor(corpus.ids[i])
    return corpus.text_ids[members], tokens, real_token_mask(tokens, lengths)


def real_token_mask(tokens: torch.Tensor, lengths: torch.Tensor) -> Bool[torch.Tensor, "b p"]:
    """Mask of real tokens (not BOS at 0, not padding past each length)."""
    positions = torch.arange(tokens.shape[1])
    return (positions[None, :] < lengths[:, None]) & (positions[None, :] > 0)
