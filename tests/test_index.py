"""FAISS index: top-k equals brute force, save/load round trip, corruption is reported, cache reuse."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cache import Shard, cached_embeddings, cached_index, encode_shard, merge_shards
from engine.data import Corpus, Passage
from engine.dual_encoder import DualEncoder, DualEncoderConfig
from engine.index import DenseIndex, IndexLoadError


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_flat_top_k_equals_brute_force():
    vectors, queries = random_unit(500, 32, 0), random_unit(20, 32, 1)
    ids = [f"p{i}" for i in range(500)]
    res = DenseIndex.build(vectors, ids).search(queries, 10)
    expected = brute_force(queries, vectors, 10)
    assert res.ids == [[ids[j] for j in row] for row in expected]
    np.testing.assert_allclose(res.scores, np.take_along_axis(queries @ vectors.T, expected, axis=1), rtol=1e-5)


def test_incremental_add_equals_one_build():
    vectors, queries = random_unit(300, 16, 2), random_unit(5, 16, 3)
    ids = [f"p{i}" for i in range(300)]
    index = DenseIndex(16)
    index.add(vectors[:100], ids[:100])
    index.add(vectors[100:], ids[100:])
    assert index.search(queries, 7).ids == DenseIndex.build(vectors, ids).search(queries, 7).ids


def test_hnsw_recall_against_exact():
    vectors, queries = random_unit(2000, 32, 4), random_unit(50, 32, 5)
    ids = [str(i) for i in range(2000)]
    exact = DenseIndex.build(vectors, ids).search(queries, 10).ids
    approx = DenseIndex.build(vectors, ids, "HNSW32,Flat").search(queries, 10).ids
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


def test_k_larger_than_index_and_bad_shapes():
    index = DenseIndex.build(random_unit(3, 8, 6), ["a", "b", "c"])
    assert len(index.search(random_unit(1, 8, 7), 10).ids[0]) == 3
    with pytest.raises(ValueError, match="shape"):
        index.add(random_unit(2, 9, 8), ["d", "e"])
    with pytest.raises(ValueError, match="2 ids for 1 vectors"):
        index.add(random_unit(1, 8, 8), ["d", "e"])


def test_save_load_round_trip(tmp_path):
    vectors, queries = random_unit(100, 16, 9), random_unit(4, 16, 10)
    ids = [f"p{i}" for i in range(100)]
    index = DenseIndex.build(vectors, ids)
    index.save(tmp_path / "ix")
    loaded = DenseIndex.load(tmp_path / "ix")
    assert loaded.ids == ids and loaded.factory == "Flat"
    assert loaded.search(queries, 5).ids == index.search(queries, 5).ids


def test_corrupt_or_incomplete_index_is_reported(tmp_path):
    DenseIndex.build(random_unit(10, 8, 11), [str(i) for i in range(10)]).save(tmp_path / "ix")
    (tmp_path / "ix" / "index.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexLoadError, match="corrupt"):
        DenseIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / "ids.json").unlink()
    with pytest.raises(IndexLoadError, match="ids.json missing"):
        DenseIndex.load(tmp_path / "ix")


def test_ids_that_disagree_with_the_index_are_reported(tmp_path):
    DenseIndex.build(random_unit(10, 8, 12), [str(i) for i in range(10)]).save(tmp_path / "ix")
    (tmp_path / "ix" / "ids.json").write_text('["only-one"]')
    with pytest.raises(IndexLoadError, match="inconsistent"):
        DenseIndex.load(tmp_path / "ix")


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model_dir):
    return DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))


CORPUS = Corpus([Passage(f"p{i}", f"passage number {i} about topic {i % 3}", f"T{i % 3}") for i in range(11)])


def test_cache_reuses_embeddings_and_index(tmp_path, tiny_encoder):
    index = cached_index(tiny_encoder, CORPUS, root=tmp_path, show_progress=False)
    (emb,) = tmp_path.glob("*/embeddings.npy")
    stamp = emb.stat().st_mtime_ns
    again = cached_index(tiny_encoder, CORPUS, root=tmp_path, show_progress=False)
    assert emb.stat().st_mtime_ns == stamp  # nothing re-encoded
    q = tiny_encoder.encode_queries(["topic 2"])
    assert again.search(q, 5).ids == index.search(q, 5).ids


def test_corrupt_cached_embeddings_are_rebuilt(tmp_path, tiny_encoder):
    first = cached_embeddings(tiny_encoder, CORPUS, root=tmp_path, show_progress=False)
    (emb,) = tmp_path.glob("*/embeddings.npy")
    emb.write_bytes(b"garbage")
    np.testing.assert_array_equal(cached_embeddings(tiny_encoder, CORPUS, root=tmp_path, show_progress=False), first)


def test_shards_merge_to_the_one_shot_encoding(tmp_path, tiny_encoder):
    for i in range(3):
        encode_shard(tiny_encoder, CORPUS, Shard(i, 3), tmp_path, show_progress=False)
    merged = merge_shards(tmp_path, 3, CORPUS)
    np.testing.assert_allclose(merged, tiny_encoder.encode_passages(CORPUS.passages), atol=1e-6)


def test_missing_shard_and_bad_spec(tmp_path, tiny_encoder):
    encode_shard(tiny_encoder, CORPUS, Shard(0, 2), tmp_path, show_progress=False)
    with pytest.raises(FileNotFoundError, match="shard 1/2"):
        merge_shards(tmp_path, 2, CORPUS)
    with pytest.raises(ValueError, match="i/n"):
        Shard.parse("3")
    with pytest.raises(ValueError, match="0 <= i < n"):
        Shard.parse("2/2")


def test_stored_vectors_are_the_added_ones_for_whole_vector_indexes_and_none_for_codes(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    ids = [f"p{i}" for i in range(300)]
    for factory in ("Flat", "HNSW8,Flat", "IVF4,Flat"):
        index = DenseIndex.build(vectors, ids, factory=factory)
        np.testing.assert_array_equal(index.stored_vectors(["p7", "p0", "p299"]), vectors[[7, 0, 299]])
        assert index.stored_vectors(["p7", "nope"]) is None  # an unknown id: the caller encodes
        index.add(vectors[:1] * 2, ["late"])  # added later: found too
        np.testing.assert_array_equal(index.stored_vectors(["late"]), vectors[:1] * 2)
        index.save(tmp_path / factory)  # and after a reload
        np.testing.assert_array_equal(DenseIndex.load(tmp_path / factory).stored_vectors(["p7"]), vectors[[7]])
    for codes in ("PQ4", "IVF4,PQ4"):
        assert DenseIndex.build(vectors, ids, factory=codes).stored_vectors(["p7"]) is None  # codes only
