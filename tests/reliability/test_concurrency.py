"""Concurrency: 8 threads at once on one shared store and one shared loaded source, mixing
the pages' store queries, specialist measures, typed-text highlighting and interventions
(plus a label save and a ledger save per thread, midway, which go to the store's sidecar):
every result equals the same request run alone, every save lands, and the shared model and
SAEs are left as they were.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from explorer.analysis.specialists import SpecialistSettings, load_specialists
from explorer.build.single import build_store
from explorer.live.interventions import Intervention, text_effect
from explorer.live.text import encode_text
from explorer.sources.source import load_source
from explorer.store.queries import feature as feature_queries
from explorer.store.reader import Store

pytestmark = pytest.mark.slow  # heavy: left out of the quick loop (pyproject markers)

THREADS = 8
REPEATS = 3
TEXTS = (
    "def add(a, b):\n    return a + b",
    "Visit https://example.com/docs?page=2 for more.",
    "12 + 7 = 19, then 19 * 3 = 57.",
    "Bonjour, comment allez-vous aujourd'hui ?",
    "lol that was sooo funny 😂😂",
)


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture(scope="module")
def store(loaded, tmp_path_factory):
    path = tmp_path_factory.mktemp("concurrency") / "store.duckdb"
    build_store(loaded, "bundled+arithmetic:40", path)
    with Store.open(path) as opened:
        yield opened


def requests(store: Store, loaded) -> dict[str, Callable[[], Any]]:
    """Named requests as the pages make them; each returns what the page would show."""
    saes = store.saes()["sae"].tolist()
    live = {sae: feature_queries.live_features(store, sae) for sae in saes}
    text_ids = store.texts()["text_id"].tolist()
    made: dict[str, Callable[[], Any]] = {}
    for index, sae in enumerate(saes):
        feature = int(live[sae][index * 3])
        top = store.feature_topk(sae, feature)
        made[f"topk {sae}#{feature}"] = lambda s=sae, f=feature: store.feature_topk(s, f)
        made[f"windows {sae}#{feature}"] = lambda s=sae, f=feature, t=top: (
            feature_queries.example_windows(store, s, f, t)
        )
        level = "text" if index % 2 else "token"
        made[f"co-firing {sae}#{feature}"] = lambda s=sae, f=feature, v=level: (
            feature_queries.co_firing(store, s, f, 10, v)
        )
        made[f"text acts {sae}"] = lambda s=sae, t=text_ids[index * 7]: store.text_acts(t, s)
        made[f"encode {sae}"] = lambda s=sae, t=TEXTS[index]: encode_text(loaded, s, t)
    made["frequency table"] = store.frequency_table
    made["logit lens"] = lambda: store.logit_lens(saes[0], int(live[saes[0]][0]))
    for measure in ("score", "auroc"):
        settings = SpecialistSettings(measure=measure)
        made[f"specialists {measure}"] = lambda s=settings: load_specialists(store, s)
    sae = saes[-1]
    features = [int(f) for f in live[sae][:4]]
    interventions = [
        Intervention(sae, (features[0],), "zero"),
        Intervention(sae, (features[1],), "clamp", 3.0),
        Intervention(sae, (features[0], features[2]), "scale", -2.0, (2, 3)),
        Intervention(sae, (features[1], features[3]), "swap"),
        Intervention(sae, (features[2],), "steer", 8.0),
    ]
    for index, intervention in enumerate(interventions):
        made[f"effect {intervention.describe()}"] = lambda i=intervention, t=TEXTS[index]: (
            text_effect(loaded, i, t)
        )
    return made


def assert_same(got: Any, expected: Any, where: str) -> None:
    """Equal results, exactly: frames, arrays, dataclasses, containers and scalars."""
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, obj=where)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected, err_msg=where)
    elif is_dataclass(expected):
        assert type(got) is type(expected), where
        for field in fields(expected):
            name = field.name
            assert_same(getattr(got, name), getattr(expected, name), f"{where}.{name}")
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    else:
        assert got == expected, where


def model_state(loaded) -> tuple[int, list[bytes]]:
    """Hooks on the model and the bytes of every model and SAE parameter."""
    hooks = sum(len(point.fwd_hooks) for point in loaded.model.hook_dict.values())
    tensors = [*loaded.model.state_dict().values()]
    for handle in loaded.saes:
        tensors += [*handle.sae.state_dict().values()]
    return hooks, [t.detach().cpu().numpy().tobytes() for t in tensors]


def test_eight_threads_get_what_each_request_gets_alone(store, loaded) -> None:
    made = requests(store, loaded)
    assert len(made) >= 20
    before = model_state(loaded)
    alone = {name: request() for name, request in made.items()}

    names = [name for name in made for _ in range(REPEATS)]
    random.Random(0).shuffle(names)
    sae = store.saes()["sae"].iloc[0]
    writes = [f"label {n}" for n in range(THREADS)]  # one label save per thread, midway
    results: list[tuple[str, Any]] = []
    errors: list[BaseException] = []
    run_ids: dict[int, int] = {}
    start = threading.Barrier(THREADS)
    lock = threading.Lock()

    def work(thread: int) -> None:
        torch.set_num_threads(1)
        mine = names[thread::THREADS]
        start.wait()
        try:
            for index, name in enumerate(mine):
                if index == len(mine) // 2:
                    store.save_label(sae, thread, writes[thread], "saved under load")
                    run_ids[thread] = store.save_intervention(sae, {"thread": thread}, {})
                result = made[name]()
                with lock:
                    results.append((name, result))
        except BaseException as error:  # reported below, with the request that raised it
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == len(names) == len(made) * REPEATS
    for name, result in results:
        assert_same(result, alone[name], name)

    labels = store.labels(sae)
    assert sorted(labels["label"]) == sorted(writes)
    assert labels.set_index("label")["feature"].to_dict() == {w: n for n, w in enumerate(writes)}
    ledger = store.interventions(sae).set_index("id")["settings"].map(json.loads)
    assert {run_id: ledger[run_id]["thread"] for run_id in run_ids.values()} == {
        run_id: thread for thread, run_id in run_ids.items()
    }
    assert len(ledger) == THREADS
    assert model_state(loaded) == before
