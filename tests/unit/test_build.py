"""Builds end to end: store contents equal direct computation; the CLI's messages on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from explorer.build import extract
from explorer.build.extract import BuildSettings
from explorer.build.single import build_store
from explorer.cli import main
from explorer.corpus import resolve_corpus
from explorer.sources.source import load_source
from explorer.store.reader import Store

CORPUS = "bundled+arithmetic:60"


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path):
    return load_source(f"demo:{tiny_bundle_path}")


@pytest.fixture(scope="module")
def store_path(loaded, tmp_path_factory):
    path = tmp_path_factory.mktemp("stores") / "tiny.duckdb"
    build_store(loaded, CORPUS, path, BuildSettings(batch_size=16))
    return path


@pytest.fixture(scope="module")
def store(store_path):
    with Store.open(store_path) as opened:
        yield opened


def all_acts(store: Store) -> pd.DataFrame:
    with store.cursor() as cursor:
        return cursor.execute(
            """SELECT s.sae, a.feature::BIGINT AS feature, a.text_id::BIGINT AS text_id,
            a.pos::BIGINT AS pos, a.value FROM acts a JOIN saes s USING (sae_idx)"""
        ).df()


def test_store_activations_equal_direct_model_then_sae(loaded, store):
    texts = store.texts()
    rng = np.random.default_rng(1)
    for handle in loaded.saes:
        for text_id in rng.choice(texts.text_id.to_numpy(), size=8, replace=False):
            text = store.text(int(text_id))["text"]
            tokens = loaded.model.to_tokens(text)[:, : loaded.model.cfg.n_ctx]
            with torch.inference_mode():
                _, cache = loaded.model.run_with_cache(tokens, names_filter=[handle.hook_name])
                expected = handle.sae.encode(cache[handle.hook_name])[0]  # [pos, d_sae]
                expected[0] = 0  # BOS is never stored
            rows = store.text_acts(int(text_id), handle.name)
            got = torch.zeros_like(expected)
            got[rows.pos.to_numpy(), rows.feature.to_numpy()] = torch.tensor(
                rows.value.to_numpy(), dtype=got.dtype
            )
            assert torch.equal(got != 0, expected != 0), (handle.name, text_id)
            assert (got - expected).abs().max() <= 1e-4
            stored_tokens = store.text_tokens(int(text_id))
            assert stored_tokens.pos.tolist() == list(range(1, tokens.shape[1]))
            assert stored_tokens.token_id.tolist() == tokens[0, 1:].tolist()


def test_no_bos_or_padding_rows(store):
    acts = all_acts(store)
    n_tokens = store.texts().set_index("text_id").n_tokens
    assert acts.pos.min() >= 1
    assert (acts.pos.to_numpy() <= n_tokens.loc[acts.text_id].to_numpy()).all()


def test_frequencies_and_category_means_equal_pandas(store):
    acts = all_acts(store)
    texts = store.texts()
    n_tokens_total = texts.n_tokens.sum()
    for sae in store.saes().sae:
        rows = acts[acts.sae == sae]
        stats = store.feature_stats(sae).set_index("feature")
        counts = rows.groupby("feature").size().reindex(stats.index, fill_value=0)
        np.testing.assert_allclose(stats.token_freq, counts / n_tokens_total)
        texts_active = rows.groupby("feature").text_id.nunique().reindex(stats.index, fill_value=0)
        np.testing.assert_allclose(stats.text_freq, texts_active / (texts.n_tokens > 0).sum())
        # per-text activation = sum over the text's tokens / its n_tokens; category mean
        per_text = rows.groupby(["feature", "text_id"]).value.sum().reset_index()
        per_text = per_text.merge(texts[["text_id", "category", "n_tokens"]], on="text_id")
        per_text["act"] = per_text.value / per_text.n_tokens
        n_texts = texts[texts.n_tokens > 0].groupby("category").size()
        expected = (
            per_text.groupby(["feature", "category"]).act.sum()
            / n_texts.reindex(
                per_text.groupby(["feature", "category"]).act.sum().index.get_level_values(1)
            ).to_numpy()
        )
        table = store.feature_category(sae).set_index(["feature", "category"])
        got = table.mean_act.loc[expected.index]
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-5)


def test_stored_histograms_and_topk_agree_with_the_rows(store):
    acts = all_acts(store)
    sae = store.saes().sae.iloc[-1]
    stats = store.feature_stats(sae).set_index("feature")
    derived = store.compute_feature_stats(sae).set_index("feature")
    for feature in stats.index[stats.n_active_tokens > 0][:20]:
        assert list(stats["hist"].loc[feature]) == list(derived["hist"].loc[feature])
        assert sum(stats["hist"].loc[feature]) == stats.n_active_tokens.loc[feature]
        top = store.feature_topk(sae, int(feature))
        values = acts[(acts.sae == sae) & (acts.feature == feature)].value.nlargest(len(top))
        np.testing.assert_allclose(top.value.to_numpy(), values.to_numpy())


def direct_explained_variance(loaded, hook_name: str, sae) -> float:
    """1 - sum |x - decode(encode(x))|^2 / sum |x - mean(x)|^2 over every real token of the
    corpus, one text at a time (no batching, no padding)."""
    errors, inputs = [], []
    for text in resolve_corpus(CORPUS).texts["text"]:
        tokens = loaded.model.to_tokens(text)[:, : loaded.model.cfg.n_ctx]
        with torch.no_grad():
            _, cache = loaded.model.run_with_cache(tokens, names_filter=[hook_name])
            x = cache[hook_name][0, 1:].double()  # real tokens, [n, d_in]
            errors.append(((sae.decode(sae.encode(x.float())).double() - x) ** 2).sum())
        inputs.append(x)
    x = torch.cat(inputs)
    return float(1 - sum(errors) / ((x - x.mean(0)) ** 2).sum())


@pytest.mark.slow  # a direct forward pass over the whole test corpus (~17 s)
def test_explained_variance_equals_a_direct_computation(store, loaded):
    """The build sums every real token, decoding the sparse rows: the stored number is the
    direct one, not an estimate."""
    direct = {h.name: direct_explained_variance(loaded, h.hook_name, h.sae) for h in loaded.saes}
    stored = store.saes().set_index("sae")["explained_variance"]
    for name, value in direct.items():
        assert stored[name] == pytest.approx(value, abs=1e-5)


def test_decoding_sparse_rows_equals_the_sae_decode(loaded):
    """`decode_rows` (a sparse COO tensor through `sae.decode`) against the dense decode,
    for the TopK SAEs of the bundle and SAELens's standard and JumpReLU SAEs."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    saes = [handle.sae for handle in loaded.saes]
    saes += [StandardSAE(StandardSAEConfig(d_in=16, d_sae=64)).eval()]
    jump = JumpReLUSAE(JumpReLUSAEConfig(d_in=16, d_sae=64)).eval()
    with torch.no_grad():
        jump.threshold.fill_(0.05)
    saes += [jump]
    for sae in saes:
        x = torch.randn(40, sae.cfg.d_in)
        with torch.no_grad():
            dense = sae.encode(x)
            token, feature = dense.nonzero(as_tuple=True)
            assert len(token) > 0
            rows = extract.decode_rows(sae, token, feature, dense[token, feature], len(x))
            torch.testing.assert_close(rows, sae.decode(dense), rtol=1e-5, atol=1e-5)
        assert extract.sparse_decode_matches(sae)


def test_quality_and_meta_are_recorded(store, loaded):
    saes = store.saes()
    assert list(saes.sae) == [handle.name for handle in loaded.saes]
    assert saes.l0.tolist() == pytest.approx([8.0] * len(saes), abs=0.01)
    assert saes.explained_variance.between(0, 1).all()
    assert saes.ce_loss_recovered.notna().all()
    assert store.meta()["corpus"] == resolve_corpus(CORPUS).name


@pytest.mark.slow  # a whole CLI build, info and export (~40 s)
def test_cli_build_info_and_export(tiny_bundle_path, tmp_path, capsys):
    out = tmp_path / "cli.duckdb"
    args = ["build", "--source", f"demo:{tiny_bundle_path}", "--corpus", "arithmetic:30"]
    assert main([*args, "--out", str(out), "--batch-size", "8", "--threads", "1"]) == 0
    assert "30 texts" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "acts" in info and "explained_variance" in info
    with Store.open(out) as store:
        n_rows = store.table_counts()["acts"]
    size = out.stat().st_size
    assert f"file: {size / 1e6:,.1f} MB, {size / n_rows:.2f} bytes per activation row" in info
    csv = tmp_path / "texts.csv"
    assert main(["export", str(out), "--table", "texts", "--format", "csv", "--out", str(csv)]) == 0
    assert len(pd.read_csv(csv)) == 30


@pytest.mark.slow  # two CLI builds (~14 s quiet)
def test_cli_build_writes_to_explorer_store_and_refuses_what_does_not_fit(
    tiny_bundle_path, tmp_path, monkeypatch, capsys
):
    from explorer.sources import memory

    out = tmp_path / "from_env.duckdb"
    monkeypatch.setenv("EXPLORER_STORE", str(out))
    argv = ["build", "--source", f"demo:{tiny_bundle_path}", "--corpus", "arithmetic:5"]
    assert main(argv) == 0
    with Store.open(out) as store:
        assert len(store.texts()) == 5
    before = out.stat().st_mtime_ns
    monkeypatch.setattr(memory, "available_memory", lambda: memory.AvailableMemory(1000, "test"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs" in err and "this machine has" in err and "Traceback" not in err
    assert out.stat().st_mtime_ns == before  # refused before anything was written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nonsense"], "cannot read the source"),
        (["--corpus", "nonexistent.csv"], "nonexistent.csv"),
        (["--out", "/no/such/folder/store.duckdb"], "does not exist"),
        (["--max-texts", "0"], "--max-texts"),
    ],
)
def test_cli_bad_input_gets_a_message_and_status_2(tiny_bundle_path, args, message, capsys):
    base = {"--source": f"demo:{tiny_bundle_path}", "--corpus": "arithmetic:5"}
    base |= dict(zip(args[::2], args[1::2], strict=True))
    argv = ["build", *[item for pair in base.items() for item in pair]]
    if "--out" not in base:
        argv += ["--out", "/tmp/never-written.duckdb"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_empty_corpus_file_is_refused_and_nothing_is_overwritten(
    tiny_bundle_path, store_path, tmp_path, capsys
):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,category\n")
    before = store_path.stat().st_mtime_ns
    argv = ["build", "--source", f"demo:{tiny_bundle_path}", "--corpus", str(empty)]
    assert main([*argv, "--out", str(store_path)]) == 2
    assert "empty.csv" in capsys.readouterr().err
    assert store_path.stat().st_mtime_ns == before


def test_corrupted_store_gets_a_message(tmp_path, capsys):
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a duckdb file" * 100)
    assert main(["info", str(broken)]) == 2
    assert "broken.duckdb" in capsys.readouterr().err
    assert broken.read_bytes().startswith(b"this is not")


@pytest.mark.slow  # a second extraction of the whole test corpus (~25 s)
def test_running_topk_equals_the_stores_ranking_with_ties(store, loaded):
    """The tensor running top-k (int64 keys: value, then the token's (text_id, pos) ordinal)
    ranks like the store: value DESC, then text_id, pos."""
    result = extract.extract(loaded, resolve_corpus(CORPUS), None, BuildSettings(batch_size=16))
    ties = 0
    for sae in store.saes().sae:
        running = result.top_examples[sae]
        with store.cursor() as cursor:
            stored = cursor.execute(
                "SELECT feature, rank, text_id, pos, value FROM feature_topk "
                "JOIN saes USING (sae_idx) WHERE sae = ? ORDER BY feature, rank",
                [sae],
            ).df()
        merged = running.merge(stored, on=["feature", "rank"], suffixes=("", "_store"))
        assert len(merged) == len(running) == len(stored)
        ties += int(stored.duplicated(["feature", "value"]).sum())
        assert (merged.text_id == merged.text_id_store).all()
        assert (merged.pos == merged.pos_store).all()
        np.testing.assert_array_equal(
            merged.value.to_numpy(np.float32), merged.value_store.to_numpy(np.float32)
        )
    assert ties > 0  # repeated arithmetic texts give equal values: the tie order is tested


def test_topk_keys_order_by_value_then_token():
    value = torch.tensor([1.5, 1.5, 2.0, 0.25, 1.5])
    ordinal = torch.tensor([7, 3, 9, 0, 2**32 - 1])
    keys = extract.topk_keys(value, ordinal)
    assert torch.argsort(keys, descending=True).tolist() == [2, 1, 0, 4, 3]
    back_value, back_ordinal = extract.key_values(keys)
    assert torch.equal(back_value, value) and torch.equal(back_ordinal, ordinal)


@pytest.mark.slow
def test_ce_loss_recovered_equals_a_direct_computation(store, loaded):
    """Each text of the stratified quality sample alone (no padding, no batching), the hook's
    activation replaced at its real tokens through `run_with_hooks`."""
    corpus_texts = resolve_corpus(CORPUS).texts
    texts = corpus_texts["text"].iloc[extract.quality_sample(corpus_texts, BuildSettings())]
    stored = store.saes().set_index("sae")["ce_loss_recovered"]
    for handle in loaded.saes:
        totals = np.zeros(3)  # clean, with the SAE, zero-ablated: summed -log p
        n_targets = 0
        for text in texts:
            tokens = loaded.model.to_tokens(text)[:, : loaded.model.cfg.n_ctx]

            def splice(replace):
                def hook(value, hook):
                    value = value.clone()
                    value[:, 1:] = replace(value[:, 1:])
                    return value

                return hook

            with torch.no_grad():
                runs = [
                    loaded.model(tokens),
                    loaded.model.run_with_hooks(
                        tokens,
                        fwd_hooks=[
                            (
                                handle.hook_name,
                                splice(lambda x, sae=handle.sae: sae.decode(sae.encode(x))),
                            )
                        ],
                    ),
                    loaded.model.run_with_hooks(
                        tokens, fwd_hooks=[(handle.hook_name, splice(torch.zeros_like))]
                    ),
                ]
            for i, logits in enumerate(runs):
                log_probs = logits[0, :-1].double().log_softmax(-1)
                totals[i] -= float(log_probs.gather(-1, tokens[0, 1:, None]).sum())
            n_targets += tokens.shape[1] - 1
        clean, with_sae, zero = totals / n_targets
        assert stored[handle.name] == pytest.approx((zero - with_sae) / (zero - clean), abs=1e-4)


def test_sparse_topk_encode_gives_the_rows_of_the_dense_encode(loaded):
    """SAELens's sparse TopK activation (the build's encode for TopK SAEs) against
    `sae.encode` then `nonzero`: the same rows, bit for bit; other architectures keep the
    dense encode."""
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    rescaled = TopKSAE(TopKSAEConfig(d_in=16, d_sae=64, k=5, rescale_acts_by_decoder_norm=True))
    with torch.no_grad():
        rescaled.W_dec.mul_(torch.rand(64, 1) + 0.5)  # decoder norms that change the top k
    for sae in [handle.sae for handle in loaded.saes] + [rescaled.eval()]:
        assert extract.sparse_topk_matches(sae)
        x = torch.randn(50, sae.cfg.d_in) * 3
        with torch.no_grad():
            got = extract.encode_rows(sae, x, sparse=True)
            dense = sae.encode(x)
        token, feature = dense.nonzero(as_tuple=True)
        assert len(token) > 0
        for a, b in zip(got, (token, feature, dense[token, feature]), strict=True):
            assert torch.equal(a, b)
    assert not extract.sparse_topk_matches(StandardSAE(StandardSAEConfig(d_in=16, d_sae=64)))


@pytest.mark.slow
def test_a_build_with_the_sparse_topk_encode_equals_the_dense_one(loaded, monkeypatch):
    """The bundle's SAEs are below `SPARSE_ENCODE_MIN_D_SAE`; lowered, the build encodes
    them sparsely and must compute the same statistics, top examples and quality."""
    corpus = resolve_corpus(CORPUS)
    settings = BuildSettings(batch_size=16)
    dense = extract.extract(loaded, corpus, None, settings)
    monkeypatch.setattr(extract, "SPARSE_ENCODE_MIN_D_SAE", 1)
    assert all(extract.use_sparse_encode(handle.sae) for handle in loaded.saes)
    sparse = extract.extract(loaded, corpus, None, settings)
    for name in dense.feature_stats:
        pd.testing.assert_frame_equal(sparse.feature_stats[name], dense.feature_stats[name])
        pd.testing.assert_frame_equal(sparse.top_examples[name], dense.top_examples[name])
        for key, value in dense.quality[name].items():
            assert sparse.quality[name][key] == pytest.approx(value, abs=1e-9)
