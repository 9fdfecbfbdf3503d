"""Intervention runs as the ablation page makes them, and their ledger entries.

Owns the two kinds of run and the JSON they leave in the store's `interventions` ledger:

- a **text run**: one intervention on one text (`interventions.text_effect`) plus
  generations from the text with and without it (greedy or seeded sampling);
- a **corpus run**: one intervention over the store's texts (all, or one category's), the
  change in loss per category, optionally a dose-response over scales of the same features,
  and the specialization test for a target category.

`settings` holds everything needed to run again (`rerun` does, on the same source and store),
`metrics` the numbers the page shows, so a ledger row can be re-run and compared
(`same_metrics`). It does not write the store (the page calls `Store.save_intervention`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from explorer.errors import InputError
from explorer.live.interventions import (
    Intervention,
    Progress,
    Sampling,
    TextEffect,
    category_summary,
    corpus_effects,
    dose_interventions,
    generate,
    specialization_test,
    text_effect,
)
from explorer.sources.source import LoadedSource
from explorer.store.reader import Store


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 20
    sampling: Sampling = "greedy"
    seed: int = 0
    temperature: float = 1.0


@dataclass(frozen=True)
class TextRun:
    text: str
    generation: GenerationSettings | None
    effect: TextEffect
    clean_generation: str | None
    intervened_generation: str | None

    @property
    def intervention(self) -> Intervention:
        return self.effect.intervention

    def settings(self) -> dict[str, Any]:
        return {
            "kind": "text",
            "intervention": self.intervention.to_json(),
            "text": self.text,
            "generation": None if self.generation is None else asdict(self.generation),
        }

    def metrics(self) -> dict[str, Any]:
        return {
            **self.effect.summary(),
            "generation_clean": self.clean_generation,
            "generation_intervened": self.intervened_generation,
        }


def run_text(
    loaded: LoadedSource,
    intervention: Intervention,
    text: str,
    generation: GenerationSettings | None = None,
) -> TextRun:
    """The intervention's effect on `text`, and generations from it when asked."""
    effect = text_effect(loaded, intervention, text)
    clean = intervened = None
    if generation is not None:
        options = asdict(generation)
        clean = generate(loaded, text, None, **options)
        intervened = generate(loaded, text, intervention, **options)
    return TextRun(text, generation, effect, clean, intervened)


@dataclass(frozen=True)
class CorpusRun:
    intervention: Intervention
    category: str | None  # only this category's texts; None = every text
    target: str | None  # the category of the specialization test
    scales: tuple[float, ...]  # dose-response scales (settings 1..), empty for none
    effects: pd.DataFrame  # corpus_effects rows
    summary: pd.DataFrame  # category_summary rows
    test: dict[str, Any] | None

    def settings(self) -> dict[str, Any]:
        return {
            "kind": "corpus",
            "intervention": self.intervention.to_json(),
            "category": self.category,
            "target": self.target,
            "scales": list(self.scales),
        }

    def dose_response(self) -> pd.DataFrame:
        """scale, category, mean_delta_loss, sem, n_texts for the dose settings."""
        dose = self.summary[self.summary["setting"] > 0].copy()
        dose["scale"] = dose["setting"].map(lambda s: self.scales[s - 1])
        return dose.drop(columns="setting").reset_index(drop=True)

    def metrics(self) -> dict[str, Any]:
        base = self.summary[self.summary["setting"] == 0]
        rows = self.effects[self.effects["setting"] == 0]
        return {
            "n_texts": len(rows),
            "mean_delta_loss": float(rows["delta_loss"].mean()),
            "per_category": {row.category: float(row.mean_delta_loss) for row in base.itertuples()},
            "dose_response": [
                {
                    "scale": float(row.scale),
                    "category": row.category,
                    "mean_delta_loss": float(row.mean_delta_loss),
                }
                for row in self.dose_response().itertuples()
            ],
            "test": self.test,
        }


def run_corpus(
    loaded: LoadedSource,
    texts: pd.DataFrame,
    intervention: Intervention,
    *,
    category: str | None = None,
    target: str | None = None,
    scales: tuple[float, ...] = (),
    batch_size: int = 32,
    progress: Progress | None = None,
) -> CorpusRun:
    """The intervention over `texts` (as `Store.texts()`), per category, with the dose
    settings and the specialization test of `target` when given."""
    if category is not None:
        if category not in set(texts["category"]):
            raise InputError(f"No texts of category {category!r} in this store.")
        texts = texts[texts["category"] == category]
    if target is not None and category is not None:
        raise InputError("The specialization test compares categories: run over every text.")
    settings = [intervention]
    settings += dose_interventions(intervention.sae, intervention.features, scales)
    effects = corpus_effects(loaded, texts, settings, batch_size=batch_size, progress=progress)
    test = None if target is None else specialization_test(effects, target)
    return CorpusRun(
        intervention, category, target, tuple(scales), effects, category_summary(effects), test
    )


def rerun(loaded: LoadedSource, store: Store, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Run a ledger entry's settings again; returns its metrics."""
    intervention = Intervention.from_json(settings.get("intervention") or {})
    if settings.get("kind") == "text":
        generation = settings.get("generation")
        try:
            options = None if generation is None else GenerationSettings(**generation)
        except TypeError as exc:
            raise InputError(f"Not a saved generation setting: {exc}.") from exc
        return run_text(loaded, intervention, str(settings.get("text", "")), options).metrics()
    if settings.get("kind") == "corpus":
        return run_corpus(
            loaded,
            store.texts(),
            intervention,
            category=settings.get("category"),
            target=settings.get("target"),
            scales=tuple(float(s) for s in settings.get("scales", ())),
        ).metrics()
    raise InputError(f"Unknown kind of run {settings.get('kind')!r}: not a ledger entry.")


def same_metrics(first: Any, second: Any, tolerance: float = 1e-5) -> bool:
    """Equal metrics, numbers within `tolerance` (relative or absolute)."""
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        return first.keys() == second.keys() and all(
            same_metrics(first[key], second[key], tolerance) for key in first
        )
    if isinstance(first, list) and isinstance(second, list):
        return len(first) == len(second) and all(
            same_metrics(a, b, tolerance) for a, b in zip(first, second, strict=True)
        )
    if isinstance(first, float | int) and isinstance(second, float | int):
        return math.isclose(first, second, rel_tol=tolerance, abs_tol=tolerance)
    return first == second


def ledger_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """The ledger (`Store.interventions()`) as the page lists it: id, sae, feature (the
    first), kind, description, n_texts or n_tokens, mean_delta_loss, created_at."""
    rows = []
    for entry in ledger.itertuples():
        settings = json.loads(entry.settings)
        metrics = json.loads(entry.metrics)
        try:
            intervention = Intervention.from_json(settings.get("intervention") or {})
            description, feature = intervention.describe(), intervention.features[0]
        except InputError:
            description, feature = "(unreadable settings)", -1
        target = settings.get("target") or settings.get("category")
        rows.append(
            {
                "id": int(entry.id),
                "sae": entry.sae,
                "feature": feature,
                "kind": settings.get("kind", "?"),
                "description": description + (f"; test: {target}" if target else ""),
                "size": metrics.get("n_texts", metrics.get("n_tokens")),
                "mean_delta_loss": metrics.get("mean_delta_loss"),
                "created_at": entry.created_at,
            }
        )
    columns = ["id", "sae", "feature", "kind", "description", "size", "mean_delta_loss"]
    return pd.DataFrame(rows, columns=[*columns, "created_at"])
