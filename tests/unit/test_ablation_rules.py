"""The ablation lab's rules, each against an independent computation: axis domains whose
zeros line up, the value of an intervention against the feature's activations, the most
affected category and its own Welch test (scipy), and the stored-text search of the text
picker on a planted store (matches counted with plain Python)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_ind

from explorer.charts.interventions import (
    MARGIN,
    aligned_zero_domains,
    token_effect_chart,
)
from explorer.errors import InputError
from explorer.live.interventions import Intervention, category_summary, specialization_test
from explorer.live.runs import (
    SIGNIFICANCE,
    CorpusRun,
    ledger_json,
    ledger_table,
    save_run,
    value_help,
    value_scale,
)
from explorer.store.queries.search import MAX_QUERY_CHARS
from explorer.store.queries.texts import MAX_TEXT_RESULTS, find_texts
from explorer.store.reader import Store
from explorer.store.schema import SaeInfo
from explorer.store.writer import StoreWriter
from tests.planted import add_acts_with_stats, add_tokens, tokens_of, write_small_store


def zero_share(domain: tuple[float, float]) -> float:
    low, high = domain
    return -low / (high - low)


@pytest.mark.parametrize(
    "series",
    [
        ([-1.0, 2.0, 0.5], [0.0, 5.0, 1.0]),  # loss down and up, KL >= 0
        ([0.2, 0.4], [0.0, 3.0]),  # nothing below 0
        ([-3.0, -1.0], [0.1, 2.0]),  # every change below 0: the symmetric cap
        ([-0.5, 4.0], [-2.0, 1.0], [0.0, 0.0]),  # three axes, one of zeros
        ([np.nan, -1.0, 1.0], [np.inf, 2.0]),  # non-finite values are left out
    ],
)
def test_aligned_domains_hold_their_series_and_put_zero_on_one_line(series) -> None:
    domains = aligned_zero_domains(*series)
    shares = [zero_share(domain) for domain in domains]
    assert shares == pytest.approx([shares[0]] * len(shares))  # 0 at the same height
    for values, (low, high) in zip(series, domains, strict=True):
        finite = [v for v in values if np.isfinite(v)]
        assert low <= min(0.0, *finite) and max(0.0, *finite) <= high
    # the largest share any series needs below 0, capped at one half
    needed = []
    for values in series:
        finite = [v for v in values if np.isfinite(v)]
        below, above = max(0.0, -min(finite)), max(0.0, max(finite))
        if below + above:
            needed.append(below / (below + above))
    assert shares[0] == pytest.approx(min(max(needed), 0.5))


def test_the_tightest_axis_reaches_its_extreme_plus_the_margin() -> None:
    (loss_low, loss_high), (kl_low, kl_high) = aligned_zero_domains([-1.0, 3.0], [0.0, 2.0])
    # the loss axis needs 1/4 below 0: it spans 4 x MARGIN; the KL axis spans 2 / (3/4)
    assert (loss_low, loss_high) == pytest.approx((-1.0 * MARGIN, 3.0 * MARGIN))
    assert (kl_low, kl_high) == pytest.approx((-MARGIN * 2 / 3, 2.0 * MARGIN))


def test_the_token_chart_uses_the_aligned_domains() -> None:
    per_token = pd.DataFrame(
        {
            "pos": [1, 2, 3],
            "token": ["a", "b", "c"],
            "clean_loss": [1.0, 1.0, 1.0],
            "patched_loss": [0.5, 2.0, 1.25],
            "delta_loss": [-0.5, 1.0, 0.25],
            "kl": [0.1, 0.9, 0.3],
        }
    )
    spec = token_effect_chart(per_token).to_dict()
    shown = [layer["encoding"]["y"]["scale"]["domain"] for layer in spec["layer"]]
    assert [zero_share(d) for d in shown] == pytest.approx([1 / 3, 1 / 3])


STATS = pd.DataFrame({"feature": [3, 5, 6], "max": [3.8, 2.0, 0.0], "mean_active": [1.25, 0.5, 0]})


def test_clamp_and_steering_values_read_against_the_features_activations() -> None:
    lines = value_scale(Intervention("s0", (3, 5, 6), "steer", 8.0), STATS)
    assert lines == [
        f"coefficient 8 = {8 / 3.8:.1f}x #3's max activation (3.8), "
        f"{8 / 1.25:.1f}x its mean when active (1.25).",
        "coefficient 8 = 4.0x #5's max activation (2), 16.0x its mean when active (0.5).",
        "#6 never fired on this store's texts: no reference scale.",
    ]
    assert lines[0].startswith("coefficient 8 = 2.1x") and "6.4x its mean" in lines[0]
    clamp = value_scale(Intervention("s0", (5,), "clamp", 0.1), STATS)
    assert clamp == [
        "clamp value 0.1 = 0.05x #5's max activation (2), 0.2x its mean when active (0.5)."
    ]
    scale = value_scale(Intervention("s0", (3,), "scale", 2.0), STATS)
    assert scale == ["x 2: #3's max activation (3.8) becomes 7.6, its mean when active (1.25) 2.5."]
    assert value_scale(Intervention("s0", (3,), "zero"), STATS) == []
    many = value_scale(Intervention("s0", tuple(range(10)), "clamp", 1.0), STATS, shown=4)
    assert len(many) == 5 and many[-1] == "… and 6 more features."
    assert "max activation is 3.8 and its mean when active 1.25" in value_help("steer", STATS, 3)
    assert "never fired" in value_help("clamp", STATS, 6)


def corpus_run(changes: dict[str, list[float]], target: str) -> CorpusRun:
    categories = [c for c, values in changes.items() for _ in values]
    effects = pd.DataFrame(
        {
            "setting": 0,
            "text_id": range(len(categories)),
            "category": categories,
            "delta_loss": [v for values in changes.values() for v in values],
        }
    )
    test = specialization_test(effects, target)
    return CorpusRun(
        Intervention("s0", (3,), "zero"), None, target, (), effects, category_summary(effects), test
    )


def test_the_verdict_names_the_most_affected_category_with_its_own_test() -> None:
    changes = {
        "code": [0.10, 0.12, 0.11, 0.09],  # the category tested
        "emoji": [0.50, 0.61, 0.55, 0.58],  # hurt the most
        "prose": [0.0, 0.01, -0.01, 0.0],
    }
    run = corpus_run(changes, "code")
    means = {c: np.mean(v) for c, v in changes.items()}
    assert run.most_affected() == max(means, key=means.get) == "emoji"
    inside = changes["emoji"]
    outside = changes["code"] + changes["prose"]
    expected = ttest_ind(inside, outside, equal_var=False, alternative="greater")
    assert expected.pvalue < SIGNIFICANCE
    assert run.most_affected_sentence() == (
        f"The loss changes the most on emoji texts: the intervention **hurts** them more than "
        f"the others ({np.mean(inside):+.5f} on 4 texts vs {np.mean(outside):+.5f} on 8, "
        f"t = {expected.statistic:.2f}, one-sided p = {expected.pvalue:.2g}; chosen as the "
        "largest of 3 categories, so p is not corrected for the choice)."
    )
    assert run.verdict_and_most_affected() == f"{run.verdict()} {run.most_affected_sentence()}"
    same = corpus_run(changes, "emoji")
    assert (
        same.most_affected_sentence() == "emoji is also the category whose loss changes the most."
    )


def test_a_most_affected_category_that_is_not_significant_reads_does_not_hurt() -> None:
    changes = {"code": [0.0, 0.01, -0.01], "emoji": [0.9, -0.8, 0.3], "prose": [0.0, 0.02, 0.0]}
    run = corpus_run(changes, "code")
    p = ttest_ind(changes["emoji"], changes["code"] + changes["prose"], equal_var=False,
                  alternative="greater").pvalue  # fmt: skip
    assert p >= SIGNIFICANCE and run.most_affected() == "emoji"
    assert "**does not hurt** them" in run.most_affected_sentence()
    lonely = corpus_run({"code": [0.0, 0.1], "emoji": [0.9], "prose": [0.0, 0.02]}, "code")
    assert (
        lonely.most_affected_sentence()
        == "The loss changes the most on emoji texts, too few to test."
    )


TEXTS = [
    ("code", "def add(a, b):\n    return a + b"),
    ("code", "print(100%)"),
    ("prose", "The DEFinition of 50_50 odds"),
    ("prose", "![x](http://host/t.png) $x$"),
    ("prose", "plain words"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    path = tmp_path_factory.mktemp("texts") / "texts.duckdb"
    texts = pd.DataFrame(
        {
            "text_id": range(len(TEXTS)),
            "category": [c for c, _ in TEXTS],
            "source": "planted",
            "text": [t for _, t in TEXTS],
            "n_tokens": 2,
        }
    )
    rows = pd.DataFrame({"feature": 0, "text_id": texts["text_id"], "pos": 1, "value": 1.0})
    with StoreWriter(path, meta={"source": "planted"}) as writer:
        writer.add_sae(
            SaeInfo(sae="s0", hook_name="blocks.0.hook_resid_post", layer=0, d_in=4, d_sae=2)
        )
        writer.add_texts(texts.drop(columns="n_tokens"))
        add_tokens(writer, tokens_of(texts))
        add_acts_with_stats(writer, "s0", rows, 2)
    with Store.open(path) as opened:
        yield opened


@pytest.mark.parametrize(
    ("contains", "category"),
    [("", None), ("def", None), ("def", "code"), ("%", None), ("_", None), ("$x$", "prose"),
     ("  plain ", None), (" plain", None), ("   ", "code"), ("nowhere", None),
     ("'; DROP TABLE texts; --", None)],
)  # fmt: skip
def test_the_text_search_matches_literal_pieces(store, contains, category) -> None:
    found = find_texts(store, contains, category, limit=3)
    expected = [
        i
        for i, (c, text) in enumerate(TEXTS)
        if (category is None or c == category)
        and (not contains.strip() or contains.lower() in text.lower())
    ]
    assert found["text_id"].tolist() == expected[:3]
    assert found["n_matches"].tolist() == [len(expected)] * len(found)
    assert found["snippet"].tolist() == [TEXTS[i][1][:120] for i in expected[:3]]


def test_bad_text_searches_raise_clear_errors(store) -> None:
    with pytest.raises(InputError, match=f"at most {MAX_QUERY_CHARS} characters"):
        find_texts(store, "x" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(InputError, match="no category"):
        find_texts(store, "def", "poetry")
    with pytest.raises(InputError):
        find_texts(store, "def", None, MAX_TEXT_RESULTS + 1)
    assert find_texts(store, "\x00")["text_id"].tolist() == []


def test_the_ledger_keeps_the_reference_scale_of_a_steering_run(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    write_small_store(path, ["code", "code", "prose", "prose"])  # feature i fires 1.0 on text i
    run = corpus_run({"code": [0.1, 0.2], "prose": [0.0, 0.01]}, "code")
    steer = replace(run, intervention=Intervention("s0", (1, 7), "steer", 3.0))
    with Store.open(path) as store:
        run_id = save_run(store, steer)
        ledger = store.interventions()
    settings = json.loads(ledger.iloc[0]["settings"])
    assert int(ledger.iloc[0]["id"]) == run_id
    # feature 1 fired once at 1.0; feature 7 never (d_sae 8, four texts)
    assert settings["reference"] == {
        "1": {"max": 1.0, "mean_active": 1.0},
        "7": {"max": 0.0, "mean_active": 0.0},
    }
    assert (
        ledger_table(ledger)["description"]
        .iloc[0]
        .endswith("at every position (3.0x #1's max activation); test: code")
    )
    assert "reference" not in json.loads(ledger_json(ledger))[0]["settings"]["intervention"]
    assert json.loads(ledger_json(ledger))[0]["settings"]["reference"]["1"]["max"] == 1.0
