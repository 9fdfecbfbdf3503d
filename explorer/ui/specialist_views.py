"""The sidebar choices the specialist pages share beyond the measure's settings: which family
of categories to show (`family_choice`, or `family_specialists`, which reads only that
family's specialists from a store that keeps them) and what the findings are replicated on
(`replication_choice`: the store's split halves, or another known store built from a user
corpus with the same source, re-tested once per pair of stores and settings and cached); and
the Specialist heatmaps page's sections below its heatmaps, a tab each (top specialists,
replication, strongest features, coverage)."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from explorer.analysis import precompute
from explorer.analysis.frequency import most_frequent_coverage, strongest_features
from explorer.analysis.replication import StoreReplication, load_store_replication, replicated_on
from explorer.analysis.specialists import (
    Specialists,
    SpecialistSettings,
    family_names,
    in_family,
    top_specialists,
)
from explorer.charts.feature import token_label
from explorer.errors import ExplorerError, markdown_escaped
from explorer.methods_doc import methods_link
from explorer.store.reader import Store
from explorer.ui import cached
from explorer.ui.params import url_selectbox
from explorer.ui.resources import StoreKey, open_store, store_key
from explorer.ui.state import known_stores
from explorer.ui.tables import NUMBER, feature_table, percent_column, plain_table

SPLIT_HALVES = "split halves of this store"


def family_choice(result: Specialists) -> tuple[str, Specialists]:
    """The family picked in the sidebar (`choose_family`) and `result` restricted to it
    (`in_family`)."""
    family = choose_family(family_names(result.categories))
    return family, in_family(result, family)


def family_specialists(store: Store, settings: SpecialistSettings) -> tuple[str, Specialists]:
    """The family picked in the sidebar (`choose_family`) and the specialists of `store`
    under `settings` in that family: what `family_choice(cached.specialists(store,
    settings))` returns, read without the other families' rows where the store keeps them
    (`cached.family_specialists`; on the demo store 20k of the table's 143k rows)."""
    family = choose_family(cached.specialist_families(store, settings))
    return family, cached.family_specialists(store, settings, family)


def choose_family(names: list[str]) -> str:
    """The family picked in the sidebar among `names` (`family_names`; URL `family`; default
    the first, the bundled prose family on the demo store)."""
    return url_selectbox(
        "Family",
        "family",
        names,
        default=names[0],
        help="The categories counted on this page; each is contrasted with the rest of its "
        "family. " + methods_link("families"),
    )


@st.cache_data(max_entries=8, ttl=3600, show_spinner="Re-testing the specialists on the store…")
def _store_replication(
    key: StoreKey, other_key: StoreKey, settings: SpecialistSettings
) -> StoreReplication:
    store = open_store(key[0])
    table = precompute.specialists(store, settings).table  # kept in the store for the defaults
    return load_store_replication(store, open_store(other_key[0]), table, settings)


def replication_choice(
    store: Store, result: Specialists, settings: SpecialistSettings
) -> tuple[str, Specialists]:
    """What the findings are replicated on, picked in the sidebar (URL `replicate_on`: a
    known store's file name): the split halves of `store` (`result` as it is), or another
    known store built with the same source, whose re-test replaces `result`'s replication
    (`replicated_on`; its replication rates cut to `result`'s families, so a result of one
    family (`family_specialists`) gets that family's). A store that cannot be used gets a
    warning and the split halves. Returns a sentence saying how the findings were
    replicated (with its Methods link) and the result."""
    others = {name: path for name, path in known_stores().items() if path != str(store.path)}
    choice = url_selectbox(
        "Replicate on",
        "replicate_on",
        [SPLIT_HALVES, *others],
        default=SPLIT_HALVES,
        help="A store built from your own corpus with the same source re-tests every "
        "specialist on texts it was not found on. " + methods_link("replication-store"),
    )
    if choice != SPLIT_HALVES:
        try:
            replication = _store_replication(
                store_key(store), store_key(open_store(others[choice])), settings
            )
        except ExplorerError as error:
            st.warning(f"{error} Replicating on the split halves instead.")
        else:
            return (
                f"Every specialist re-tested on the texts of the store "
                f"{markdown_escaped(replication.store)} (same source, another corpus), all "
                f"SAEs together. {methods_link('replication-store')}",
                _in_families(replicated_on(result, replication), result),
            )
    return (
        "Specialists found on the discovery half of the texts and re-tested on the other half "
        f"(split by a hash of the text id), all SAEs together. {methods_link('replication')}",
        result,
    )


def _in_families(replicated: Specialists, result: Specialists) -> Specialists:
    """`replicated` with only the replication rates of `result`'s families."""
    rates = replicated.replication
    return replace(replicated, replication=rates[rates["family"].isin(result.categories["family"])])


# the top specialists' table in two, each readable at 1440 px: the finding, then the rest
TOP_COLUMNS = ["category", "sae", "feature", "score", "q_value", "support", "replicated", "token",
               "token_explained"]  # fmt: skip
TOP_MORE_COLUMNS = ["feature", "token", "token_share", "token_auroc", "auroc", "share",
                    "notebook_score", "n_texts"]  # fmt: skip
CATEGORY_TEXTS = NUMBER("texts", format="%d", help="the category's texts (all)")


def show_top_specialists(result: Specialists, per_category: int, replicated_only: bool) -> None:
    """Up to `per_category` specialists per category (`top_specialists`, once per shared
    result), the finding first and the token confound and other measures in an expander
    that runs only while it is open."""
    st.subheader("Top specialists per category")
    top = cached.of_shared(
        result,
        f"top_specialists {per_category} {replicated_only}",
        lambda: top_specialists(result.table, per_category, replicated_only=replicated_only),
    )
    top = top.assign(token=top["token"].map(token_label, na_action="ignore"))
    feature_table(top, TOP_COLUMNS)
    more = st.expander(
        "Token confound and the other measures (rows numbered as above)",
        key="more_measures",
        on_change="rerun",  # its table runs only while it is open
    )
    if more.open:
        with more:
            feature_table(top, TOP_MORE_COLUMNS, n_texts=CATEGORY_TEXTS)


def show_replication(rates: pd.DataFrame, note: str) -> None:
    """The replication rate per category (`Specialists.replication`) and how it was got."""
    st.subheader("Replication")
    st.caption(note)
    plain_table(rates, ["category", "discovered", "replicated", "replication_rate"])


def show_strongest(result: Specialists) -> None:
    """Each SAE's five strongest features (`strongest_features`)."""
    st.subheader("Strongest features per SAE")
    feature_table(
        cached.of_shared(
            result, "strongest 5", lambda: strongest_features(result.features, per_sae=5)
        ),
        ["sae", "layer", "feature", "max", "mean_active", "token_freq", "best_category", "kind"],
    )


def show_coverage(result: Specialists) -> None:
    """The share of each category's texts on which each SAE's most frequent feature fires
    (`most_frequent_coverage`), turned round: a row per category, a column per SAE."""
    st.subheader("Coverage of the most frequent feature")
    st.caption("Share of each category's texts on which the SAE's most frequent feature fires.")
    coverage = cached.of_shared(
        result, "coverage", lambda: most_frequent_coverage(result.features, result.table)
    )
    feature_table(coverage, ["sae", "layer", "feature", "token_freq", "text_freq"])
    # turned round (a row per category, a column per SAE), so any number of categories fits
    shares = coverage.set_index("sae").drop(columns=["layer", "feature", "token_freq", "text_freq"])
    plain_table(
        shares.T.rename_axis("category").reset_index(),
        **{sae: percent_column(sae) for sae in shares.index},
    )
