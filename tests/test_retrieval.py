"""BM25, fusion and the retriever on a hand-written corpus."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.data import read_beir
from engine.fusion import FusionConfig, reciprocal_rank_fusion, score_mix
from engine.retriever import MAX_QUESTION_CHARS, QueryError, build_retriever, clean_question
from engine.sparse import BM25Index


def test_rrf_hand_computed():
    fused = dict(reciprocal_rank_fusion([["a", "b"], ["b", "c"]], [1.0, 1.0], c=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)
    assert [pid for pid, _ in reciprocal_rank_fusion([["a", "b"], ["b", "c"]], [1.0, 1.0])] == ["b", "a", "c"]


def test_score_mix_hand_computed():
    fused = dict(score_mix([["a", "b"], ["b", "a"]], [[10.0, 5.0], [0.9, 0.1]], [1.0, 0.5]))
    assert fused == {"a": pytest.approx(1.0 + 0.0), "b": pytest.approx(0.0 + 0.5)}


def test_bm25_finds_the_obvious_passage_and_round_trips(tiny_beir, tmp_path):
    ds = read_beir(tiny_beir)
    bm25 = BM25Index.build(ds.corpus)
    assert bm25.search(["waggle dance of honeybees"], 3).ids[0][0] == "bees_0"
    bm25.save(tmp_path)
    assert BM25Index.load(tmp_path).search(["Fresnel lens"], 1).ids == [["lighthouse_0"]]


@pytest.mark.parametrize("bad", ["", "   \n\t", "\x00\x01\x02", "x" * (MAX_QUESTION_CHARS + 1), None, 42])
def test_bad_questions_get_a_clear_error(bad):
    with pytest.raises(QueryError):
        clean_question(bad)


def test_control_characters_are_dropped():
    assert clean_question("  who\x00 invented\x07 it? ") == "who invented it?"


@pytest.fixture(scope="module")
def retriever(tmp_path_factory, tiny_model_dir):
    from conftest import write_tiny_beir

    ds = read_beir(write_tiny_beir(tmp_path_factory.mktemp("d")))
    return build_retriever(
        ds.corpus, model=tiny_model_dir, cache_root=str(tmp_path_factory.mktemp("cache")), show_progress=False
    )


def test_modes_and_hit_fields(retriever):
    assert retriever.modes == ["dense", "bm25", "hybrid"]
    dense = retriever.search("waggle dance", k=3, mode="dense")
    assert [h.rank for h in dense] == [1, 2, 3]
    assert all(h.dense_score is not None and h.bm25_score is None for h in dense)
    assert dense[0].dense_score >= dense[1].dense_score >= dense[2].dense_score
    bm25 = retriever.search("waggle dance", k=3, mode="bm25")
    assert bm25[0].passage.id == "bees_0" and bm25[0].bm25_rank == 1
    hybrid = retriever.search("waggle dance", k=8, mode="hybrid")
    assert hybrid[0].passage.id == "bees_0"
    assert all(h.dense_rank is not None for h in hybrid)  # the whole tiny corpus is in the dense top-100


def test_bm25_with_no_matching_term_returns_nothing(retriever):
    assert retriever.search("zzzqqq", k=5, mode="bm25") == []


def test_unknown_mode_and_missing_reranker(retriever):
    with pytest.raises(ValueError, match="not available"):
        retriever.search("bees", mode="colbert")
    with pytest.raises(ValueError, match="no cross-encoder"):
        retriever.search("bees", k=3, rerank_depth=3)


def test_rerank_orders_by_cross_encoder(retriever, tiny_model_dir):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    retriever.reranker = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    try:
        hits = retriever.search("honeybee colony queen", k=6, rerank_depth=4)
    finally:
        retriever.reranker = None
    head, tail = hits[:4], hits[4:]
    assert [h.ce_logit for h in head] == sorted((h.ce_logit for h in head), reverse=True)
    assert all(0.0 <= h.ce_prob <= 1.0 for h in head)
    assert all(h.ce_prob is None for h in tail) and [h.rank for h in hits] == list(range(1, 7))
    assert sorted(h.first_stage_rank for h in head) == [1, 2, 3, 4]


def test_fusion_config_rejects_unknown_method():
    from engine.fusion import fuse

    with pytest.raises(ValueError, match="unknown fusion"):
        fuse([["a"]], [[1.0]], FusionConfig(method="max"))


def test_rerank_order_mixes_the_logit_with_the_first_stage_score():
    from engine.fusion import rerank_order

    logits, first = [1.0, 0.5, 1.0], [0.0, 0.1, 0.0]
    assert rerank_order(logits, first, 0.0) == [0, 2, 1]  # the cross-encoder alone; ties keep first-stage order
    assert rerank_order(logits, first, 10.0) == [1, 0, 2]  # 0.5 + 10 * 0.1 = 1.5 beats 1.0
    assert rerank_order(logits, first, 5.0) == [0, 1, 2]  # 1.0 ties 0.5 + 0.5: first-stage order
    with pytest.raises(ValueError, match="2 cross-encoder logits for 1"):
        rerank_order([1.0, 2.0], [0.0], 1.0)


def test_rerank_order_with_a_bm25_share():
    from engine.fusion import rerank_order, rerank_scores

    logits, dense, bm25 = [1.0, 0.5, 0.0], [0.2, 0.1, 0.3], [2.0, 10.0, 4.0]
    assert rerank_scores(logits, dense, 0.0, bm25, 0.1) == pytest.approx([1.2, 1.5, 0.4])
    assert rerank_order(logits, dense, 0.0, bm25, 0.1) == [1, 0, 2]
    # 1 + 5 * 0.2 + 0.1 * 2 = 2.2; 0.5 + 0.5 + 1.0 = 2.0; 0 + 1.5 + 0.4 = 1.9
    assert rerank_scores(logits, dense, 5.0, bm25, 0.1) == pytest.approx([2.2, 2.0, 1.9])
    assert rerank_order(logits, dense, 5.0, bm25, 0.1) == [0, 1, 2]
    # a feature with weight 0 may be missing (a retriever without that model)
    assert rerank_order(logits, [None] * 3, 0.0, bm25, 1.0) == [1, 2, 0]
    assert rerank_order(logits, dense, 1.0) == rerank_order(logits, dense, 1.0, (), 0.0)
    with pytest.raises(ValueError, match="needs a BM25 score per candidate"):
        rerank_order(logits, dense, 1.0, (), 0.5)


def test_bm25_and_dense_weights_are_chosen_together_and_ties_prefer_less_bm25():
    from engine.fusion import RerankCandidates, choose_rerank_weight, weight_table

    candidates = {
        # the cross-encoder and the dense score prefer "a"; only BM25 (8 vs 1) can lift the relevant "b":
        # it needs v * 7 > 1.0 + w * 0.1, i.e. v > 1/7 at w = 0
        "q1": RerankCandidates(("a", "b"), (0.3, 0.2), (1.0, 0.0), (1.0, 8.0)),
        # relevant "c" leads everywhere except BM25 (0 vs 3): v * 3 > 2 (v > 2/3) drops it to second
        "q2": RerankCandidates(("c", "d"), (0.5, 0.5), (2.0, 0.0), (0.0, 3.0)),
    }
    relevant = {"q1": {"b": 1}, "q2": {"c": 1}}
    choice = choose_rerank_weight(candidates, relevant, weights=(0.0, 1.0), bm25_weights=(0.0, 0.5, 1.0))
    assert choice.mrr == {
        (0.0, 0.0): 75.0,
        (1.0, 0.0): 75.0,
        (0.0, 0.5): 100.0,  # q1: 0.0 + 4.0 > 1.0 + 0.5; q2: 2.0 > 1.5
        (1.0, 0.5): 100.0,  # q1: 0.2 + 4.0 > 1.3 + 0.5; q2: 2.5 > 2.0
        (0.0, 1.0): 75.0,  # q1 right, but q2: 3.0 > 2.0
        (1.0, 1.0): 75.0,  # q2: 3.5 > 2.5
    }
    assert (choice.weight, choice.bm25_weight) == (0.0, 0.5)  # ties: the smaller BM25, then dense weight
    assert not choice.on_edge
    edge = choose_rerank_weight(candidates, relevant, weights=(0.0, 1.0), bm25_weights=(0.0, 0.5))
    assert (edge.weight, edge.bm25_weight, edge.on_edge) == (0.0, 0.5, True)  # 0.5 is the grid's largest
    assert weight_table(choice) == "v 0: 75.0 (w 0), v 0.5: 100.0 (w 0), v 1: 75.0 (w 0)"  # the best w per v
    with pytest.raises(ValueError, match="needs a BM25 score per candidate"):
        choose_rerank_weight({"q1": RerankCandidates(("a",), (0.1,), (0.0,))}, {"q1": {"a": 1}}, bm25_weights=(1.0,))


def test_the_grid_is_extended_while_the_choice_is_its_largest_weight():
    from engine.fusion import RerankCandidates, choose_rerank_weight

    def needs(v: float) -> RerankCandidates:  # the relevant second passage wins once the BM25 weight exceeds v
        return RerankCandidates(("x", "rel"), (0.0, 0.0), (v, 0.0), (0.0, 1.0))

    candidates = {
        "qa": needs(0.15),
        "qb": needs(0.3),
        "qc": RerankCandidates(("rel", "y"), (0.0, 0.0), (1.5, 0.0), (0.0, 1.0)),  # lost once v > 1.5
    }
    relevant = {q: {"rel": 1} for q in candidates}
    fixed = choose_rerank_weight(candidates, relevant, weights=(0.0,), bm25_weights=(0.0, 0.2))
    assert (fixed.bm25_weight, fixed.on_edge, fixed.extensions) == (0.2, True, 0)
    once = choose_rerank_weight(candidates, relevant, weights=(0.0,), bm25_weights=(0.0, 0.2), extend=1)
    assert (once.bm25_weight, once.on_edge, once.extensions) == (0.4, True, 1)  # better, still the largest
    free = choose_rerank_weight(candidates, relevant, weights=(0.0,), bm25_weights=(0.0, 0.2), extend=5)
    # 0.8 ties 0.4 (ties go to the smaller weight), so the search stops after two doublings
    assert (free.bm25_weight, free.on_edge, free.extensions) == (0.4, False, 2)
    assert free.mrr == pytest.approx({(0.0, 0.0): 200 / 3, (0.0, 0.2): 250 / 3, (0.0, 0.4): 100.0, (0.0, 0.8): 100.0})
    with pytest.raises(ValueError, match="extend"):
        choose_rerank_weight(candidates, relevant, extend=-1)


def test_bm25_scores_of_given_passages_match_search(tiny_beir):
    ds = read_beir(tiny_beir)
    bm25 = BM25Index.build(ds.corpus)
    questions = ["waggle dance of honeybees", "Fresnel lens lighthouse", "zzzqqq"]
    found = bm25.search(questions, len(ds.corpus))
    given = bm25.score_passages(questions, found.ids)
    for row, scores in zip(given, found.scores):
        assert row == pytest.approx(scores.tolist())
    assert given[2] == [0.0] * len(ds.corpus)  # no term of the question occurs anywhere
    reordered = bm25.score_passages(questions[:1], [list(reversed(found.ids[0][:3]))])
    assert reordered[0] == pytest.approx(list(reversed(found.scores[0][:3].tolist())))
    with pytest.raises(KeyError, match="not in the BM25 index"):
        bm25.score_passages(questions[:1], [["no_such_passage"]])
    with pytest.raises(ValueError, match="2 questions for 1"):
        bm25.score_passages(questions[:2], [["bees_0"]])


def test_rerank_weight_is_chosen_by_mrr_and_ties_go_to_the_smaller_weight():
    from engine.fusion import RerankCandidates, choose_rerank_weight

    candidates = {
        # the cross-encoder puts the relevant "b" second; its first-stage lead of 0.2 needs w > 2.5
        "q1": RerankCandidates(("a", "b"), (0.5, 0.7), (1.0, 0.5)),
        # relevant "c" first by the cross-encoder; w > 6 lets "d" (first stage 0.9 vs 0.4) overtake it
        "q2": RerankCandidates(("c", "d"), (0.4, 0.9), (3.0, 0.0)),
        "q3": RerankCandidates(("e",), (0.1,), (0.0,)),  # no relevant passage: not counted
    }
    relevant = {"q1": {"b": 1}, "q2": {"c": 1}, "q3": {"e": 0}}
    choice = choose_rerank_weight(candidates, relevant, weights=(0.0, 5.0, 20.0, 2.0))
    assert choice.questions == 2 and choice.cutoff == 10
    assert choice.mrr == {(0.0, 0.0): 75.0, (2.0, 0.0): 75.0, (5.0, 0.0): 100.0, (20.0, 0.0): 75.0}
    assert (choice.weight, choice.bm25_weight) == (5.0, 0.0)
    assert choose_rerank_weight(candidates, relevant, weights=(0.0, 2.0)).weight == 0.0  # tie: the smaller
    with pytest.raises(ValueError, match="no question with a relevant passage"):
        choose_rerank_weight(candidates, {"q3": {"e": 0}})


def test_rerank_weight_orders_the_head_by_logit_plus_weighted_score(retriever, tiny_model_dir):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    retriever.reranker = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    try:
        plain = retriever.search("honeybee colony queen", k=6, rerank_depth=4)
        retriever.rerank_weight = 1e6  # the first-stage score dominates: the head keeps its dense order
        mixed = retriever.search("honeybee colony queen", k=6, rerank_depth=4)
    finally:
        retriever.reranker, retriever.rerank_weight = None, 0.0
    assert [h.first_stage_rank for h in mixed] == list(range(1, 7))
    assert [h.rerank_score for h in plain[:4]] == [h.ce_logit for h in plain[:4]]
    for h in mixed[:4]:
        assert h.rerank_score == pytest.approx(h.ce_logit + 1e6 * h.score)
    assert {h.passage.id: h.ce_logit for h in plain[:4]} == pytest.approx({h.passage.id: h.ce_logit for h in mixed[:4]})


def test_reranked_hits_carry_both_scores_and_a_bm25_share_orders_them(retriever, tiny_model_dir):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    question = "honeybee colony queen"
    found = retriever.bm25.search([question], 100)
    bm25_all = dict(zip(found.ids[0], found.scores[0].tolist()))
    q = retriever.dense.encode_queries([question])[0]

    def inner_product(hit) -> float:
        return float(retriever.dense.encode_passages([hit.passage])[0] @ q)

    retriever.reranker = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    try:
        dense_hits = retriever.search(question, k=6, rerank_depth=4)  # dense first stage: BM25 filled in
        bm25_hits = retriever.search(question, k=3, mode="bm25", rerank_depth=3)  # no dense share: none computed
        retriever.rerank_weight = 1e6  # a dense share: the BM25 head gets inner products, which order it
        by_dense = retriever.search(question, k=3, mode="bm25", rerank_depth=3)
        retriever.rerank_weight, retriever.rerank_bm25_weight = 0.0, 1e6  # BM25 dominates the re-ranked head
        by_bm25 = retriever.search(question, k=6, rerank_depth=4)
    finally:
        retriever.reranker, retriever.rerank_weight, retriever.rerank_bm25_weight = None, 0.0, 0.0
    for h in dense_hits[:4]:
        assert h.bm25_score == pytest.approx(bm25_all[h.passage.id], abs=1e-5)
        assert h.bm25_rank is None  # not retrieved by BM25: a score, no rank
    assert all(h.bm25_score is None for h in dense_hits[4:])
    assert all(h.dense_score is None for h in bm25_hits)
    for h in by_dense:
        assert h.dense_score == pytest.approx(inner_product(h), abs=1e-5) and h.dense_rank is None
    assert [h.dense_score for h in by_dense] == sorted((h.dense_score for h in by_dense), reverse=True)
    retriever.dense.encode_passages = None  # the Flat index holds the vectors: nothing is encoded
    try:
        filled = retriever.with_scores(question, bm25_hits)  # what the dev choice uses
    finally:
        del retriever.dense.encode_passages  # the method again
    assert [h.dense_score for h in filled] == pytest.approx([inner_product(h) for h in bm25_hits], abs=1e-5)
    assert [h.rank for h in filled] == [h.rank for h in bm25_hits]
    retriever.dense.encode_queries = None  # a caller's vector: the question is not encoded again
    try:
        given = retriever.with_scores(question, bm25_hits, query_vector=q)
    finally:
        del retriever.dense.encode_queries
    assert [h.dense_score for h in given] == [h.dense_score for h in filled]
    head = by_bm25[:4]
    assert [h.bm25_score for h in head] == sorted((h.bm25_score for h in head), reverse=True)
    for h in head:
        assert h.rerank_score == pytest.approx(h.ce_logit + 1e6 * h.bm25_score)


def test_a_share_without_its_model_is_refused(tiny_beir, tiny_model_dir, tmp_path):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    ds = read_beir(tiny_beir)
    ce = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    dense_only = build_retriever(
        ds.corpus, model=tiny_model_dir, bm25=False, cache_root=str(tmp_path), show_progress=False
    )
    dense_only.reranker, dense_only.rerank_bm25_weight = ce, 0.5
    with pytest.raises(ValueError, match="needs a BM25 index"):
        dense_only.search("bees", k=3, rerank_depth=3)
    bm25_only = build_retriever(ds.corpus, model=None, show_progress=False)
    bm25_only.reranker, bm25_only.rerank_weight = ce, 5.0
    with pytest.raises(ValueError, match="needs a dual-encoder"):
        bm25_only.search("bees", k=3, mode="bm25", rerank_depth=3)


def test_hybrid_reranking_with_a_dense_share_encodes_each_question_once(retriever, tiny_model_dir):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    questions = ["sailors smoke comb", "drones flash light"]  # words from passages on other subjects
    encode = retriever.dense.encode_queries
    batches = []

    def counted(texts, *args, **kwargs):
        batches.append(list(texts))
        return encode(texts, *args, **kwargs)

    fusion = retriever.fusion
    retriever.reranker = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    retriever.rerank_weight = 1.0  # a dense share: BM25-only passages in the head need inner products
    retriever.fusion = replace(fusion, depth=1)  # shallow lists: the fused head holds BM25-only passages
    retriever.dense.encode_queries = counted
    try:
        hits = retriever.search_batch(questions, k=2, mode="hybrid", rerank_depth=2)
        # a BM25 head with a dense share: every passage needs an inner product, from one batch too
        bm25 = retriever.search_batch(questions, k=2, mode="bm25", rerank_depth=2)
    finally:
        del retriever.dense.encode_queries
        retriever.reranker, retriever.rerank_weight, retriever.fusion = None, 0.0, fusion
    assert any(h.dense_rank is None for hs in hits for h in hs)  # the dense model did not return them
    assert batches == [questions, questions]  # one batch per search, reused by re-ranking
    q = encode(questions)
    for hs, vector in [*zip(hits, q), *zip(bm25, q)]:
        for h in hs:
            stored = retriever.index.stored_vectors([h.passage.id])[0]
            assert h.dense_score == pytest.approx(float(stored @ vector), abs=1e-5)


def test_given_query_vectors_are_used_and_a_wrong_count_is_refused(retriever, tiny_model_dir):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    questions = ["sailors smoke comb", "drones flash light"]
    vectors = retriever.dense.encode_queries(questions)
    expected = retriever.search_batch(questions, k=3, mode="dense")
    retriever.reranker = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    retriever.rerank_weight = 1.0  # a BM25 head with a dense share: the given vectors fill it in
    retriever.dense.encode_queries = None  # nothing may be encoded
    try:
        dense = retriever.search_batch(questions, k=3, mode="dense", query_vectors=vectors)
        bm25 = retriever.search_batch(questions, k=2, mode="bm25", rerank_depth=2, query_vectors=vectors)
        with pytest.raises(ValueError, match="1 query vectors for 2 questions"):
            retriever.search_batch(questions, k=3, mode="dense", query_vectors=vectors[:1])
    finally:
        del retriever.dense.encode_queries
        retriever.reranker, retriever.rerank_weight = None, 0.0
    assert [[h.passage.id for h in hs] for hs in dense] == [[h.passage.id for h in hs] for hs in expected]
    for hs, vector in zip(bm25, vectors):
        for h in hs:
            stored = retriever.index.stored_vectors([h.passage.id])[0]
            assert h.dense_score == pytest.approx(float(stored @ vector), abs=1e-5)
