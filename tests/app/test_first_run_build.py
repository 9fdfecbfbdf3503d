"""The first-run demo build runs in a server thread: a session that goes away (a closed tab,
which stops its script run) leaves it running, the next session follows it to the end
without starting a second one, a failed build shows its message and can be retried, and the
progress bar reports every step up to the written store."""

from __future__ import annotations

import os
import threading

import pytest
from streamlit.testing.v1 import AppTest

from explorer.build import single
from explorer.build.stages import ANALYSES, STAGES
from explorer.errors import StoreError
from explorer.sources.source import Source, load_source
from explorer.store.reader import Store
from explorer.store.schema import SCHEMA_VERSION, stored_schema_version
from explorer.ui import resources

pytestmark = pytest.mark.slow  # heavy: left out of the quick loop (pyproject markers)

CORPUS = "bundled+arithmetic:60"


def page() -> None:
    """A page that needs the store, as every store page starts."""
    import streamlit as st

    from explorer.ui.state import current_store

    st.write(f"SAEs in the store: {len(current_store().saes())}")


@pytest.fixture
def builds(app_env, monkeypatch):
    """Count the builds, each held at its start until the test opens `gate`."""
    monkeypatch.setattr(resources, "DEMO_CORPUS", CORPUS)
    resources.demo_builds.clear()
    real = single.build_store
    started: list[str] = []
    gate = threading.Event()
    failures: list[Exception] = []

    def gated(*args, **kwargs):
        started.append(str(args[2]))
        assert gate.wait(120), "the test never opened the gate"
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(single, "build_store", gated)
    yield started, gate, failures
    gate.set()
    resources.demo_builds.clear()


def test_a_dropped_session_leaves_the_build_running_and_the_next_one_follows_it(
    app_env, builds
) -> None:
    started, gate, _ = builds
    first = AppTest.from_function(page, default_timeout=60)
    with pytest.raises(RuntimeError, match="timed out"):
        first.run(timeout=5)  # the session stops while it shows the progress: a closed tab
    build = resources.demo_build_of(str(app_env.store))
    assert build is not None and not build.finished
    assert not app_env.store.exists()

    gate.set()
    second = AppTest.from_function(page, default_timeout=180).run()
    assert not second.exception, second.exception
    assert started == [str(app_env.store)]  # one build, started by the first session
    assert resources.demo_builds().started == 1
    with Store.open(app_env.store) as store:
        n_saes = len(store.saes())
    assert n_saes == 3
    assert [m.value for m in second.markdown] == [f"SAEs in the store: {n_saes}"]
    assert stored_schema_version(app_env.store) == SCHEMA_VERSION


def test_a_failed_build_shows_its_message_and_can_be_retried(app_env, builds) -> None:
    started, gate, failures = builds
    failures.append(StoreError("The disk is full (planted)."))
    gate.set()
    at = AppTest.from_function(page, default_timeout=180).run()
    assert not at.exception, at.exception
    assert [error.value for error in at.error] == ["The disk is full (planted)."]
    assert not app_env.store.exists()

    again = AppTest.from_function(page, default_timeout=180).run()  # a later visit
    assert [error.value for error in again.error] == ["The disk is full (planted)."]
    assert len(started) == 1  # a failed build is not retried behind the user's back
    again.button[0].click().run()
    assert not again.exception, again.exception
    assert len(started) == 2
    assert again.markdown[-1].value == "SAEs in the store: 3"
    assert not again.error


def test_the_bar_reports_every_step_until_the_store_is_written(
    tiny_bundle_path, tmp_path, monkeypatch
):
    """The bar's value never goes back, and once the forward passes are done (the old bar's
    "0 s left") it names each later step in order, the kept analyses last, while the store
    file is not there yet; then the build is done."""
    monkeypatch.setattr(resources, "DEMO_CORPUS", CORPUS)
    path = tmp_path / "demo.duckdb"
    shown: list[tuple[float, str, bool]] = []

    class Recorded(resources.DemoBuild):
        def forward(self, *args) -> None:
            super().forward(*args)
            shown.append((self.fraction, self.text, path.exists()))

        def stage(self, *args) -> None:
            super().stage(*args)
            shown.append((self.fraction, self.text, path.exists()))

    build = Recorded(str(path))
    build.run(load_source(Source.parse(f"demo:{tiny_bundle_path}")))
    assert build.error is None and build.finished and build.fraction == 1.0
    fractions = [fraction for fraction, _, _ in shown]
    assert fractions == sorted(fractions)
    forward_done = max(i for i, (f, _, _) in enumerate(shown) if f == build.FORWARD_SHARE)
    after = [text for _, text, _ in shown[forward_done + 1 :]]
    named = [next(stage for stage in STAGES if stage in text) for text in after]
    assert sorted(set(named), key=STAGES.index) == list(STAGES)
    assert named == sorted(named, key=STAGES.index)
    assert ANALYSES in shown[-1][1] and not shown[-1][2]  # the last step, before the file
    assert stored_schema_version(path) == SCHEMA_VERSION


def test_the_synchronous_build_raises_a_failed_build_s_message(app_env, builds) -> None:
    _, gate, failures = builds
    failures.append(StoreError("No room (planted)."))
    gate.set()
    with pytest.raises(StoreError, match="No room"):
        resources.build_missing_demo_store(str(app_env.store), os.environ["EXPLORER_SOURCE"])


def test_the_atlas_is_kept_after_the_store_opens(tiny_bundle_path, tmp_path, monkeypatch):
    """Pages open once the store is written (the build is `finished`, the atlas pending);
    the thread then lays out the atlas and adds it to the same file, which keeps every other
    analysis and the maps of every SAE."""
    from explorer.analysis.atlas import kept_atlas
    from explorer.analysis.precompute import is_kept
    from explorer.analysis.specialists import SpecialistSettings

    monkeypatch.setattr(resources, "DEMO_CORPUS", CORPUS)
    path = tmp_path / "demo.duckdb"
    seen: dict[str, object] = {}

    class Recorded(resources.DemoBuild):
        def _keep_atlas(self, decoders) -> None:
            seen["finished"], seen["pending"] = self.finished, self.atlas_pending
            with Store.open(path) as store:
                seen["atlas_before"] = kept_atlas(store, store.saes()["sae"].tolist()[:1])
            super()._keep_atlas(decoders)

    build = Recorded(str(path))
    build.run(load_source(Source.parse(f"demo:{tiny_bundle_path}")))
    assert build.error is None and build.atlas_error is None
    assert seen == {"finished": True, "pending": True, "atlas_before": None}
    assert not build.atlas_pending and build.wait_for_atlas(0)
    with Store.open(path) as store:
        names = store.saes()["sae"].tolist()
        for name in names:
            kept = kept_atlas(store, [name])
            assert kept is not None and len(kept) == store.sae(name).d_sae
        assert len(kept_atlas(store, names)) == sum(store.sae(n).d_sae for n in names)
        assert is_kept(store, "specialists", SpecialistSettings())
