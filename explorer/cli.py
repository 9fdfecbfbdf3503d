"""Command line: `python -m explorer ...`.

Owns argument parsing and turning `ExplorerError`s into a one-line message and exit status
2 (never a traceback for user mistakes). The work itself lives in the library modules.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from explorer.corpus import DEMO_CORPUS
from explorer.errors import ExplorerError, InputError, csv_safe, markdown_escaped, plain_text

if TYPE_CHECKING:
    from explorer.build.extract import BuildSettings, Progress
    from explorer.build.shards import MergeReport


def _default_store() -> str:
    """EXPLORER_STORE, else the demo store in the cache folder (`explorer.settings`)."""
    from explorer.settings import from_environ

    return from_environ().store


def _demo_train(args: argparse.Namespace) -> None:
    import torch

    from explorer.build.demo_training import train_bundle
    from explorer.sources.demo_bundle import PRESETS, bundle_path

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else bundle_path(args.preset)
    reuse = Path(args.reuse_lm) if args.reuse_lm else None
    bundle = train_bundle(PRESETS[args.preset], out, reuse_lm=reuse)
    summary = {
        "bundle": str(out),
        "lm_held_out_loss": bundle.manifest["lm_held_out_loss"],
        "seconds": bundle.manifest["seconds"],
        "sae_quality": bundle.manifest.get("sae_quality"),
    }
    print(json.dumps(summary, indent=2))


def _demo_info(args: argparse.Namespace) -> None:
    from explorer.sources.demo_bundle import bundle_path, load_bundle

    bundle = load_bundle(bundle_path(args.preset))
    print(json.dumps({k: v for k, v in bundle.manifest.items() if k != "lm_loss_curve"}, indent=2))


def _build(args: argparse.Namespace) -> None:
    import torch
    from tqdm import tqdm

    from explorer.build.extract import BuildSettings

    torch.set_num_threads(args.threads)
    settings = BuildSettings(
        batch_size=args.batch_size,
        max_texts=args.max_texts,
        hooks=tuple(args.hooks.split(",")) if args.hooks else None,
    )
    bars: list[tqdm] = []  # created at the first batch, so its rate excludes model loading

    def progress(done: int, total: int, seconds: float) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="tok", unit_scale=True, desc="extracting"))
        bars[0].update(done - bars[0].n)

    if args.engine != "ray" and (args.shards is not None or args.shard_dir):
        raise InputError("--shards and --shard-dir go with --engine ray.")
    from explorer.sources.memory import check_fits, estimate_source

    check_fits(estimate_source(args.source))  # before loading: refuse what would not fit
    try:
        if args.shard:
            _build_shard(args, settings, progress)
        elif args.engine == "ray":
            _build_with_ray(args, settings)
        else:
            _build_store(args, settings, progress)
    finally:
        for bar in bars:
            bar.close()


def _build_store(args: argparse.Namespace, settings: BuildSettings, progress: Progress) -> None:
    from explorer.analysis.precompute import derive
    from explorer.build.single import build_store

    out = args.out or _default_store()
    report = build_store(args.source, args.corpus, out, settings, progress, derive)
    print(
        f"wrote {report.path}: {report.n_texts:,} texts, {report.n_tokens:,} tokens, "
        f"{sum(report.n_rows.values()):,} activation rows, "
        f"{report.tokens_per_second:,.0f} tokens/s"
    )
    if report.truncated_texts:
        print(f"note: {report.truncated_texts} texts were cut at the model's context length")


def _build_shard(args: argparse.Namespace, settings: BuildSettings, progress: Progress) -> None:
    from explorer.build.shards import ShardSpec, write_shard
    from explorer.corpus import resolve_corpus
    from explorer.sources.source import load_source

    shard = ShardSpec.parse(args.shard)
    if args.engine != "local":
        raise InputError("--shard writes one shard here; --engine ray runs every shard itself.")
    if not args.out:
        raise InputError("--shard writes Parquet into a folder: give --out FOLDER.")
    corpus = resolve_corpus(args.corpus)  # checked before the model loads
    report = write_shard(load_source(args.source), corpus, args.out, shard, settings, progress)
    print(
        f"wrote shard {report.shard} into {report.folder}: {report.n_texts:,} texts, "
        f"{report.n_tokens:,} tokens, {sum(report.n_rows.values()):,} activation rows "
        f"in {report.seconds:,.1f} s"
    )


def _build_with_ray(args: argparse.Namespace, settings: BuildSettings) -> None:
    from explorer.analysis.precompute import derive
    from explorer.build.ray_engine import build_with_ray

    report = build_with_ray(
        args.source,
        args.corpus,
        args.out or _default_store(),
        settings,
        workers=args.workers,
        n_shards=args.shards,
        shard_folder=args.shard_dir,
        threads=args.threads,
        derive=derive,
    )
    _print_merge(report)


def _merge(args: argparse.Namespace) -> None:
    from explorer.analysis.precompute import derive
    from explorer.build.shards import merge_shards

    _print_merge(merge_shards(args.folder, args.out, derive))


def _print_merge(report: MergeReport) -> None:
    print(
        f"wrote {report.path} from {report.n_shards} shards: {report.n_texts:,} texts, "
        f"{report.n_tokens:,} tokens, {sum(report.n_rows.values()):,} activation rows, "
        f"merged in {report.seconds:,.1f} s"
    )


def _info(args: argparse.Namespace) -> None:
    from explorer.store.reader import Store

    with Store.open(args.store) as store:
        print(f"store {args.store}")
        for key, value in sorted(store.meta().items()):
            print(f"  {key}: {value}")
        counts = store.table_counts()
        size = Path(args.store).stat().st_size
        line = f"file: {size / 1e6:,.1f} MB"
        if counts["acts"]:
            line += f", {size / counts['acts']:.2f} bytes per activation row"
        print(line)
        print("tables:")
        for table, count in counts.items():
            print(f"  {table:<18} {count:>12,} rows")
        saes = store.saes()
        columns = ["sae", "hook_name", "layer", "d_sae", "l0", "explained_variance"]
        columns += ["ce_loss_recovered", "dead_fraction"]
        print("SAE quality:")
        print(saes[columns].to_string(index=False, float_format=lambda x: f"{x:.4f}"))


def _export(args: argparse.Namespace) -> None:
    from explorer.store.reader import Store

    out = args.out or f"{Path(args.store).stem}-{args.table}.{args.format}"
    with Store.open(args.store) as store:
        written = store.export(args.table, out, args.format, force=args.force)
    print(f"wrote {written}")


def _specialists(args: argparse.Namespace) -> None:
    from explorer.analysis.controls import findings, load_chance_baseline
    from explorer.analysis.replication import EXTERNAL_COLUMNS, load_store_replication
    from explorer.analysis.specialists import CELL_KEYS, SpecialistSettings, load_specialists
    from explorer.store.reader import Store

    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{markdown_escaped(out)} exists; give --force to overwrite it.")
    overrides = {
        name: getattr(args, name)
        for name in SpecialistSettings.field_names()
        if getattr(args, name, None) is not None
    }
    settings = SpecialistSettings(**overrides)
    with Store.open(args.store) as store:
        result = load_specialists(store, settings)
        baseline = load_chance_baseline(store, settings)
        rows = findings(result.table, baseline, settings.measure)
        replicated = ""
        if args.replicate_on:
            with Store.open(args.replicate_on) as other:
                external = load_store_replication(store, other, result.table, settings)
            rows = rows.merge(external.cells, on=CELL_KEYS, how="left")
            rows["external_tested"] = rows["external_tested"].fillna(False).astype(bool)
            rows["external_replicated"] = rows["external_replicated"].fillna(False).astype(bool)
            tested = external.rates["discovered"].sum()
            replicated = (
                f"; {int(external.rates['replicated'].sum()):,} of the {int(tested):,} "
                f"re-tested specialists replicate on {other.path.name} (columns "
                f"{', '.join(EXTERNAL_COLUMNS)})"
            )
    csv_safe(rows).to_csv(out, index=False)
    print(
        f"wrote {out}: {len(rows):,} tested (SAE, feature, category) cells, "
        f"{int(rows['is_specialist'].sum()):,} specialists ({settings.measure}, "
        f"{settings.permutations} permutations){replicated}"
    )


def _add_specialist_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per `SpecialistSettings` field (underscores as dashes); unset: default."""
    from dataclasses import fields

    from explorer.analysis.specialists import SpecialistSettings

    choices = SpecialistSettings.choices()
    for item in fields(SpecialistSettings):
        flag = "--" + item.name.replace("_", "-")
        if item.name in choices:
            parser.add_argument(
                flag, dest=item.name, choices=choices[item.name], help=f"default {item.default}"
            )
        else:
            kind = int if isinstance(item.default, int) else float
            parser.add_argument(flag, dest=item.name, type=kind, help=f"default {item.default}")


def _describe(args: argparse.Namespace) -> None:
    import os

    import pandas as pd

    from explorer.analysis import descriptions as describe
    from explorer.store.reader import Store, _export_target

    with Store.open(args.store) as store:
        out = _export_target(Path(args.out).absolute(), store._protected_files(), args.force)
        saes = [store.sae(args.sae).name] if args.sae else store.saes()["sae"].tolist()
        tables = []
        for sae in saes:
            scores = describe.load_scores(store, sae)
            tables.append(
                describe.described_features(
                    describe.load_descriptions(store, sae), scores, store.labels(sae)
                )
            )
            summary = describe.score_distribution(scores)
            print(
                f"{sae}: {summary['n_scored']:,} of {summary['n_live']:,} live features scored; "
                f"F1 median {summary['f1_median']:.2f} (quartiles {summary['f1_q25']:.2f}-"
                f"{summary['f1_q75']:.2f}), {summary['f1_at_least_half']:.0%} at 0.5 or more; "
                f"balanced accuracy mean {summary['balanced_accuracy_mean']:.2f}"
            )
    partial = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        csv_safe(describe.flat_table(pd.concat(tables, ignore_index=True))).to_csv(
            partial, index=False
        )
        os.replace(partial, out)
    except OSError as exc:
        raise InputError(
            f"Cannot write {markdown_escaped(out)} ({markdown_escaped(exc.strerror)})."
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {out}")


def _derive(args: argparse.Namespace) -> None:
    from explorer.analysis.precompute import derive
    from explorer.build.derive_store import derive_store

    report = derive_store(args.store, derive, args.source)
    print(f"kept {', '.join(report.kinds)} in {report.path} in {report.seconds:,.1f} s")
    if report.atlas_source is not None:
        print(f"atlas: laid out from the decoders of the source {report.atlas_source}")
        return
    kept_before = (
        "the atlas the store kept before stays as it was"
        if report.atlas_before
        else "the store keeps no atlas, so the Atlas page lays it out from the loaded source "
        "on a visit"
    )
    print(
        plain_text(
            f"note: the atlas was not kept: {report.atlas_note}; {kept_before}. To keep it, "
            "give --source the source whose SAEs the store was built from."
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train or inspect the offline demo bundle")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True)
    train = demo_commands.add_parser("train", help="train a demo bundle (model, tokenizer, SAEs)")
    train.add_argument("--preset", choices=["demo", "tiny"], default="tiny")
    train.add_argument("--out", help="bundle folder (default: the preset's own place)")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    train.add_argument(
        "--reuse-lm", help="bundle folder whose tokenizer and LM to keep (retrain SAEs only)"
    )
    train.set_defaults(run=_demo_train)
    manifest = demo_commands.add_parser("info", help="print a bundle's manifest")
    manifest.add_argument("--preset", default="demo", help="demo, tiny or a bundle folder")
    manifest.set_defaults(run=_demo_info)

    build = commands.add_parser("build", help="extract a corpus through a source into a store")
    build.add_argument("--source", default="demo", help="source spec (see README), e.g. demo")
    build.add_argument(
        "--corpus",
        default=DEMO_CORPUS,
        help="bundled, arithmetic[:N], FILE, A+B, FILE?rules=R (default: the app's demo "
        f"corpus, {DEMO_CORPUS})",
    )
    build.add_argument(
        "--out",
        help="store file to (re)write (default: $EXPLORER_STORE, else cache/demo.duckdb); "
        "with --shard, the shard folder",
    )
    build.add_argument("--max-texts", type=int, help="use only the first N texts")
    build.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    build.add_argument("--hooks", help="comma-separated hook or SAE names (default: all)")
    build.add_argument("--threads", type=int, default=2, help="torch CPU threads (per worker)")
    build.add_argument(
        "--shard", metavar="I/N", help="write only shard I of N as Parquet into the --out folder"
    )
    build.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: run every shard on Ray Data actors, then merge (pip install -r "
        "requirements-scale.txt)",
    )
    build.add_argument("--workers", type=int, default=2, help="--engine ray: model actors")
    build.add_argument("--shards", type=int, help="--engine ray: shards (default: --workers)")
    build.add_argument(
        "--shard-dir",
        help="--engine ray: shard folder, kept after the merge (default: a temporary folder "
        "beside --out, removed after the merge)",
    )
    build.set_defaults(run=_build)

    merge = commands.add_parser("merge", help="merge a folder of build shards into one store")
    merge.add_argument("folder", help="the folder that build --shard I/N --out FOLDER wrote")
    merge.add_argument("--out", required=True, help="store file to (re)write")
    merge.set_defaults(run=_merge)

    info = commands.add_parser("info", help="tables, row counts and SAE quality of a store")
    info.add_argument("store")
    info.set_defaults(run=_info)

    export = commands.add_parser("export", help="write one table of a store to CSV or Parquet")
    export.add_argument("store")
    export.add_argument("--table", required=True)
    export.add_argument("--format", choices=["csv", "parquet"], default="csv")
    export.add_argument("--out", help="output file (default: STORE-TABLE.FORMAT)")
    export.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output file (never a store, its labels file or a database)",
    )
    export.set_defaults(run=_export)

    derive = commands.add_parser(
        "derive",
        help="compute the analyses a build keeps in the store (specialists, chance baseline, "
        "descriptions, taxonomy, lineage, probing and, given a source holding the store's "
        "SAEs, the atlas) for a store built without them; the store file is replaced by a "
        "copy that has them",
    )
    derive.add_argument("store")
    derive.add_argument(
        "--source",
        help="source spec whose SAEs (same name, d_in and d_sae as the store's) give the "
        "atlas its decoder directions; 'none' for no atlas (default: the source the store "
        "records, when it loads here)",
    )
    derive.set_defaults(run=_derive)

    describe = commands.add_parser(
        "describe", help="write every feature's automatic description and its score to CSV"
    )
    describe.add_argument("store")
    describe.add_argument("--out", required=True, help="CSV file to write")
    describe.add_argument("--sae", help="one SAE only (default: every SAE)")
    describe.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output file (never a store, its labels file or a database)",
    )
    describe.set_defaults(run=_describe)

    specialists = commands.add_parser(
        "specialists",
        help="write the specialist findings (every tested cell, with its controls) to CSV",
    )
    specialists.add_argument("store")
    specialists.add_argument("--out", required=True, help="CSV file to write")
    specialists.add_argument("--force", action="store_true", help="overwrite --out")
    specialists.add_argument(
        "--replicate-on",
        metavar="OTHER_STORE",
        help="re-test the specialists on this store's texts (built with the same source from "
        "another corpus); adds the columns external_tested, external_replicated, "
        "external_score",
    )
    _add_specialist_flags(specialists)
    specialists.set_defaults(run=_specialists)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ExplorerError as error:
        print(f"error: {plain_text(error)}", file=sys.stderr)
        return 2
    return 0
