"""Training the offline demo bundle: corpus, tokenizer, language model and SAEs.

No model can be downloaded on the machines that build and test this project, so the
explorer trains its own. This module owns the whole recipe and the bundle format:

- a training corpus gathered deterministically from text every machine has after
  `pip install` (the standard library's sources and docstrings, installed packages' README
  metadata) plus the project's labelled texts and generated arithmetic;
- a byte-level BPE tokenizer trained with `tokenizers`, saved as a `PreTrainedTokenizerFast`
  (TransformerLens reloads tokenizers from disk by name, so it must be saved);
- a TransformerLens `HookedTransformer` trained from a config with a plain torch loop;
- SAELens TopK SAEs on the residual stream after every block, trained with SAELens's own
  `MultiSAETrainingRunner` (one LM forward feeds every SAE);
- a manifest with the corpus sha, package versions and measured quality.


The bundle format and its loading live in `explorer.sources.demo_bundle`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerFast

from explorer.errors import SourceError, markdown_escaped
from explorer.sources.demo_bundle import (
    CORPUS_PACKAGES,
    MODEL_NAME,
    SPECIAL_TOKEN,
    DemoBundle,
    DemoPreset,
    build_model,
    load_bundle,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- corpus


def _stdlib_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "ensurepip", "turtledemo"}
    return sorted(
        path
        for path in stdlib.rglob("*.py")
        if not skip.intersection(path.relative_to(stdlib).parts)
    )


def _package_readmes() -> list[tuple[str, str]]:
    readmes = []
    for name in CORPUS_PACKAGES:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        body = dist.read_text("METADATA") or ""
        # the long description follows the first blank line of the METADATA headers
        readmes.append((f"{name}=={dist.version}", body.partition("\n\n")[2]))
    return readmes


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size) if text[i : i + size].strip()]


def gather_training_texts(preset: DemoPreset) -> tuple[list[str], dict]:
    """Collect the LM's training texts deterministically; returns texts and a manifest."""
    from explorer.corpus import arithmetic_corpus, bundled_corpus

    rng = random.Random(preset.seed)
    labelled = bundled_corpus().texts["text"].tolist()
    arithmetic = arithmetic_corpus(n_texts=2000, seed=preset.seed + 1).texts["text"].tolist()
    # The labelled texts are few; repeat them so the LM models every category.
    texts: list[str] = labelled * 8 + arithmetic
    package_versions = {}
    pool: list[str] = []
    for name_version, body in _package_readmes():
        package_versions[name_version.split("==")[0]] = name_version.split("==")[1]
        pool.extend(_chunks(body, 2000))
    stdlib_files = _stdlib_files()
    rng.shuffle(stdlib_files)
    budget = preset.corpus_chars - sum(map(len, texts)) - sum(map(len, pool))
    for path in stdlib_files:
        if budget <= 0:
            break
        source = path.read_text(encoding="utf-8", errors="replace")
        pool.extend(_chunks(source, 2000))
        budget -= len(source)
    rng.shuffle(pool)
    texts.extend(pool)
    rng.shuffle(texts)
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    manifest = {
        "n_texts": len(texts),
        "n_chars": sum(map(len, texts)),
        "sha256": digest,
        "python": sys.version.split()[0],
        "package_versions": package_versions,
    }
    return texts, manifest


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Byte-level BPE with one special token serving as BOS, EOS and padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKEN} $A", special_tokens=[(SPECIAL_TOKEN, 0)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
        add_bos_token=True,
    )
    fast.save_pretrained(out_dir)
    return PreTrainedTokenizerFast.from_pretrained(out_dir)


def token_windows(tokenizer: PreTrainedTokenizerFast, texts: list[str], n_ctx: int) -> torch.Tensor:
    """Concatenate `BOS text BOS text ...` and cut windows of n_ctx, each starting with BOS."""
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    stream = torch.tensor([token for doc in ids for token in doc], dtype=torch.long)
    body = n_ctx - 1
    n_windows = len(stream) // body
    windows = stream[: n_windows * body].view(n_windows, body)  # [n_windows, n_ctx - 1]
    bos = torch.full((n_windows, 1), tokenizer.bos_token_id, dtype=torch.long)
    return torch.cat([bos, windows], dim=1)  # [n_windows, n_ctx]


# --------------------------------------------------------------------------- model


def model_config(preset: DemoPreset, d_vocab: int) -> dict:
    return {
        "n_layers": preset.n_layers,
        "d_model": preset.d_model,
        "n_heads": preset.n_heads,
        "d_head": preset.d_model // preset.n_heads,
        "d_mlp": preset.d_mlp,
        "n_ctx": preset.n_ctx,
        "d_vocab": d_vocab,
        "act_fn": "gelu_new",
        "normalization_type": "LN",
        "model_name": MODEL_NAME,
        "seed": preset.seed,
        "device": "cpu",
    }


def _lm_loss(model: HookedTransformer, batch: torch.Tensor) -> torch.Tensor:
    return model(batch, return_type="loss")


def train_lm(model: HookedTransformer, train: torch.Tensor, preset: DemoPreset) -> list[float]:
    """Plain AdamW loop with warmup and cosine decay; returns the loss curve (every 50 steps)."""
    generator = torch.Generator().manual_seed(preset.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=preset.lm_lr, weight_decay=0.05, betas=(0.9, 0.95), fused=True
    )
    warmup = max(1, preset.lm_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, preset.lm_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    curve = []
    started = time.perf_counter()
    for step in range(preset.lm_steps):
        idx = torch.randint(0, len(train), (preset.lm_batch_size,), generator=generator)
        loss = _lm_loss(model, train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 50 == 0 or step == preset.lm_steps - 1:
            curve.append(round(loss.item(), 4))
            elapsed = time.perf_counter() - started
            log.info("lm step %d/%d loss %.3f (%.0fs)", step, preset.lm_steps, loss, elapsed)
    model.eval()
    return curve


@torch.inference_mode()
def held_out_loss(model: HookedTransformer, windows: torch.Tensor, batch_size: int = 32) -> float:
    losses = [
        float(_lm_loss(model, windows[i : i + batch_size]))
        for i in range(0, len(windows), batch_size)
    ]
    return sum(losses) / len(losses)


def save_model(model: HookedTransformer, config: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, out_dir / "model.safetensors")


# --------------------------------------------------------------------------- SAEs


def train_saes(
    model: HookedTransformer, train: torch.Tensor, preset: DemoPreset, out_dir: Path
) -> None:
    """Train one TopK SAE per residual hook with SAELens's multi-SAE runner."""
    from datasets import Dataset
    from sae_lens import LoggingConfig, TopKTrainingSAEConfig
    from sae_lens.multi_sae_training_runner import (
        MultiSAETrainingRunner,
        MultiSAETrainingRunnerConfig,
    )

    hooks = preset.hook_names()
    sae_configs = {
        hook: TopKTrainingSAEConfig(d_in=preset.d_model, d_sae=preset.d_sae, k=preset.k)
        for hook in hooks
    }
    with tempfile.TemporaryDirectory() as scratch:
        cfg = MultiSAETrainingRunnerConfig(
            saes=sae_configs,
            hook_names={hook: hook for hook in hooks},
            model_name=MODEL_NAME,
            context_size=preset.n_ctx,
            streaming=False,
            training_tokens=preset.sae_training_tokens,
            train_batch_size_tokens=preset.sae_batch_tokens,
            store_batch_size_prompts=16,
            n_batches_in_buffer=max(8, 4 * preset.sae_batch_tokens // preset.n_ctx),
            lr=preset.sae_lr,
            lr_warm_up_steps=preset.sae_training_tokens // preset.sae_batch_tokens // 20,
            lr_scheduler_name="cosineannealing",
            lr_decay_steps=preset.sae_training_tokens // preset.sae_batch_tokens // 5,
            prepend_bos=False,  # windows already start with BOS
            exclude_special_tokens=True,
            dead_feature_window=preset.sae_dead_window,
            n_eval_batches=2,
            n_batches_for_norm_estimate=10,
            seed=preset.seed,
            logger=LoggingConfig(log_to_wandb=False),
            checkpoint_path=None,
            output_path=str(Path(scratch) / "saes"),
        )
        dataset = Dataset.from_dict({"tokens": train.tolist()})
        runner = MultiSAETrainingRunner(cfg, override_dataset=dataset, override_model=model)
        trained = runner.run()
        for hook, training_sae in trained.items():
            folder = out_dir / hook
            training_sae.save_inference_model(str(folder))
            cfg_path = folder / "cfg.json"
            sae_cfg = json.loads(cfg_path.read_text())
            sae_cfg.setdefault("metadata", {}).update(
                {
                    "model_name": MODEL_NAME,
                    "hook_name": hook,
                    "prepend_bos": True,
                    "model_from_pretrained_kwargs": {},
                }
            )
            cfg_path.write_text(json.dumps(sae_cfg, indent=2))


def _reusable_lm(preset: DemoPreset, bundle: Path, corpus_sha: str) -> dict:
    """The manifest of a bundle whose tokenizer and LM this preset may reuse, or an error."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    old = DemoPreset(**{**asdict(preset), **manifest["preset"]}).lm_fields()
    if old != preset.lm_fields() or manifest["corpus"]["sha256"] != corpus_sha:
        raise SourceError(
            f"The LM of {markdown_escaped(bundle)} was trained with other settings or text; "
            "train the whole bundle instead (drop --reuse-lm)."
        )
    return manifest


def train_bundle(
    preset: DemoPreset, out: Path, measure_quality: bool = True, reuse_lm: Path | None = None
) -> DemoBundle:
    """Train a whole bundle into `out` (written to a temporary folder, then moved).

    With `reuse_lm`, the tokenizer and LM are copied from that bundle (which must have been
    trained from the same LM settings and text) and only the SAEs are trained again.
    """
    from explorer.build.quality import sae_quality

    torch.manual_seed(preset.seed)
    started = time.perf_counter()
    texts, corpus_manifest = gather_training_texts(preset)
    work = Path(
        tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent if out.parent.exists() else None)
    )
    try:
        if reuse_lm is not None:
            old_manifest = _reusable_lm(preset, reuse_lm, corpus_manifest["sha256"])
            shutil.copytree(reuse_lm / "tokenizer", work / "tokenizer")
            shutil.copytree(reuse_lm / "model", work / "model")
            tokenizer = PreTrainedTokenizerFast.from_pretrained(work / "tokenizer")
        else:
            tokenizer = train_tokenizer(texts, preset.vocab_size, work / "tokenizer")
        windows = token_windows(tokenizer, texts, preset.n_ctx)
        perm = torch.randperm(len(windows), generator=torch.Generator().manual_seed(preset.seed))
        n_held = max(8, len(windows) // 50)
        held, train = windows[perm[:n_held]], windows[perm[n_held:]]
        config = model_config(preset, d_vocab=len(tokenizer))
        torch.manual_seed(preset.seed)
        model = build_model(config, tokenizer)
        if reuse_lm is not None:
            model.load_state_dict(load_file(work / "model" / "model.safetensors"))
            curve, lm_seconds = old_manifest["lm_loss_curve"], old_manifest["seconds"]["lm"]
        else:
            lm_started = time.perf_counter()
            curve = train_lm(model, train, preset)
            lm_seconds = time.perf_counter() - lm_started
            save_model(model, config, work / "model")
        sae_started = time.perf_counter()
        train_saes(model, train, preset, work / "saes")
        sae_seconds = time.perf_counter() - sae_started
        manifest = {
            "model_name": MODEL_NAME,
            "preset": asdict(preset),
            "hook_names": preset.hook_names(),
            "corpus": corpus_manifest,
            "n_train_windows": len(train),
            "n_held_out_windows": len(held),
            "lm_loss_curve": curve,
            "lm_held_out_loss": round(held_out_loss(model, held), 4),
            "seconds": {"lm": round(lm_seconds, 1), "saes": round(sae_seconds, 1)},
            "versions": {
                name: metadata.version(name)
                for name in ("torch", "sae-lens", "transformer-lens", "tokenizers")
            },
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        bundle = load_bundle(work)
        if measure_quality:
            real = held != tokenizer.bos_token_id
            manifest["sae_quality"] = {
                hook: {
                    key: round(value, 4) if isinstance(value, float) else value
                    for key, value in asdict(
                        sae_quality(bundle.model, sae, hook, held, real)
                    ).items()
                }
                for hook, sae in bundle.saes.items()
            }
        manifest["seconds"]["total"] = round(time.perf_counter() - started, 1)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return load_bundle(out)
