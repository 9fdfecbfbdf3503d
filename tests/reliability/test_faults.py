"""Faults: a build SIGKILLed at points spread over its whole life never loses the previous
store, its labels or its intervention ledger, and leaves nothing that breaks the next build;
a rebuild while a `Store` is open keeps the open one answering from the old file until the
app's store slot reopens the new one.

Builds run through `python -m explorer build`'s `main` in a runner subprocess (see
`tests.reliability.helpers.RUNNER`) that kills the build at a time or, by wrapping library
functions, right before or after a chosen step: model loading, extraction, the end of
ingest, steps of `StoreWriter._finish` and the `os.replace` swap.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from explorer.build.single import build_store
from explorer.store.reader import Store
from explorer.ui.resources import _StoreSlot
from tests.reliability.helpers import ROOT, BuildRunner, fingerprint

OLD_CORPUS = "bundled+arithmetic:30"
NEW_CORPUS = "arithmetic:80"
USER_TABLES = ("labels", "interventions")
EXACT_TABLES = ("texts", "tokens", "acts", "feature_topk", "logit_lens", "token_counts")
# Kill points that wrap a library function: each must be reached and kill the build.
HOOKED_POINTS = [
    "before_model",  # the model and SAEs are about to load
    "extraction",  # the 5th batch of activations of one SAE
    "ingested",  # every row added, `finish` about to start
    "finish_step:per-text activations",  # derived tables of `_finish` half done
    "finish_step:token_counts",  # derived tables done, user data not yet copied
    "after_replace",  # swapped; the process dies before it returns
    "before_replace",  # committed and checkpointed; `os.replace` about to swap (last: its
    # complete temporary file is left for the next build to remove)
]
TIMED_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)  # of one full build's duration
FAULTS_INJECTED = 1 + len(HOOKED_POINTS) + len(TIMED_FRACTIONS)  # + one kill while importing


def content(path: Path) -> dict[str, tuple[int, int]]:
    """The store's row counts, with the content hash of the tables a build writes the same
    every time (derived float sums may differ in their last bits between two builds); the
    user tables are compared separately. In this process DuckDB reuses an instance already
    open on the path, so call it only when no `Store` holds a replaced file."""
    return {
        table: (rows, digest if table in EXACT_TABLES else 0)
        for table, (rows, digest) in fingerprint(path).items()
        if table not in USER_TABLES
    }


def user_data(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store.open(path) as store:
        return store.labels(), store.interventions()


def save_user_data(path: Path) -> None:
    with Store.open(path) as store:
        sae = store.saes()["sae"].iloc[0]
        store.save_label(sae, 3, 'it\'s a "quote"; -- label', "kept across kills")
        store.save_label(sae, 7, "second label")
        store.save_intervention(sae, {"mode": "zero", "features": [3]}, {"mean_delta_loss": 0.5})


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Iterator[BuildRunner]:
    build_runner = BuildRunner(tmp_path_factory.mktemp("runner"))
    yield build_runner
    build_runner.close()


def build_argv(tiny_bundle_path: Path, out: Path, corpus: str = NEW_CORPUS) -> list[str]:
    return [
        "build",
        f"--source=demo:{tiny_bundle_path}",
        f"--corpus={corpus}",
        f"--out={out}",
        "--batch-size=8",
        "--threads=1",
    ]


def kill_while_importing(tiny_bundle_path: Path, out: Path) -> int:
    """A plain `python -m explorer build`, killed 1 s after it starts (still importing)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "explorer", *build_argv(tiny_bundle_path, out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    return process.wait()


@pytest.mark.slow
def test_killed_builds_never_lose_the_store_labels_or_ledger(
    tiny_bundle_path, runner, tmp_path
) -> None:
    reference = tmp_path / "reference" / "store.duckdb"
    reference.parent.mkdir()
    full = runner.run("none", build_argv(tiny_bundle_path, reference))
    assert full["code"] == 0 and not full["killed"], full
    new_content = content(reference)

    folder = tmp_path / "store"
    folder.mkdir()
    path = folder / "store.duckdb"
    build_store(f"demo:{tiny_bundle_path}", OLD_CORPUS, path)
    save_user_data(path)
    assert content(path) != new_content
    labels, ledger = user_data(path)
    assert len(labels) == 2 and len(ledger) == 1

    def killed_build(point: str, run) -> str:
        """Run a build that gets killed; then the store opens and is either the same file,
        untouched (every table exactly as before), or the new build swapped in whole, with
        the labels and the ledger kept either way. Returns "kept" or "swapped"."""
        inode, before = path.stat().st_ino, fingerprint(path)
        result = run()
        if path.stat().st_ino == inode:
            assert fingerprint(path) == before, f"{point}: the old store changed"
            state = "kept"
        else:
            assert content(path) == new_content, f"{point}: the swapped-in store is incomplete"
            state = "swapped"
        assert_user_data_kept(path, labels, ledger)
        outcomes[point] = state if result is None or result["killed"] else f"finished, {state}"
        return state

    outcomes: dict[str, str] = {}

    def importing() -> None:
        assert kill_while_importing(tiny_bundle_path, path) == -signal.SIGKILL

    assert killed_build("importing", importing) == "kept"
    for fraction in TIMED_FRACTIONS:
        after = fraction * full["seconds"]

        def timed(after: float = after) -> dict:
            result = runner.run("timed", build_argv(tiny_bundle_path, path), after=after)
            assert result["killed"] or result["code"] == 0, result
            return result

        killed_build(f"{fraction:.0%} of a build", timed)
    for point in HOOKED_POINTS:

        def hooked(point: str = point) -> dict:
            result = runner.run(point, build_argv(tiny_bundle_path, path))
            assert result["killed"], f"{point} was never reached: {result}"
            return result

        expected = "swapped" if point == "after_replace" else "kept"
        assert killed_build(point, hooked) == expected, outcomes
    assert sum(state.startswith(("kept", "swapped")) for state in outcomes.values()) >= 10

    # what the killed builds left behind does not break the next build, which removes it
    leftovers = [p.name for p in folder.iterdir() if p.name != "store.duckdb"]
    assert any(".tmp-" in name for name in leftovers), leftovers
    inode = path.stat().st_ino
    final = runner.run("none", build_argv(tiny_bundle_path, path))
    assert final["code"] == 0, final
    assert sorted(p.name for p in folder.iterdir()) == ["store.duckdb", "store.duckdb.user.sqlite"]
    assert path.stat().st_ino != inode and content(path) == new_content
    assert_user_data_kept(path, labels, ledger)


def assert_user_data_kept(path: Path, labels: pd.DataFrame, ledger: pd.DataFrame) -> None:
    now_labels, now_ledger = user_data(path)
    pd.testing.assert_frame_equal(now_labels, labels)
    pd.testing.assert_frame_equal(now_ledger, ledger)


@pytest.mark.slow
def test_a_rebuild_while_the_store_is_open(tiny_bundle_path, runner, tmp_path) -> None:
    path = tmp_path / "store.duckdb"
    build_store(f"demo:{tiny_bundle_path}", OLD_CORPUS, path)
    save_user_data(path)
    old_content = content(path)
    labels, ledger = user_data(path)
    slot = _StoreSlot(str(path))
    store = slot.get()
    old_counts = store.table_counts()
    sae = store.saes()["sae"].iloc[0]
    old_top = store.feature_topk(sae, 3)

    answers: list[bool] = []
    stop = threading.Event()

    def keep_reading() -> None:  # a session reading while the rebuild runs
        while not stop.is_set():
            answers.append(
                store.table_counts() == old_counts and store.feature_topk(sae, 3).equals(old_top)
            )

    reader = threading.Thread(target=keep_reading)
    reader.start()
    try:
        result = runner.run("none", build_argv(tiny_bundle_path, path))
    finally:
        stop.set()
        reader.join()
    assert result["code"] == 0, result
    assert len(answers) > 10 and all(answers)

    # the open store still answers from the replaced file; the slot opens the new one
    assert store.changed_on_disk()
    assert store.table_counts() == old_counts
    fresh = slot.get()
    assert fresh is not store
    assert content(path) != old_content
    assert fresh.table_counts() == {
        t: n for t, (n, _) in fingerprint(path, user_data=False).items()
    }
    assert fresh.table_counts()["texts"] == 80
    pd.testing.assert_frame_equal(fresh.labels(), labels)
    pd.testing.assert_frame_equal(fresh.interventions(), ledger)
    assert slot.get() is fresh

    # an in-process rebuild (the app's first-run build) while `fresh` is open
    build_store(f"demo:{tiny_bundle_path}", OLD_CORPUS, path)
    assert fresh.changed_on_disk()
    assert fresh.table_counts()["texts"] == 80
    reopened = slot.get()
    assert reopened is not fresh
    assert content(path) == old_content
    assert reopened.table_counts()["texts"] == old_counts["texts"]
    pd.testing.assert_frame_equal(reopened.labels(), labels)
    reopened.close()
