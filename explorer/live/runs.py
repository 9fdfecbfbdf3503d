"""Intervention runs as the ablation page makes them, and their ledger entries.

Owns the two kinds of run and the JSON they leave in the store's `interventions` ledger:

- a **text run**: one intervention on one text (`interventions.text_effect`) plus
  generations from the text with and without it (greedy or seeded sampling);
- a **corpus run**: one intervention over the store's texts (all, or one category's), the
  change in loss per category, optionally a dose-response over scales of the same features,
  and the specialization test for a target category.

`settings` holds everything needed to run again (`rerun` does, on the same source and store),
`metrics` the numbers the page shows, so a ledger row can be re-run and compared
(`rerun_entry`, `same_metrics`). Also the ablation lab's rules: the verdict of the
specialization test (`SIGNIFICANCE`, `CorpusRun.verdict`) and the most affected category's
own test (`CorpusRun.most_affected_sentence`), the value against the features' activations
(`value_scale`, `value_help`), the default category to test (`default_target`), the
features a page asks for (`parse_features`), and the ledger as the
page lists and exports it (`ledger_table`, `ledger_csv`, `ledger_json`). `save_run` records a
run in the store's ledger; nothing here renders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from explorer.analysis.text_activations import parse_feature_ids
from explorer.errors import InputError, csv_safe, markdown_escaped
from explorer.live.interventions import (
    MAX_FEATURES,
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
from explorer.settings import LiveLimits, bound_heap
from explorer.sources.source import LoadedSource
from explorer.store.reader import Store

# The corpus run's verdict: the intervention "hurts" the target category when the one-sided
# Welch test's p is below this and the category's mean change in loss is the larger.
SIGNIFICANCE = 0.05


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

    @property
    def n_texts(self) -> int:
        """Texts the intervention ran on (the first setting's rows)."""
        return int((self.effects["setting"] == 0).sum())

    def hurts_target(self) -> bool:
        """The verdict: the target category's texts lose more than the others', with the
        one-sided p below `SIGNIFICANCE`."""
        test = self.test or {}
        return bool(test.get("difference", 0) > 0 and test.get("p_value", 1.0) < SIGNIFICANCE)

    def verdict(self) -> str:
        """The test's result as one Markdown sentence (the category name escaped)."""
        if self.test is None:
            return "No category was tested."
        test = self.test
        verdict = "hurts" if self.hurts_target() else "does not hurt"
        return (
            f"The intervention **{verdict}** {markdown_escaped(test['category'])} texts more "
            f"than the others: mean change in loss {test['mean_delta_in']:+.5f} on "
            f"{test['n_in']} texts vs {test['mean_delta_out']:+.5f} on {test['n_out']} "
            f"(t = {test['t_statistic']:.2f}, one-sided p = {test['p_value']:.2g}, "
            f"significant below {SIGNIFICANCE})."
        )

    def verdict_and_most_affected(self) -> str:
        """`verdict` and `most_affected_sentence`, as the page shows them."""
        return " ".join(part for part in (self.verdict(), self.most_affected_sentence()) if part)

    def most_affected(self) -> str | None:
        """The category whose mean change in loss is the largest (ties by name); None when
        the run holds fewer than two categories."""
        base = self.summary[self.summary["setting"] == 0]
        if base["category"].nunique() < 2:
            return None
        ranked = base.sort_values(["mean_delta_loss", "category"], ascending=[False, True])
        return str(ranked["category"].iloc[0])

    def most_affected_sentence(self) -> str:
        """The most affected category and its own specialization test (the verdict's rule),
        as one Markdown sentence; empty when the run holds fewer than two categories."""
        category = self.most_affected()
        if category is None:
            return ""
        name = markdown_escaped(category)
        if category == self.target:
            return f"{name} is also the category whose loss changes the most."
        try:
            test = specialization_test(self.effects, category)
        except InputError:
            return f"The loss changes the most on {name} texts, too few to test."
        hurts = test["difference"] > 0 and test["p_value"] < SIGNIFICANCE
        return (
            f"The loss changes the most on {name} texts: the intervention "
            f"**{'hurts' if hurts else 'does not hurt'}** them more than the others "
            f"({test['mean_delta_in']:+.5f} on {test['n_in']} texts vs "
            f"{test['mean_delta_out']:+.5f} on {test['n_out']}, t = {test['t_statistic']:.2f}, "
            f"one-sided p = {test['p_value']:.2g}; chosen as the largest of "
            f"{self.summary['category'].nunique()} categories, so p is not corrected for "
            "the choice)."
        )

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
    limits: LiveLimits | None = None,
) -> CorpusRun:
    """The intervention over `texts` (as `Store.texts()`), per category, with the dose
    settings and the specialization test of `target` when given; within `limits` (the public
    demo's) when given: too many features or scales raise InputError, batches shrink."""
    if limits is not None:
        batch_size = min(batch_size, limits.corpus_batch_size)
        if len(intervention.features) > limits.max_features:
            raise InputError(
                f"This public demo runs at most {limits.max_features} features over the corpus."
            )
        if len(scales) > limits.max_dose_scales:
            raise InputError(
                f"This public demo runs a dose-response of at most {limits.max_dose_scales} scales."
            )
        if limits.heap_mmap_bytes is not None:
            bound_heap(limits.heap_mmap_bytes)
    if category is not None:
        if category not in set(texts["category"]):
            raise InputError(
                f"No texts of category {markdown_escaped(repr(category))} in this store."
            )
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


def rerun(
    loaded: LoadedSource,
    store: Store,
    settings: Mapping[str, Any],
    limits: LiveLimits | None = None,
) -> dict[str, Any]:
    """Run a ledger entry's settings again (a corpus run within `limits`); returns its
    metrics."""
    intervention = Intervention.from_json(settings.get("intervention") or {})
    if settings.get("kind") == "text":
        generation = settings.get("generation")
        try:
            options = None if generation is None else GenerationSettings(**generation)
        except TypeError as exc:
            raise InputError(f"Not a saved generation setting: {markdown_escaped(exc)}.") from exc
        return run_text(loaded, intervention, str(settings.get("text", "")), options).metrics()
    if settings.get("kind") == "corpus":
        return run_corpus(
            loaded,
            store.texts(),
            intervention,
            category=settings.get("category"),
            target=settings.get("target"),
            scales=tuple(float(s) for s in settings.get("scales", ())),
            limits=limits,
        ).metrics()
    raise InputError(
        f"Unknown kind of run {markdown_escaped(repr(settings.get('kind')))}: not a ledger entry."
    )


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
        reference = (settings.get("reference") or {}).get(str(feature)) or {}
        if reference.get("max") and settings["intervention"].get("mode") in ("clamp", "steer"):
            ratio = float(settings["intervention"].get("value", 0.0)) / reference["max"]
            description += f" ({_times(ratio)} #{feature}'s max activation)"
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


def parse_features(text: str, d_sae: int) -> list[int]:
    """The feature ids typed for an intervention: at least one, at most `MAX_FEATURES`."""
    features = parse_feature_ids(text, d_sae, max_features=MAX_FEATURES)
    if not features:
        raise InputError("Give at least one feature id.")
    return features


def value_scale(intervention: Intervention, stats: pd.DataFrame, shown: int = 4) -> list[str]:
    """The intervention's value against each feature's activations (`stats`: feature, max,
    mean_active, as `Store.frequency_table` gives them), one sentence per feature (the first
    `shown`, then how many more): a clamp value or steering coefficient as a multiple of
    the feature's max activation and of its mean when active; a scale factor as what it
    makes of them. Nothing for zero-ablation and swaps."""
    mode, value = intervention.mode, intervention.value
    if mode not in ("clamp", "steer", "scale"):
        return []
    known = stats.set_index("feature")
    lines = []
    for feature in intervention.features[:shown]:
        row = known.loc[feature] if feature in known.index else None
        top = 0.0 if row is None else float(row["max"])
        mean = 0.0 if row is None else float(row["mean_active"])
        if not top > 0:
            lines.append(f"#{feature} never fired on this store's texts: no reference scale.")
        elif mode == "scale":
            lines.append(
                f"x {value:g}: #{feature}'s max activation ({top:.3g}) becomes "
                f"{value * top:.3g}, its mean when active ({mean:.3g}) {value * mean:.3g}."
            )
        else:
            name = "clamp value" if mode == "clamp" else "coefficient"
            lines.append(
                f"{name} {value:g} = {_times(value / top)} #{feature}'s max activation "
                f"({top:.3g}), {_times(value / mean)} its mean when active ({mean:.3g})."
            )
    if len(intervention.features) > shown:
        lines.append(f"… and {len(intervention.features) - shown} more features.")
    return lines


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if abs(ratio) >= 0.1 else f"{ratio:.2g}x"


def value_help(mode: str, stats: pd.DataFrame, feature: int) -> str:
    """The help of the value input: its unit, with `feature`'s max activation and mean when
    active from `stats` (as in `value_scale`)."""
    row = stats[stats["feature"] == feature]
    top = float(row["max"].iloc[0]) if len(row) else 0.0
    mean = float(row["mean_active"].iloc[0]) if len(row) else 0.0
    where = (
        f"#{feature}'s max activation is {top:.3g} and its mean when active {mean:.3g}"
        if top > 0
        else f"#{feature} never fired on this store's texts"
    )
    unit = "a factor on the features' activations" if mode == "scale" else "activation units"
    return (
        f"In {unit}: {where} (the store's feature statistics). The line under the title "
        "gives the value against each feature's; see docs/methods.md#ablation-lab."
    )


def default_target(categories: list[str], scores: pd.DataFrame) -> str | None:
    """The category to test by default: where the feature's specialist score (`scores`:
    category, score) is highest, else the first category (None when there are none)."""
    known = scores[scores["category"].isin(categories)]
    if len(known):
        return str(known.sort_values(["score", "category"], ascending=[False, True]).iloc[0, 0])
    return categories[0] if categories else None


def save_run(store: Store, run: TextRun | CorpusRun, save: bool = True) -> int | None:
    """Record `run` in the store's ledger and return its id; None when `save` is off (the
    public demo saves nothing). A clamp, scale or steering run's settings also keep each
    feature's max and mean activation when active (`reference`), the scale its value was
    read against (`value_scale`); a re-run does not use them."""
    if not save:
        return None
    settings = run.settings()
    intervention = run.intervention
    if intervention.mode in ("clamp", "scale", "steer"):
        stats = pd.concat([store.feature_stats(intervention.sae, f) for f in intervention.features])
        settings["reference"] = {
            str(int(row.feature)): {"max": float(row.max), "mean_active": float(row.mean_active)}
            for row in stats.itertuples()
        }
    return store.save_intervention(intervention.sae, settings, run.metrics())


def ledger_csv(ledger: pd.DataFrame) -> str:
    """The ledger (`Store.interventions()`) as the CSV the page exports: id, sae, settings,
    metrics (JSON text), created_at; text a spreadsheet would run as a formula is quoted
    (`csv_safe`)."""
    return csv_safe(ledger).to_csv(index=False)


def ledger_json(ledger: pd.DataFrame) -> str:
    """The ledger as the JSON the page exports: one record per run, settings and metrics as
    objects (not JSON inside strings), created_at in ISO 8601."""
    records = []
    for entry in ledger.itertuples():
        created = pd.Timestamp(entry.created_at)
        records.append(
            {
                "id": int(entry.id),
                "sae": entry.sae,
                "settings": json.loads(entry.settings),
                "metrics": json.loads(entry.metrics),
                "created_at": None if pd.isna(created) else created.isoformat(),
            }
        )
    return json.dumps(records, indent=1)


@dataclass(frozen=True)
class Rerun:
    """A ledger entry run again: what was recorded and what the run gives now."""

    run_id: int
    recorded: dict[str, Any]
    now: dict[str, Any]

    @property
    def same(self) -> bool:
        return same_metrics(self.now, self.recorded)

    def message(self) -> str:
        if self.same:
            return f"Re-ran #{self.run_id}: the same numbers as recorded."
        return f"Re-ran #{self.run_id}: the numbers differ from the record."


def rerun_entry(
    loaded: LoadedSource,
    store: Store,
    ledger: pd.DataFrame,
    run_id: int,
    limits: LiveLimits | None = None,
) -> Rerun:
    """Run the ledger entry `run_id` again (see `rerun`) beside its recorded metrics."""
    entries = ledger[ledger["id"] == run_id]
    if entries.empty:
        raise InputError(f"There is no run #{run_id} in this store's ledger.")
    entry = entries.iloc[0]
    now = rerun(loaded, store, json.loads(entry["settings"]), limits)
    return Rerun(int(run_id), json.loads(entry["metrics"]), now)
