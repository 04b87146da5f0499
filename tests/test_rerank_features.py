"""Saved re-ranking features: `evaluate --rerank-features` writes every re-ranked head, and the heads
re-ordered from the file rank exactly as the evaluation did; `rerank-mix` re-orders them (one or
several cross-encoders) without scoring; bad files get one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_benchmark

from engine.cli import main
from engine.fusion import RerankCandidates
from engine.rerank_features import FORMAT, SavedHead, average_logits, ranking, read_features, write_features


@pytest.fixture
def saved(tiny_beir, tmp_path, tiny_model_dir):
    """Two cross-encoders (two random heads) evaluated on the same hybrid first stage, features saved."""
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    common = ["evaluate", "--data", str(tiny_beir), "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    common += ["--retriever", "hybrid", "--split", "test", "--rerank-depth", "4", "--k", "6"]
    common += ["--rerank-weight-from-dev", "train", "--rerank-bm25"]
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)  # the classification head starts random: two seeds, two cross-encoders
        CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir)).save(tmp_path / name)
        argv = [*common, "--reranker", str(tmp_path / name), "--output", str(tmp_path / f"{name}.json")]
        argv += [
            "--rerank-features",
            str(tmp_path / f"{name}.jsonl"),
            "--per-question",
            str(tmp_path / f"{name}-pq.json"),
        ]
        assert main(argv) == 0
        out[name] = (tmp_path / f"{name}.jsonl", json.loads((tmp_path / f"{name}.json").read_text()))
    return out


def test_saved_heads_rank_as_the_evaluation_did(saved, tiny_beir):
    from engine.metrics import evaluate_rankings
    from engine.readers import load_any

    path, metrics = saved["a"]
    features = read_features(path)
    assert set(features.heads) == {"train", "test"}
    ds = load_any(str(tiny_beir))
    questions, qrels = ds.split("test")
    assert set(features.heads["test"]) == {q.id for q in questions}
    assert features.corpus_fingerprint == ds.corpus.fingerprint()
    w, v = metrics["config"]["rerank_weight"], metrics["config"]["rerank_bm25_weight"]
    rankings = {}
    for qid, head in features.heads["test"].items():
        c = head.candidates
        assert len(c.ids) == 4 and len(head.tail) == 2 and not set(c.ids) & set(head.tail)
        assert len(c.dense) == len(c.bm25) == len(c.ce_logits) == 4  # every score filled in, hybrid or not
        rankings[qid] = ranking(head, w, v)
    answers = {q.id: q.answers for q in questions if q.answers}
    again = evaluate_rankings(rankings, qrels, ds.corpus, answers or None)
    assert {k: round(x, 2) for k, x in again.metrics.items()} == {k: metrics[k] for k in again.metrics}
    # the dev heads are what the weight choice saw: re-choosing from them gives the same weights
    from engine.fusion import RERANK_BM25_WEIGHTS, RERANK_WEIGHTS, choose_rerank_weight

    dev = {qid: h.candidates for qid, h in features.heads["train"].items()}
    choice = choose_rerank_weight(dev, ds.split("train")[1], RERANK_WEIGHTS, RERANK_BM25_WEIGHTS)
    assert (choice.weight, choice.bm25_weight) == (w, v)


def test_rerank_mix_of_one_file_reproduces_the_evaluation(saved, tiny_beir, tmp_path):
    path, metrics = saved["a"]
    out = tmp_path / "mix.json"
    argv = ["rerank-mix", "--data", str(tiny_beir), "--features", str(path), "--split", "test", "--dev", "train"]
    assert main([*argv, "--rerank-bm25", "--output", str(out)]) == 0
    mixed = json.loads(out.read_text())
    assert {k: mixed[k] for k in ("MRR@10", "R@1", "R@5", "R@100", "Acc@5")} == {
        k: metrics[k] for k in ("MRR@10", "R@1", "R@5", "R@100", "Acc@5")
    }
    assert (mixed["config"]["rerank_weight"], mixed["config"]["rerank_bm25_weight"]) == (
        metrics["config"]["rerank_weight"],
        metrics["config"]["rerank_bm25_weight"],
    )


def test_rerank_mix_averages_the_logits_of_several_cross_encoders(saved, tiny_beir, tmp_path):
    a, b = read_features(saved["a"][0]), read_features(saved["b"][0])
    mean = average_logits([a, b], "test")
    for qid, head in mean.items():
        la, lb = a.heads["test"][qid].candidates.ce_logits, b.heads["test"][qid].candidates.ce_logits
        assert la != lb  # two different heads
        assert head.candidates.ce_logits == pytest.approx([(x + y) / 2 for x, y in zip(la, lb)])
        assert head.candidates.ids == a.heads["test"][qid].candidates.ids
    out = tmp_path / "ab.json"
    argv = ["rerank-mix", "--data", str(tiny_beir), "--features", str(saved["a"][0]), str(saved["b"][0])]
    argv += ["--split", "test", "--dev", "train", "--output", str(out), "--paired-with", str(tmp_path / "a-pq.json")]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["config"]["features"] == [str(saved["a"][0]), str(saved["b"][0])]
    assert result["paired_with"]["questions"] == 2


def _head(ids, logits, tail=()):
    n = len(ids)
    return SavedHead(RerankCandidates(tuple(ids), (0.5,) * n, tuple(logits), (1.0,) * n), tuple(tail))


def test_mixing_files_of_different_first_stages_is_refused(tmp_path):
    write_features(tmp_path / "a.jsonl", "fp", {}, [("test", "q1", _head(["p1", "p2"], [1.0, 2.0]))])
    write_features(tmp_path / "b.jsonl", "fp", {}, [("test", "q1", _head(["p2", "p1"], [1.0, 2.0]))])
    write_features(tmp_path / "c.jsonl", "other", {}, [("test", "q1", _head(["p1", "p2"], [1.0, 2.0]))])
    a, b, c = (read_features(tmp_path / f"{x}.jsonl") for x in "abc")
    with pytest.raises(ValueError, match="different heads"):
        average_logits([a, b], "test")
    with pytest.raises(ValueError, match="different corpora"):
        average_logits([a, c], "test")
    with pytest.raises(ValueError, match="holds no question of split 'dev'"):
        average_logits([a], "dev")
    assert ranking(_head(["p1", "p2", "p3"], [1.0, 3.0, 1.0], ["p4"]), 0.0, 0.0) == ["p2", "p1", "p3", "p4"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "format None"),
        ('{"format": "other"}\n', "format 'other'"),
        (f'{{"format": "{FORMAT}"}}\n{{"split": "test", "id": "q", "ids": []}}\n', "line 2"),
        (f'{{"format": "{FORMAT}"}}\nnot json\n', "line 2"),
        (
            f'{{"format": "{FORMAT}"}}\n{{"split": "t", "id": "q", "ids": ["p"], "dense": [1], "ce_logits": [NaN]}}\n',
            "finite",
        ),
        (
            f'{{"format": "{FORMAT}"}}\n{{"split": "t", "id": "q", "ids": ["p"], "dense": [1, 2], "ce_logits": [1]}}\n',
            "list of 1 numbers",
        ),
    ],
)
def test_a_malformed_features_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "f.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_features(path)


def test_rerank_mix_bad_input_exits_2_with_one_line(tiny_beir, tmp_path, capsys):
    evaluate = ["evaluate", "--data", str(tiny_beir), "--retriever", "bm25", "--rerank-features", "f.jsonl"]
    assert main(evaluate) == 2 and "needs --reranker and --rerank-depth" in capsys.readouterr().err
    assert main([*evaluate, "--reranker", "ce", "--rerank-depth", "20", "--k", "10"]) == 2
    assert "--k 10 must be at least --rerank-depth" in capsys.readouterr().err
    argv = ["rerank-mix", "--data", str(tiny_beir), "--features", str(tmp_path / "missing.jsonl")]
    assert main(argv) == 2 and "cannot read it" in capsys.readouterr().err
    write_features(tmp_path / "a.jsonl", "not this corpus", {}, [("test", "q1", _head(["p1"], [1.0]))])
    assert main([*argv[:-1], str(tmp_path / "a.jsonl")]) == 2
    assert "another corpus" in capsys.readouterr().err


def test_fusion_forms_benchmark_scores_every_form_and_raw_as_evaluate(saved, tiny_beir, tmp_path, capsys):
    forms = load_benchmark("rerank_fusion_forms")
    c = RerankCandidates(("p1", "p2", "p3"), (0.2, 0.6, 0.4), (1.0, 0.0, -1.0), (10.0, 5.0, 0.0))
    assert forms.bm25_over_max(c).bm25 == (1.0, 0.5, 0.0)
    assert forms.min_max(c).dense == pytest.approx((0.0, 1.0, 0.5)) and forms.min_max(c).bm25 == (1.0, 0.5, 0.0)
    path, metrics = saved["a"]
    out = tmp_path / "forms.json"
    argv = ["--data", str(tiny_beir), "--features", str(path), "--dev", "train", "--output", str(out)]
    assert forms.main([*argv, "--resample", "3"]) == 0
    written = json.loads(out.read_text())
    rows = {r["form"]: r for r in written["rows"]}
    halves = written["resampled"]
    assert halves["halves"] == len(halves["runs"]) == 3 and halves["dev questions each"] >= 1
    for way in ("grid", "listwise"):
        scores = [run[way][2] for run in halves["runs"]]
        assert halves[way]["min"] == min(scores) and halves[way]["max"] == max(scores)
    oracle = "raw, shares chosen on the evaluated split (oracle, not a result)"
    fitted = "raw, shares fitted on dev (listwise likelihood, not by MRR@10)"
    assert set(rows) == {"raw", "bm25/max", "min-max", fitted, oracle}
    assert rows[fitted]["dev MRR@10"] <= max(rows[f]["dev MRR@10"] for f in ("raw", "bm25/max", "min-max"))
    assert rows["raw"]["test MRR@10"] == metrics["MRR@10"]  # the engine's form, as evaluate chose it
    assert rows[oracle]["test MRR@10"] >= rows["raw"]["test MRR@10"]  # chosen on test: never below
    assert "dev's choice" in capsys.readouterr().out


def test_a_bm25_first_stage_saves_heads_without_dense_scores(tiny_beir, tmp_path, tiny_model_dir):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir)).save(tmp_path / "ce")
    argv = ["evaluate", "--data", str(tiny_beir), "--retriever", "bm25", "--reranker", str(tmp_path / "ce")]
    argv += ["--rerank-depth", "3", "--rerank-weight-from-dev", "train", "--rerank-bm25"]
    argv += ["--output", str(tmp_path / "e.json"), "--rerank-features", str(tmp_path / "f.jsonl")]
    assert main(argv) == 0
    features = read_features(tmp_path / "f.jsonl")
    heads = [h for split in features.heads.values() for h in split.values()]
    # BM25 returns only passages sharing a word with the question: some heads are shorter than 3
    assert heads and all(not h.candidates.dense and len(h.candidates.bm25) == len(h.candidates.ids) for h in heads)
    mix = ["rerank-mix", "--data", str(tiny_beir), "--features", str(tmp_path / "f.jsonl"), "--dev", "train"]
    assert main([*mix, "--rerank-bm25", "--output", str(tmp_path / "m.json")]) == 0
    evaluated, mixed = (json.loads((tmp_path / f).read_text()) for f in ("e.json", "m.json"))
    assert mixed["MRR@10"] == evaluated["MRR@10"] and mixed["config"]["rerank_weight"] == 0.0


def test_rerank_mix_with_fixed_weights_skips_the_dev_choice(saved, tiny_beir, tmp_path, capsys):
    from engine.metrics import evaluate_rankings
    from engine.readers import load_any

    path = saved["a"][0]
    out = tmp_path / "alone.json"
    argv = ["rerank-mix", "--data", str(tiny_beir), "--features", str(path), "--dev", "nope"]  # no dev needed
    assert main([*argv, "--weights", "0", "0", "--output", str(out)]) == 0
    alone = json.loads(out.read_text())
    assert alone["config"]["rerank_weight_choice"] is None and alone["config"]["rerank_weight"] == 0.0
    ds = load_any(str(tiny_beir))
    heads = read_features(path).heads["test"]
    expected = evaluate_rankings({qid: ranking(h, 0.0, 0.0) for qid, h in heads.items()}, ds.split("test")[1])
    assert alone["MRR@10"] == round(expected.metrics["MRR@10"], 2)
    capsys.readouterr()
    assert (
        main([*argv, "--weights", "0", "0", "--rerank-bm25"]) == 2 and "drop --rerank-bm25" in capsys.readouterr().err
    )
    assert main([*argv, "--weights", "-1", "0"]) == 2 and "two numbers >= 0" in capsys.readouterr().err


def test_saved_heads_get_their_missing_dense_scores_filled_in(tiny_beir, tmp_path, tiny_model_dir):
    """A hybrid head holds BM25 passages the dense side did not return, and a dense share of 0 never asks
    for their dense scores: `--rerank-features` fills them in (the questions encoded in one batch), each
    equal to the dense score the first stage gave the same passage."""
    from dataclasses import replace

    import numpy as np

    from engine.cli import _feature_rows
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
    from engine.readers import load_any
    from engine.retriever import build_retriever

    CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir)).save(tmp_path / "ce")
    ds = load_any(str(tiny_beir))
    retriever = build_retriever(
        ds.corpus, model=tiny_model_dir, reranker=str(tmp_path / "ce"), cache_root=str(tmp_path / "cache")
    )
    questions = ds.split("test")[0]
    hits = retriever.search_batch([q.text for q in questions], k=6, mode="hybrid", rerank_depth=4)
    # the tiny corpus fits in the dense side's depth: drop the dense scores of some passages, as a hybrid
    # head of a larger corpus has them missing
    stripped = [[replace(h, dense_score=None) if j % 2 else h for j, h in enumerate(hs)] for hs in hits]
    rows = _feature_rows(retriever, "test", questions, stripped)
    assert [r[1] for r in rows] == [q.id for q in questions] and len(rows) > 1
    for (_, _, saved), hs in zip(rows, hits):
        expected = {h.passage.id: h.dense_score for h in hs}
        c = saved.candidates
        assert len(c.dense) == len(c.ids) == 4
        np.testing.assert_allclose(c.dense, [expected[pid] for pid in c.ids], atol=1e-4)


def test_saved_logits_are_reused_and_only_new_pairs_scored(saved, tiny_beir, tmp_path, tiny_model_dir, capsys):
    """`evaluate --rerank-logits-from` on another first stage with the same cross-encoder gives what a full
    scoring gives, and scores only the pairs the saved heads lack; on the same first stage it scores none.
    Logits of another cross-encoder, or no cross-encoder at all, are refused."""
    import numpy as np

    a, _ = saved["a"]
    base = ["evaluate", "--data", str(tiny_beir), "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    base += ["--split", "test", "--k", "6", "--reranker", str(tmp_path / "a")]
    same = [*base, "--retriever", "hybrid", "--rerank-depth", "4", "--rerank-weight-from-dev", "train", "--rerank-bm25"]
    assert main([*same, "--rerank-logits-from", str(a), "--output", str(tmp_path / "same.json")]) == 0
    again = json.loads((tmp_path / "same.json").read_text())
    reuse = again["config"]["rerank_logits_from"]
    assert reuse["pairs_scored"] == 0 and reuse["pairs_reused"] > 0 and reuse["spot_check"]["max_abs_diff"] < 1e-3
    assert again["MRR@10"] == saved["a"][1]["MRR@10"]

    other = [*base, "--retriever", "dense", "--rerank-depth", "5", "--rerank-weight", "2", "--rerank-bm25-weight", "0"]
    outs = {}
    for name, extra in (("fresh", []), ("reused", ["--rerank-logits-from", str(a)])):
        argv = [*other, *extra, "--output", str(tmp_path / f"{name}.json")]
        assert main([*argv, "--rerank-features", str(tmp_path / f"{name}.jsonl")]) == 0
        outs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    reuse = outs["reused"]["config"]["rerank_logits_from"]
    assert reuse["pairs_reused"] > 0 and reuse["pairs_scored"] > 0  # a deeper head: some pairs are new
    assert {k: outs["reused"][k] for k in ("MRR@10", "R@1", "R@5")} == {
        k: outs["fresh"][k] for k in ("MRR@10", "R@1", "R@5")
    }
    fresh, reused = (read_features(tmp_path / f"{n}.jsonl").heads["test"] for n in ("fresh", "reused"))
    for qid, head in fresh.items():
        assert reused[qid].candidates.ids == head.candidates.ids
        np.testing.assert_allclose(reused[qid].candidates.ce_logits, head.candidates.ce_logits, atol=1e-4)

    capsys.readouterr()
    wrong = [arg if arg != str(tmp_path / "a") else str(tmp_path / "b") for arg in same]
    assert main([*wrong, "--rerank-logits-from", str(a)]) == 2
    assert "not this cross-encoder's" in capsys.readouterr().err
    assert main([*same, "--rerank-max-length", "64", "--rerank-logits-from", str(a)]) == 2
    assert "this cross-encoder reads 64" in capsys.readouterr().err
    plain = ["evaluate", "--data", str(tiny_beir), "--model", tiny_model_dir, "--rerank-logits-from", str(a)]
    assert main(plain) == 2 and "needs --reranker" in capsys.readouterr().err
