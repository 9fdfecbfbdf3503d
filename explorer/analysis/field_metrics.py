"""The field's SAE metrics per SAE beyond the build's quality numbers: k-sparse probing of
the corpus's categories, the one table of every metric per SAE (of one store, or of two side
by side), and the summaries of decoder matching.

Owns k-sparse probing (from the store's per-text activations), the per-SAE summaries of
max-cosine distributions (redundancy, cross-SAE matching), the summary of a one-to-one
matching beside the best-match one, the medians of the description scores and
`field_metrics_table`, which joins them to the build-time quality numbers of the `saes` table
(L0, explained variance, CE loss recovered, KL divergence, dead and dense fractions,
shrinkage: see `explorer.analysis.compare.QUALITY_METRICS`); `stores_side_by_side` puts two
stores' tables in one, and `rows_side_by_side` their per-SAE rows (e.g. the probes). The
decoder-direction measures need the loaded SAEs and torch:
`explorer.analysis.decoder_metrics`. Definitions: docs/methods.md, sections The field's SAE
metrics, k-sparse probing, Feature redundancy, Cross-SAE matching and One-to-one matching.
No torch; it does not render or cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from explorer.analysis.compare import QUALITY_METRICS
from explorer.analysis.lineage import activation_matrix
from explorer.errors import InputError, markdown_escaped
from explorer.store.queries.activations import TextPooling, text_categories, text_rows
from explorer.store.reader import Store

if TYPE_CHECKING:
    from scipy import sparse

MATCH_THRESHOLD = 0.7  # a decoder cosine at or above it counts as the same direction
MATCH_THRESHOLDS = (MATCH_THRESHOLD, 0.9)  # the shares a matching reports
PROBING_KS = (1, 2, 5)
PROBE_L2 = 1e-3
STORE_SEPARATOR = " · "  # between a store's label and an SAE's name in a column name
FeatureSelection = Literal["standardized", "mean_difference"]
DESCRIPTION_MEDIANS: dict[str, str] = {
    "description_f1_median": "description score: median F1",
    "description_balanced_accuracy_median": "description score: median balanced accuracy",
}
FIELD_METRICS: dict[str, str] = {
    **{name: title for name, title in QUALITY_METRICS.items() if name != "quality_texts"},
    **{f"probe_k{k}": f"k-sparse probing, k = {k} (balanced accuracy)" for k in PROBING_KS},
    **DESCRIPTION_MEDIANS,
    "mean_max_cosine": "redundancy: mean max cosine",
    "median_max_cosine": "redundancy: median max cosine",
    "share_max_cosine_above": f"redundancy: share with max cosine >= {MATCH_THRESHOLD}",
}


def match_summary(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per sae: mean and median of `column` (a max cosine per feature) and the share of
    features at or above `MATCH_THRESHOLD`."""
    grouped = table.groupby("sae", sort=False)[column]
    return pd.DataFrame(
        {
            f"mean_{column}": grouped.mean(),
            f"median_{column}": grouped.median(),
            f"share_{column}_above": grouped.apply(lambda v: float((v >= MATCH_THRESHOLD).mean())),
        }
    ).reset_index()


def share_column(threshold: float) -> str:
    """The column of `matching_comparison` holding the share of cosines >= `threshold`."""
    return f"share_{round(threshold * 100)}"


def matching_comparison(
    matching: pd.DataFrame, pairs: pd.DataFrame, subset: bool = False
) -> pd.DataFrame:
    """One row per way of matching a's features to b's: measure, pairs, mean_cosine,
    median_cosine and the share of pairs at or above each of `MATCH_THRESHOLDS`
    (`share_column`). "best match": every feature of a with its max-cosine match
    (`decoder_metrics.sae_matching` rows; the mean is the consistency score); "one-to-one":
    the Hungarian assignment (`decoder_metrics.one_to_one_matching` rows). With `subset`
    (the assignment took only some features of each SAE), a middle row gives the best match
    among the same features as the assignment (its best_cosine), so the two compare like with
    like."""
    measures = {"best match (max cosine)": matching["max_cosine"]}
    if subset:
        measures["best match, the one-to-one's features"] = pairs["best_cosine"]
    measures["one-to-one (Hungarian)"] = pairs["cosine"]
    rows = []
    for measure, cosines in measures.items():
        row = {
            "measure": measure,
            "pairs": len(cosines),
            "mean_cosine": float(cosines.mean()),
            "median_cosine": float(cosines.median()),
        }
        for threshold in MATCH_THRESHOLDS:
            row[share_column(threshold)] = float((cosines >= threshold).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def description_medians(described: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per sae (`described`'s keys, in order): the medians over its scored features of the
    description score's F1 and balanced accuracy (`descriptions.described_features` rows;
    NaN without a scored feature), as `DESCRIPTION_MEDIANS` columns."""
    rows = []
    for sae, table in described.items():
        scored = table[table["scored"].fillna(False).astype(bool)]
        rows.append(
            {
                "sae": sae,
                "description_f1_median": float(scored["f1"].median()),
                "description_balanced_accuracy_median": float(scored["balanced_accuracy"].median()),
            }
        )
    return pd.DataFrame(rows, columns=["sae", *DESCRIPTION_MEDIANS])


@dataclass(frozen=True)
class ProbingSettings:
    """k-sparse probing of the corpus's categories (one category against the rest).

    Attributes:
        ks: the numbers of features a probe may use.
        selection: how the k features are chosen on the training half: by the standardized
            mean difference between the category's texts and the others (default), or by the
            raw mean difference (SAEBench's choice).
        pooling: a text's activation: the mean over its tokens (zeros included) or the max.
        l2: the L2 penalty on the standardised weights of the logistic probe.
    """

    ks: tuple[int, ...] = PROBING_KS
    selection: FeatureSelection = "standardized"
    pooling: TextPooling = "mean"
    l2: float = PROBE_L2

    def __post_init__(self) -> None:
        if not self.ks or any(not 1 <= k <= 100 for k in self.ks):
            raise InputError(
                f"Each k must be from 1 to 100, got {markdown_escaped(list(self.ks))}."
            )
        if self.selection not in ("standardized", "mean_difference"):
            raise InputError(
                f"selection must be 'standardized' or 'mean_difference', got "
                f"{markdown_escaped(repr(self.selection))}."
            )
        if self.pooling not in ("mean", "max"):
            raise InputError(
                f"pooling must be 'mean' or 'max', got {markdown_escaped(repr(self.pooling))}."
            )


DEFAULT_PROBING = ProbingSettings()


def probing_split(categories: pd.Series) -> np.ndarray:
    """True for the training half: within each category, texts in the given order alternate
    train, test, train, ... (the first one trains), so both halves hold every category."""
    position = categories.groupby(categories, sort=False).cumcount().to_numpy()
    return position % 2 == 0


def feature_order(
    x: sparse.csr_matrix, y: np.ndarray, selection: FeatureSelection = "standardized"
) -> np.ndarray:
    """The columns of `x` [texts, features] from the most discriminative of y to the least
    (ties: the lower index); a k-sparse probe uses the first k. "mean_difference": |mean over
    y - mean over not y|; "standardized": that difference over the pooled standard deviation
    sqrt((var_y + var_not_y) / 2), 0 for a feature constant in both classes."""
    inside, outside = x[y], x[~y]
    mean_in = np.asarray(inside.mean(axis=0)).ravel()
    mean_out = np.asarray(outside.mean(axis=0)).ravel()
    difference = np.abs(mean_in - mean_out)
    if selection == "standardized":
        var_in = np.asarray(inside.multiply(inside).mean(axis=0)).ravel() - mean_in**2
        var_out = np.asarray(outside.multiply(outside).mean(axis=0)).ravel() - mean_out**2
        pooled = np.sqrt(np.maximum(var_in + var_out, 0.0) / 2)
        spread = pooled > 1e-9 * np.maximum(np.abs(mean_in), np.abs(mean_out))  # not rounding
        difference = np.divide(difference, pooled, out=np.zeros_like(difference), where=spread)
    return np.argsort(-difference, kind="stable")


def fit_probe(x: np.ndarray, y: np.ndarray, l2: float = PROBE_L2) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic regression of y on x [texts, k], classes weighed alike
    (each class's log loss averaged over its texts), with an L2 penalty l2/2 |w|^2."""
    from scipy import optimize

    weight = np.where(y, 0.5 / max(y.sum(), 1), 0.5 / max((~y).sum(), 1))
    sign = np.where(y, 1.0, -1.0)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        margin = sign * (x @ params[:-1] + params[-1])
        losses = np.logaddexp(0.0, -margin)
        slope = -weight * sign * np.exp(-np.logaddexp(0.0, margin))  # d loss / d logit
        grad = np.append(x.T @ slope + l2 * params[:-1], slope.sum())
        return float(weight @ losses + 0.5 * l2 * params[:-1] @ params[:-1]), grad

    # BFGS: L-BFGS-B's Fortran step cost ~3 ms an iteration here for <= 6 parameters
    fitted = optimize.minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="BFGS")
    return fitted.x[:-1], float(fitted.x[-1])


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    """The mean of the true-positive and true-negative rates (chance: 0.5)."""
    return float(0.5 * (predicted[y].mean() + (~predicted[~y]).mean()))


def probe_categories(
    x: sparse.csr_matrix, categories: pd.Series, settings: ProbingSettings = DEFAULT_PROBING
) -> pd.DataFrame:
    """category, k, features (chosen on the training half), train_accuracy, accuracy
    (balanced, on the held-out half) for every category with texts in both halves and
    outside it, one probe per category and k; `x` [texts, features] in `categories`' order."""
    train = probing_split(categories)
    labels = categories.to_numpy()
    x_train = x[train]
    rows = []
    for category in sorted(pd.unique(labels)):
        y = labels == category
        if min(y[train].sum(), y[~train].sum(), (~y[train]).sum(), (~y[~train]).sum()) == 0:
            continue
        order = feature_order(x_train, y[train], settings.selection)
        for k in settings.ks:
            chosen = order[:k]
            columns = x[:, chosen].toarray()  # [texts, k]
            mean, scale = columns[train].mean(axis=0), columns[train].std(axis=0)
            z = (columns - mean) / np.where(scale > 0, scale, 1.0)
            w, b = fit_probe(z[train], y[train], settings.l2)
            predicted = z @ w + b > 0
            rows.append(
                {
                    "category": category,
                    "k": k,
                    "features": chosen.tolist(),
                    "train_accuracy": balanced_accuracy(y[train], predicted[train]),
                    "accuracy": balanced_accuracy(y[~train], predicted[~train]),
                }
            )
    return pd.DataFrame(rows, columns=["category", "k", "features", "train_accuracy", "accuracy"])


def sparse_probing(store: Store, settings: ProbingSettings = DEFAULT_PROBING) -> pd.DataFrame:
    """sae, layer and `probe_categories` columns for every SAE of `store`, from its per-text
    activations (`settings.pooling`)."""
    texts = text_categories(store)
    position = pd.Series(np.arange(len(texts)), index=texts["text_id"])
    frames = []
    for row in store.saes().itertuples():
        rows = text_rows(store, row.sae, settings.pooling)
        rows = rows[rows["text_id"].isin(position.index)]
        rows.insert(0, "row", position.loc[rows["text_id"]].to_numpy())
        x = activation_matrix(rows.drop(columns="text_id"), len(texts), int(row.d_sae)).tocsr()
        probes = probe_categories(x, texts["category"], settings)
        frames.append(probes.assign(sae=row.sae, layer=row.layer))
    table = pd.concat(frames, ignore_index=True)
    return table[["sae", "layer", "category", "k", "features", "train_accuracy", "accuracy"]]


def probing_summary(probing: pd.DataFrame) -> pd.DataFrame:
    """Per sae: the mean held-out balanced accuracy over categories at each k, as columns
    probe_k1, probe_k2, ..."""
    means = probing.pivot_table(index="sae", columns="k", values="accuracy", aggfunc="mean")
    means.columns = [f"probe_k{k}" for k in means.columns]
    return means.reset_index()


def field_metrics_table(
    saes: pd.DataFrame,
    probing: pd.DataFrame,
    redundancy: pd.DataFrame | None = None,
    descriptions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per SAE of `saes` (`Store.saes`), by layer: sae, layer, the quality numbers
    (`QUALITY_METRICS` but the sample size), probe_k* (`probing_summary` of `probing`), with
    `descriptions` (`description_medians` rows) the description scores' medians, and with
    `redundancy` (`decoder_metrics.redundancy` rows) mean_max_cosine, median_max_cosine and
    share_max_cosine_above. An SAE missing from `descriptions` or `redundancy` gets NaN."""
    quality = [name for name in QUALITY_METRICS if name != "quality_texts"]
    table = saes[["sae", "layer", *quality]].merge(probing_summary(probing), on="sae", how="left")
    if descriptions is not None:
        table = table.merge(descriptions, on="sae", how="left")
    if redundancy is not None:
        table = table.merge(match_summary(redundancy, "max_cosine"), on="sae", how="left")
    return table.sort_values(["layer", "sae"], na_position="last", ignore_index=True)


def probing_by_category(probing: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per category: the held-out balanced accuracy of each SAE's k-feature probe
    (a column per SAE, by layer; with a `store` column, `rows_side_by_side`'s, each
    store's SAEs together, the stores in their order), best_sae (the largest; the first
    column on ties, so the shallower) and best_accuracy. A category one store's corpus lacks
    is NaN in its columns."""
    rows = probing[probing["k"] == k]
    keys = ["layer", "sae"]
    if "store" in rows:
        stores = {label: position for position, label in enumerate(pd.unique(probing["store"]))}
        rows, keys = rows.assign(store_order=rows["store"].map(stores)), ["store_order", *keys]
    rows = rows.sort_values(keys, na_position="last", kind="stable")
    order = list(dict.fromkeys(rows["sae"]))
    table = rows.pivot(index="category", columns="sae", values="accuracy")[order]
    return table.assign(
        best_sae=table.idxmax(axis=1), best_accuracy=table.max(axis=1)
    ).reset_index()


def metrics_by_sae(table: pd.DataFrame) -> pd.DataFrame:
    """A `field_metrics_table` turned round for reading: one row per metric it holds (metric:
    its `FIELD_METRICS` title), one column per SAE in the table's order."""
    present = [name for name in FIELD_METRICS if name in table]
    turned = table.set_index("sae")[present].T
    turned.columns = list(turned.columns)
    return turned.rename(index=FIELD_METRICS).rename_axis("metric").reset_index()


def store_column(label: str, sae: str) -> str:
    """The name of an SAE's column when stores are side by side: "<store label> · <sae>"."""
    return f"{label}{STORE_SEPARATOR}{sae}"


def rows_side_by_side(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Several stores' per-SAE rows (frames with an sae column, e.g. `sparse_probing` or
    `decoder_metrics.redundancy` rows, keyed by the stores' labels, which must differ) in one
    frame: a first column `store` (the label) and each sae renamed `store_column`, so
    `probing_by_category`, `probing_summary` and the charts read both stores' SAEs side by
    side."""
    frames_renamed = [
        frame.assign(sae=[store_column(label, sae) for sae in frame["sae"]], store=label)
        for label, frame in frames.items()
    ]
    table = pd.concat(frames_renamed, ignore_index=True)
    return table[["store", *(column for column in table.columns if column != "store")]]


def stores_side_by_side(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """`metrics_by_sae` of several stores' `field_metrics_table`s (keyed by the stores'
    labels, which must differ), one column per SAE of each store named "<store label> ·
    <sae>" (`STORE_SEPARATOR`), the stores in the given order; a metric one store lacks is
    NaN in its columns."""
    renamed = [
        table.assign(sae=[store_column(label, sae) for sae in table["sae"]])
        for label, table in tables.items()
    ]
    return metrics_by_sae(pd.concat(renamed, ignore_index=True))
