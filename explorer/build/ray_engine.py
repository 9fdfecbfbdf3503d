"""The Ray engine of sharded builds: every shard of `explorer.build.shards` on Ray Data actors.

Owns scheduling: a Ray Dataset of shard indices goes through `map_batches` with a callable
class on a pool of `workers` actors (`ActorPoolStrategy`, which replaced `concurrency=N` in
Ray 2.51), so each actor loads the source once (one model per actor, on a GPU when the cluster
has them) and writes whole shards with `explorer.build.shards.write_shard`; the driver then merges
the folder. The shard format, the assignment of texts and the merge are `explorer.build.shards`'s:
a Ray build writes the same files as `build --shard I/N` run N times, and its store equals a
single build's.

Ray is an optional extra (`pip install -r requirements-scale.txt`). Without an address
(`RAY_ADDRESS`), `ray.init` starts a local cluster with one CPU per worker. On a real
cluster the shard folder must be a path that every node and the driver see (a shared file
system), and the explorer package must be installed on every node.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explorer.build.extract import BuildSettings
from explorer.build.shards import MergeReport, ShardSpec, merge_shards, write_shard
from explorer.corpus import Corpus, resolve_corpus
from explorer.errors import ExplorerError, InputError, StoreError, markdown_escaped
from explorer.sources.source import Source, load_source
from explorer.store.derived import Derived

MAX_WORKERS = 1024


@dataclass(frozen=True)
class _Job:
    """What every actor needs to write any shard of one build."""

    source: str
    corpus: Corpus
    folder: str
    n_shards: int
    settings: BuildSettings
    threads: int


class ShardWorker:
    """A Ray Data actor: loads the source once, then writes the shards it is given."""

    def __init__(self, job: _Job) -> None:
        torch.set_num_threads(job.threads)
        self._job = job
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._loaded = load_source(job.source, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        job = self._job
        reports = [
            write_shard(
                self._loaded,
                job.corpus,
                job.folder,
                ShardSpec(int(index), job.n_shards),
                job.settings,
            )
            for index in batch["shard"]
        ]
        return {
            "shard": np.array([r.shard.index for r in reports]),
            "n_tokens": np.array([r.n_tokens for r in reports]),
            "seconds": np.array([r.seconds for r in reports]),
        }


def build_with_ray(
    source: Source | str,
    corpus: Corpus | str,
    out: str | Path,
    settings: BuildSettings | None = None,
    *,
    workers: int = 2,
    n_shards: int | None = None,
    shard_folder: str | Path | None = None,
    threads: int = 1,
    derive: Callable[[Path], list[Derived]] | None = None,
) -> MergeReport:
    """Write `n_shards` (default `workers`) shards on `workers` Ray actors, then merge them
    into the store `out` (`derive`: see `merge_shards`). The shards go to `shard_folder` and
    stay there, or to a temporary folder beside `out` that is removed after the merge."""
    ray = _import_ray()
    settings = settings or BuildSettings()
    settings.validate()
    if not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"--workers must be 1 to {MAX_WORKERS}, got {workers}.")
    if not 1 <= threads <= 256:
        raise InputError(f"--threads must be 1 to 256, got {threads}.")
    n_shards = workers if n_shards is None else n_shards
    ShardSpec(0, n_shards)  # checks the count
    corpus = resolve_corpus(corpus) if isinstance(corpus, str) else corpus
    spec = source.spec() if isinstance(source, Source) else Source.parse(source).spec()
    out = Path(out).absolute()
    if not out.parent.is_dir():
        raise StoreError(
            f"Cannot build {markdown_escaped(out)}: the folder "
            f"{markdown_escaped(out.parent)} does not exist."
        )
    temporary = shard_folder is None
    folder = out.with_name(f".{out.name}.shards-{os.getpid()}") if temporary else shard_folder
    job = _Job(spec, corpus, str(Path(folder).absolute()), n_shards, settings, threads)
    started_here = not ray.is_initialized()
    if started_here:
        _init_local(ray, workers)
    try:
        _run_shards(ray, job, workers)
        return merge_shards(job.folder, out, derive)
    finally:
        if started_here:
            ray.shutdown()
        if temporary:
            shutil.rmtree(job.folder, ignore_errors=True)


def _run_shards(ray: Any, job: _Job, workers: int) -> None:
    dataset = ray.data.from_items([{"shard": index} for index in range(job.n_shards)])
    written = dataset.map_batches(
        ShardWorker,
        fn_constructor_kwargs={"job": job},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        num_gpus=1 if torch.cuda.is_available() else 0,
    )
    try:
        rows = written.take_all()
    except ExplorerError:
        raise
    except Exception as exc:  # Ray wraps a worker's error in its own exception types
        raise StoreError(
            f"A Ray worker failed while writing shards: {markdown_escaped(exc)}"
        ) from exc
    done = sorted(int(row["shard"]) for row in rows)
    if done != list(range(job.n_shards)):
        raise StoreError(f"Ray wrote shards {done}, expected 0 to {job.n_shards - 1}.")


def _init_local(ray: Any, workers: int) -> None:
    """Connect to `RAY_ADDRESS` if set, else start a local cluster of `workers` CPUs whose
    workers import this checkout of the explorer."""
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    ray.init(
        num_cpus=workers,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
    )


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise InputError(
            "--engine ray needs Ray Data, an optional extra: pip install -r requirements-scale.txt"
        ) from exc
    return ray
