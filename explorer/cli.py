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

from explorer.errors import ExplorerError


def _demo_train(args: argparse.Namespace) -> None:
    import torch

    from explorer.demo import PRESETS, bundle_path, train_bundle

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else bundle_path(args.preset)
    bundle = train_bundle(PRESETS[args.preset], out)
    summary = {
        "bundle": str(out),
        "lm_held_out_loss": bundle.manifest["lm_held_out_loss"],
        "seconds": bundle.manifest["seconds"],
        "sae_quality": bundle.manifest.get("sae_quality"),
    }
    print(json.dumps(summary, indent=2))


def _demo_info(args: argparse.Namespace) -> None:
    from explorer.demo import bundle_path, load_bundle

    bundle = load_bundle(bundle_path(args.preset))
    print(json.dumps({k: v for k, v in bundle.manifest.items() if k != "lm_loss_curve"}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train or inspect the offline demo bundle")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True)
    train = demo_commands.add_parser("train", help="train a demo bundle (model, tokenizer, SAEs)")
    train.add_argument("--preset", choices=["demo", "tiny"], default="tiny")
    train.add_argument("--out", help="bundle folder (default: the preset's own place)")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    train.set_defaults(run=_demo_train)
    info = demo_commands.add_parser("info", help="print a bundle's manifest")
    info.add_argument("--preset", default="demo", help="demo, tiny or a bundle folder")
    info.set_defaults(run=_demo_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ExplorerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
