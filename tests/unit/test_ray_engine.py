"""The Ray engine: a build on a local Ray cluster of 2 CPU workers equals a single build."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from explorer.build.extract import BuildSettings
from explorer.build.ray_engine import build_with_ray
from explorer.build.shards import MANIFESTS
from explorer.build.single import build_store
from explorer.cli import main
from explorer.errors import InputError
from explorer.sources.source import load_source
from tests.unit.test_shards import assert_same_tables

CORPUS = "bundled+arithmetic:60"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip(
        "ray", reason="Ray is an optional extra: pip install -r requirements-scale.txt"
    )
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def single_store(tiny_bundle_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("single") / "single.duckdb"
    build_store(load_source(f"demo:{tiny_bundle_path}"), CORPUS, path, BuildSettings(batch_size=16))
    return path


@pytest.mark.slow
def test_ray_build_equals_the_single_process_build(
    ray_cluster, tiny_bundle_path, single_store, tmp_path, capsys
):
    shard_dir = tmp_path / "shards"
    argv = ["build", "--source", f"demo:{tiny_bundle_path}", "--corpus", CORPUS]
    argv += ["--batch-size", "16", "--threads", "1", "--engine", "ray", "--workers", "2"]
    out = tmp_path / "ray.duckdb"
    assert main([*argv, "--shards", "3", "--shard-dir", str(shard_dir), "--out", str(out)]) == 0
    assert f"wrote {out} from 3 shards" in capsys.readouterr().out
    assert_same_tables(out, single_store)
    manifests = sorted(path.name for path in (shard_dir / MANIFESTS).iterdir())
    assert manifests == ["shard=0.json", "shard=1.json", "shard=2.json"]  # kept when named

    out = tmp_path / "ray2.duckdb"
    report = build_with_ray(
        f"demo:{tiny_bundle_path}", CORPUS, out, BuildSettings(batch_size=16), workers=2
    )
    assert report.n_shards == 2
    assert_same_tables(out, single_store)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "ray.duckdb",
        "ray2.duckdb",
        "shards",
    ]  # the temporary shard folder is gone


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(InputError, match="pip install -r requirements-scale.txt"):
        build_with_ray("demo", CORPUS, tmp_path / "store.duckdb")
