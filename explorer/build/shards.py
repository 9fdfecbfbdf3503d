"""Sharded builds: shard I of N of a build written as Parquet, and the merge of N shards.

Owns the shard folder format, which texts a shard extracts, writing a shard atomically,
reading and checking a folder of shards, and merging their statistics into one store. The
compute is `explorer.build.extract`'s, the store format and its SQL `explorer.store`'s, and
running many shards at once is an engine's job (`explorer.build.ray_engine`, or a job array).
The folder format and why the merge equals a single build: docs/shards.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from explorer.build.extract import (
    BuildSettings,
    FeatureAccumulator,
    Progress,
    TokenOrdinals,
    accumulate,
    explained_variance,
    logit_lens,
    quality_losses,
    quality_sample,
    sample_quality,
    select_saes,
)
from explorer.build.quality import SpliceLosses, dense_fraction
from explorer.build.single import build_meta, checked_inputs, sae_info
from explorer.corpus import Corpus
from explorer.errors import InputError, StoreError, markdown_escaped
from explorer.sources.source import LoadedSource, SaeHandle
from explorer.store.derived import Derived
from explorer.store.schema import ACTS_SCHEMA, FLUSH_ROWS, TOKENS_SCHEMA, SaeInfo, library_versions
from explorer.store.shard_reads import merged_stats, merged_topk, quality_rows
from explorer.store.writer import StoreWriter, pid_alive
from explorer.tokenize import TokenizedCorpus, batch_plan, tokenize_corpus, vocab_strings

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: quality sums over every real token, top-k keys; 3: stratified sample
MAX_SHARDS = 4096
INCOMPLETE = "_incomplete"
MANIFESTS = "manifests"
# what shards of one build must share; everything else may differ (host, time, versions)
AGREEING_KEYS = ("format", "n_shards", "source", "corpus", "corpus_sha256", "settings")
AGREEING_KEYS += ("saes",)

# a shard keeps each SAE's rows in its own folder, so its acts have no sae_idx column
_ACTS_SCHEMA = ACTS_SCHEMA.remove(ACTS_SCHEMA.get_field_index("sae_idx"))


@dataclass(frozen=True)
class ShardSpec:
    """Shard `index` of `count` (`--shard I/N`)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise InputError(f"The number of shards must be 1 to {MAX_SHARDS}, got {self.count}.")
        if not 0 <= self.index < self.count:
            raise InputError(
                f"Shard {self.index} of {self.count} does not exist: choose 0 to {self.count - 1}."
            )

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        """Read `I/N`, e.g. `0/4` for the first of four shards."""
        index, slash, count = text.strip().partition("/")
        if not (slash and index.isdecimal() and count.isdecimal()):
            raise InputError(
                "--shard takes I/N (e.g. 0/4 for the first of 4), got "
                f"{markdown_escaped(repr(text))}."
            )
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ShardReport:
    folder: Path
    shard: ShardSpec
    n_texts: int
    n_tokens: int
    n_rows: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class MergeReport:
    path: Path
    n_shards: int
    n_texts: int
    n_tokens: int
    n_rows: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class Shard:
    """A finished shard of a folder: its manifest, with file paths made absolute."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def index(self) -> int:
        return int(self.manifest["shard"])

    def files(self, kind: str, sae: str | None = None) -> list[Path]:
        """The shard's files of one kind (and SAE); none when the shard wrote no rows of it."""
        listed = self.manifest["files"].get(kind, {} if sae else [])
        return [self.folder / name for name in (listed.get(sae, []) if sae else listed)]


# --------------------------------------------------------------------------- writing


def write_shard(
    loaded: LoadedSource,
    corpus: Corpus | str,
    folder: str | Path,
    shard: ShardSpec,
    settings: BuildSettings | None = None,
    progress: Progress | None = None,
) -> ShardReport:
    """Extract shard `shard` of `corpus` through `loaded` into the shard folder `folder`,
    replacing an earlier write of the same shard; see the module docstring."""
    corpus, settings = checked_inputs(corpus, settings)
    folder = _shard_folder(folder)
    fingerprint = corpus_sha256(corpus)
    if settings.max_texts is not None:
        corpus = corpus.head(settings.max_texts)
    handles = select_saes(loaded, settings.hooks)
    started = time.perf_counter()
    tokenized = tokenize_corpus(loaded, corpus.texts)
    plan = batch_plan(tokenized, settings.batch_size)[shard.index :: shard.count]
    vocab = vocab_strings(loaded)
    _remove_stale_writes(folder)
    tmp = folder / INCOMPLETE / f"shard={shard.index}.{socket.gethostname()}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = _ShardFiles(tmp, shard.index)
        sink = _ParquetSink(files, FLUSH_ROWS)
        accumulators, ordinals = accumulate(
            loaded, handles, tokenized, plan, sink, settings.topk, vocab, progress
        )
        sink.close()
        members = np.sort(np.concatenate(plan)) if plan else np.zeros(0, dtype=np.int64)
        files.write("texts", None, _texts_table(corpus.texts.iloc[members]))
        _write_statistics(
            files, loaded, handles, accumulators, ordinals, tokenized, settings, corpus
        )
        if shard.index == 0:
            vocab_table = pa.table({"token_id": np.arange(len(vocab)), "token": vocab})
            files.write("vocab", None, vocab_table)
        n_tokens = int(sum(tokenized.n_tokens[batch].sum() for batch in plan))
        n_rows = {n: int(a.n_active_tokens.sum()) for n, a in accumulators.items()}
        seconds = time.perf_counter() - started
        manifest = {
            "format": FORMAT_VERSION,
            "shard": shard.index,
            "n_shards": shard.count,
            "source": loaded.source.spec(),
            "corpus": corpus.name,
            "corpus_sha256": fingerprint,
            "settings": json.loads(json.dumps(asdict(settings))),
            "saes": [asdict(sae_info(handle)) for handle in handles],
            "meta": build_meta(loaded, corpus.name, settings),
            "assignment": "batches I, I+N, ... of the length-sorted batch plan",
            "n_texts": len(members),
            "n_tokens": n_tokens,
            "n_rows": n_rows,
            "files": files.listing,
            "rows": files.rows,
            "versions": library_versions(),
            "host": socket.gethostname(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": seconds,
        }
        _publish(tmp, folder, shard.index, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardReport(folder, shard, len(members), n_tokens, n_rows, seconds)


def _write_statistics(
    files: _ShardFiles,
    loaded: LoadedSource,
    handles: list[SaeHandle],
    accumulators: dict[str, FeatureAccumulator],
    ordinals: TokenOrdinals,
    tokenized: TokenizedCorpus,
    settings: BuildSettings,
    corpus: Corpus,
) -> None:
    """Per SAE: mergeable feature statistics, running top-k and quality sums; shard 0 adds
    the CE losses and the decoder logit lens."""
    first = files.index == 0
    sample = quality_sample(corpus.texts, settings)
    losses = quality_losses(loaded, handles, tokenized, sample) if first else {}
    quality = []
    for handle in handles:
        accumulator = accumulators[handle.name]
        files.write("stats", handle.name, _stats_table(accumulator))
        top = pa.Table.from_pandas(accumulator.top_examples(ordinals), preserve_index=False)
        files.write("topk", handle.name, top)
        quality.append(_quality_row(handle, accumulator, losses.get(handle.hook_name), len(sample)))
        if first:
            lens = logit_lens(loaded, handle, settings.logit_lens_k)
            files.write("logit_lens", handle.name, _logit_lens_table(asdict(lens)))
    files.write("quality", None, pa.Table.from_pylist(quality))


def corpus_sha256(corpus: Corpus) -> str:
    """SHA-256 of the corpus's texts (ids, categories, sources, texts and labels), so that
    shards of different corpora that share a spec, such as an edited file, are told apart."""
    digest = hashlib.sha256()
    columns = [corpus.texts[name].tolist() for name in corpus.texts.columns]
    for row in zip(*columns, strict=True):
        digest.update(json.dumps(row, default=_json_list, ensure_ascii=False).encode())
    return digest.hexdigest()


def _json_list(value: Any) -> Any:
    if isinstance(value, np.ndarray | tuple):
        return list(value)
    if isinstance(value, np.integer):
        return int(value)
    return str(value)


def _shard_folder(folder: str | Path) -> Path:
    folder = Path(folder).absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError(
            f"--out {markdown_escaped(folder)} is a file; a shard is written into a folder."
        )
    if not folder.parent.is_dir():
        raise InputError(
            f"Cannot write shards into {markdown_escaped(folder)}: "
            f"{markdown_escaped(folder.parent)} does not exist."
        )
    folder.mkdir(exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"Cannot write shards into {markdown_escaped(folder)}: no write permission."
        )
    return folder


class _ShardFiles:
    """The files of one shard being written under `root`, with their row counts."""

    def __init__(self, root: Path, index: int) -> None:
        self.root = root
        self.index = index
        self.listing: dict[str, Any] = {}
        self.rows: dict[str, int] = {}

    def partition(self, kind: str, sae: str | None) -> Path:
        parts = [kind] if sae is None else [kind, f"sae={quote(sae, safe='')}"]
        return Path(*parts, f"shard={self.index}")

    def write(self, kind: str, sae: str | None, table: pa.Table) -> None:
        partition = self.partition(kind, sae)
        listed = self.listing.setdefault(kind, [] if sae is None else {})
        names = listed if sae is None else listed.setdefault(sae, [])
        name = str(partition / f"part-{len(names):05d}.parquet")
        (self.root / partition).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self.root / name, compression="zstd")
        names.append(name)
        self.rows[name] = table.num_rows


class _ParquetSink:
    """The `BuildSink` of a shard: tokens and each SAE's activations as Parquet parts of
    about `flush_rows` rows."""

    def __init__(self, files: _ShardFiles, flush_rows: int) -> None:
        self._files = files
        self._flush_rows = flush_rows
        self._batches: dict[str | None, list[pa.RecordBatch]] = {}

    def add_tokens(
        self, text_id: np.ndarray, pos: np.ndarray, token_id: np.ndarray, token: np.ndarray
    ) -> None:
        columns = [text_id.astype(np.uint32), pos.astype(np.uint16), token_id.astype(np.uint32)]
        arrays = [*map(pa.array, columns), pa.array(token.tolist(), pa.string())]
        self._append(None, pa.record_batch(arrays, schema=TOKENS_SCHEMA))

    def add_acts(
        self,
        sae: str,
        feature: np.ndarray,
        text_id: np.ndarray,
        pos: np.ndarray,
        value: np.ndarray,
        token_id: np.ndarray | None = None,  # not kept: the merge joins `tokens`
    ) -> None:
        columns = [
            feature.astype(np.uint32),
            text_id.astype(np.uint32),
            pos.astype(np.uint16),
            value.astype(np.float32),
        ]
        self._append(sae, pa.record_batch(list(map(pa.array, columns)), schema=_ACTS_SCHEMA))

    def _append(self, sae: str | None, batch: pa.RecordBatch) -> None:
        batches = self._batches.setdefault(sae, [])
        batches.append(batch)
        if sum(b.num_rows for b in batches) >= self._flush_rows:
            self._flush(sae)

    def _flush(self, sae: str | None) -> None:
        batches = self._batches.pop(sae, [])
        if batches:
            kind = "tokens" if sae is None else "acts"
            self._files.write(kind, sae, pa.Table.from_batches(batches))

    def close(self) -> None:
        for sae in list(self._batches):
            self._flush(sae)


def _texts_table(texts: pd.DataFrame) -> pa.Table:
    labels = [
        [str(x) for x in v] if isinstance(v, list | tuple | np.ndarray) else []
        for v in texts["labels"]
    ]
    return pa.table(
        {
            "text_id": pa.array(texts["text_id"].to_numpy(np.uint32)),
            "category": pa.array(texts["category"].astype(str).tolist(), pa.string()),
            "source": pa.array(
                [None if pd.isna(s) else str(s) for s in texts["source"]], pa.string()
            ),
            "text": pa.array(texts["text"].astype(str).tolist(), pa.string()),
            "labels": pa.array(labels, pa.list_(pa.string())),
        }
    )


def _stats_table(accumulator: FeatureAccumulator) -> pa.Table:
    return pa.table(
        {
            "feature": np.arange(accumulator.d_sae, dtype=np.uint32),
            "n_active_tokens": accumulator.n_active_tokens.numpy(),
            "n_active_texts": accumulator.n_active_texts.numpy(),
            "act_sum": accumulator.act_sum.numpy(),
            "act_max": accumulator.act_max.numpy(),
        }
    )


def _quality_row(
    handle: SaeHandle,
    accumulator: FeatureAccumulator,
    losses: SpliceLosses | None,
    n_sample: int,
) -> dict[str, Any]:
    d_in = handle.sae.cfg.d_in
    zeros = torch.zeros(d_in, dtype=torch.float64)
    act_in_sum = zeros if accumulator.act_in_sum is None else accumulator.act_in_sum
    act_in_sq_sum = zeros if accumulator.act_in_sq_sum is None else accumulator.act_in_sq_sum
    measured = sample_quality(losses, n_sample) if losses is not None else {}
    return {
        "sae": handle.name,
        "n_tokens": accumulator.n_tokens,
        "n_recon_tokens": accumulator.n_recon_tokens,
        "sq_err": accumulator.sq_err,
        "act_in_sum": act_in_sum.tolist(),
        "act_in_sq_sum": act_in_sq_sum.tolist(),
        **{
            name: measured.get(name)
            for name in ("ce_loss_recovered", "kl_divergence", "l2_ratio", "quality_texts")
        },
    }


def _logit_lens_table(lens: dict[str, np.ndarray]) -> pa.Table:
    """One row per feature, the `[d_sae, k]` arrays of `LogitLens` as fixed-size lists."""
    return pa.table(
        {
            name: pa.FixedSizeListArray.from_arrays(pa.array(array.ravel()), array.shape[1])
            for name, array in lens.items()
        }
    )


def _publish(tmp: Path, folder: Path, index: int, manifest: dict[str, Any]) -> None:
    """Move a finished shard from `tmp` into `folder`, its manifest last."""
    manifest_path = folder / MANIFESTS / f"shard={index}.json"
    manifest_path.unlink(missing_ok=True)  # from here on, shard `index` does not exist
    for old in _partitions(folder, index):
        shutil.rmtree(old)
    for new in _partitions(tmp, index):
        target = folder / new.relative_to(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, target)
    manifest_path.parent.mkdir(exist_ok=True)
    staged = tmp / manifest_path.name
    staged.write_text(json.dumps(manifest, indent=1))
    os.replace(staged, manifest_path)
    shutil.rmtree(tmp)


def _partitions(root: Path, index: int) -> list[Path]:
    """Partition folders of shard `index` under `root` (`KIND/shard=I`, `KIND/sae=X/shard=I`)."""
    name = f"shard={index}"
    found = [*root.glob(f"*/{name}"), *root.glob(f"*/*/{name}")]
    return [path for path in found if path.is_dir() and path.parts[len(root.parts)] != INCOMPLETE]


def _remove_stale_writes(folder: Path) -> None:
    """Delete this host's temporary shard folders whose writing process no longer runs."""
    host = socket.gethostname()
    for leftover in _incomplete_writes(folder):
        _, _, rest = leftover.name.partition(".")
        leftover_host, _, pid = rest.rpartition(".")
        if leftover_host == host and pid.isdecimal() and not pid_alive(int(pid)):
            logger.info("removing %s, left by a shard write that no longer runs", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _incomplete_writes(folder: Path) -> list[Path]:
    incomplete = folder / INCOMPLETE
    return sorted(incomplete.iterdir()) if incomplete.is_dir() else []


# --------------------------------------------------------------------------- reading


def read_shards(folder: str | Path) -> list[Shard]:
    """The finished shards of `folder`, checked to form one complete build (shards 0..N-1
    of the same source, corpus and settings, every listed file present with its rows);
    a StoreError says what is missing or inconsistent otherwise."""
    folder = Path(folder).absolute()
    if not folder.is_dir():
        raise StoreError(f"No shard folder at {markdown_escaped(folder)}.")
    unfinished = _incomplete_writes(folder)
    manifests = sorted((folder / MANIFESTS).glob("shard=*.json"))
    if not manifests:
        raise StoreError(
            f"{markdown_escaped(folder)} holds no finished shard (no {MANIFESTS}/shard=I.json)"
            + _unfinished_note(unfinished)
            + ". Write shards with `python -m explorer build --shard I/N --out FOLDER`."
        )
    shards = [_read_manifest(folder, path) for path in manifests]
    _check_agreement(folder, shards)
    n_shards = int(shards[0].manifest["n_shards"])
    present = {shard.index for shard in shards}
    missing = sorted(set(range(n_shards)) - present)
    if missing:
        unfinished_missing = [path for path in unfinished if _write_index(path) in missing]
        raise StoreError(
            f"{markdown_escaped(folder)} has {len(present)} of {n_shards} shards: missing shard(s) "
            f"{', '.join(map(str, missing))}"
            f"{markdown_escaped(_unfinished_note(unfinished_missing))}. "
            f"Run them with --shard I/{n_shards} and the same source, corpus and settings."
        )
    if unfinished:
        logger.warning("ignoring unfinished shard writes: %s", ", ".join(map(str, unfinished)))
    for shard in shards:
        _check_files(shard)
    return sorted(shards, key=lambda shard: shard.index)


def _write_index(path: Path) -> int | None:
    """The shard index of a temporary folder `shard=I.HOST.PID`, None if it is not one."""
    name, _, index = path.name.partition(".")[0].partition("=")
    return int(index) if name == "shard" and index.isdecimal() else None


def _unfinished_note(paths: Sequence[Path]) -> str:
    if not paths:
        return ""
    names = ", ".join(str(path) for path in paths)
    return f" (unfinished writes, killed or still running: {names})"


def _read_manifest(folder: Path, path: Path) -> Shard:
    try:
        manifest = json.loads(path.read_text())
        index = int(manifest["shard"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(
            f"Cannot read the shard manifest {markdown_escaped(path)} ({markdown_escaped(exc)}); "
            "rerun that shard."
        ) from exc
    if path.name != f"shard={index}.json":
        raise StoreError(
            f"{markdown_escaped(path)} describes shard {index}; its name must be "
            f"shard={index}.json."
        )
    if manifest.get("format") != FORMAT_VERSION:
        raise StoreError(
            f"{markdown_escaped(path)} has shard format "
            f"{markdown_escaped(manifest.get('format'))}; this explorer merges format "
            f"{FORMAT_VERSION}. Rewrite the shards with this version."
        )
    return Shard(folder, manifest)


def _check_agreement(folder: Path, shards: list[Shard]) -> None:
    """Every shard names the same build; the message groups the shards by what differs."""
    problems = []
    for key in AGREEING_KEYS:
        groups: dict[str, list[int]] = {}
        for shard in shards:
            value = json.dumps(shard.manifest.get(key), sort_keys=True)
            groups.setdefault(value, []).append(shard.index)
        if len(groups) > 1:
            described = "; ".join(
                f"shard(s) {', '.join(map(str, sorted(indices)))}: {_short(value)}"
                for value, indices in groups.items()
            )
            problems.append(f"{key} differs ({described})")
    if problems:
        raise StoreError(
            f"The shards in {markdown_escaped(folder)} are not of one build: "
            f"{markdown_escaped('. '.join(problems))}. "
            "Remove the foreign shards or rewrite them with the same source, corpus, "
            "settings and number of shards."
        )


def _short(value: str, limit: int = 120) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _check_files(shard: Shard) -> None:
    for name, rows in shard.manifest["rows"].items():
        path = shard.folder / name
        try:
            found = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(
                f"Shard {shard.index} in {markdown_escaped(shard.folder)} is damaged: cannot read "
                f"{markdown_escaped(name)} ({markdown_escaped(exc)}). "
                f"Rerun shard {shard.index}."
            ) from exc
        if found != rows:
            raise StoreError(
                f"Shard {shard.index} in {markdown_escaped(shard.folder)} is damaged: "
                f"{markdown_escaped(name)} has {markdown_escaped(found)} rows, "
                f"its manifest says {markdown_escaped(rows)}. Rerun shard {shard.index}."
            )


# --------------------------------------------------------------------------- merging


def merge_shards(
    folder: str | Path, out: str | Path, derive: Callable[[Path], list[Derived]] | None = None
) -> MergeReport:
    """Load every shard of `folder` into one store at `out` (atomically replaced); its
    tables equal those of a single build of the same corpus (see the module docstring);
    `derive` adds the analyses a store keeps (`StoreWriter`'s argument)."""
    started = time.perf_counter()
    shards = read_shards(folder)
    first = shards[0].manifest
    saes = [SaeInfo(**info) for info in first["saes"]]
    meta = first["meta"] | {"shards": str(len(shards))}
    with StoreWriter(out, meta=meta, derive=derive) as writer:
        for info in saes:
            writer.add_sae(info)
        n_texts = writer.add_texts_parquet(_all_files(shards, "texts"))
        n_tokens = writer.add_tokens_parquet(_all_files(shards, "tokens"))
        n_rows = {}
        for info in saes:
            n_rows[info.sae] = writer.add_acts_parquet(
                info.sae, _all_files(shards, "acts", info.sae)
            )
            stats = merged_stats(_all_files(shards, "stats", info.sae))
            writer.add_feature_stats(info.sae, stats)
            writer.set_quality(info.sae, **_merged_quality(shards, info, stats))
            writer.add_logit_lens(info.sae, **_logit_lens(shards[0], info.sae))
            k = int(first["settings"]["topk"])
            writer.add_top_examples(info.sae, merged_topk(_all_files(shards, "topk", info.sae), k))
    return MergeReport(
        Path(out), len(shards), n_texts, n_tokens, n_rows, time.perf_counter() - started
    )


def merged_top_examples(folder: str | Path, sae: str, k: int = 20) -> pd.DataFrame:
    """feature, rank, text_id, pos, value: each feature's `k` largest activations over the
    shards' running top-k (ties by text_id, pos), without merging the activations."""
    shards = read_shards(folder)
    if sae not in {info["sae"] for info in shards[0].manifest["saes"]}:
        raise StoreError(
            f"The shards in {markdown_escaped(folder)} have no SAE {markdown_escaped(repr(sae))}."
        )
    if not 1 <= k <= int(shards[0].manifest["settings"]["topk"]):
        raise InputError(f"k must be 1 to the shards' topk setting, got {k}.")
    return merged_topk(_all_files(shards, "topk", sae), k)


def _all_files(shards: list[Shard], kind: str, sae: str | None = None) -> list[Path]:
    return [path for shard in shards for path in shard.files(kind, sae)]


def _merged_quality(shards: list[Shard], info: SaeInfo, stats: pd.DataFrame) -> dict[str, float]:
    """The single build's quality numbers from the shards' sums (see the module docstring)."""
    rows = quality_rows(_all_files(shards, "quality"), info.sae)
    assert len(rows) == len(shards), f"one quality row per shard for {info.sae}"
    losses = rows.dropna(subset=["quality_texts"])
    assert len(losses) == 1, "shard 0 alone carries the spliced-forward losses"
    sample = losses.iloc[0]
    n_active = stats["n_active_tokens"].to_numpy()
    ev = explained_variance(
        float(rows["sq_err"].sum()),
        torch.tensor(np.stack(rows["act_in_sum"].to_numpy()).sum(0)),
        torch.tensor(np.stack(rows["act_in_sq_sum"].to_numpy()).sum(0)),
        int(rows["n_recon_tokens"].sum()),
    )
    return {
        "l0": float(n_active.sum()) / max(int(rows["n_tokens"].sum()), 1),
        "explained_variance": ev,
        "dead_fraction": float((n_active == 0).mean()),
        "dense_fraction": dense_fraction(n_active, int(rows["n_tokens"].sum())),
        "ce_loss_recovered": float(sample["ce_loss_recovered"]),
        "kl_divergence": float(sample["kl_divergence"]),
        "l2_ratio": float(sample["l2_ratio"]),
        "quality_texts": int(sample["quality_texts"]),
    }


def _logit_lens(shard: Shard, sae: str) -> dict[str, Any]:
    """`StoreWriter.add_logit_lens` arguments from shard 0's files."""
    (lens_file,) = shard.files("logit_lens", sae)
    (vocab_file,) = shard.files("vocab")
    lens = pq.read_table(lens_file)
    arrays = {
        name: np.asarray(column.combine_chunks().flatten()).reshape(len(lens), -1)
        for name, column in zip(lens.column_names, lens.columns, strict=True)
    }
    vocab = pq.read_table(vocab_file).sort_by("token_id")["token"].to_numpy(zero_copy_only=False)
    return arrays | {"vocab": vocab}
