"""The listwise fit of the re-ranking shares (`engine.fusion.fit_rerank_weights`): it finds the shares
that generated the labels, drops a share that would be negative, refuses a cross-encoder that does not
help, and `evaluate --rerank-fit listwise` and `rerank-mix --rerank-fit listwise` agree."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from engine.cli import main
from engine.fusion import RerankCandidates, choose_or_fit, fit_rerank_weights


def _heads(n: int, width: int, logit: float, dense: float, bm25: float, seed: int = 0):
    """n heads of `width` candidates with random features; in each, one relevant passage drawn from the
    softmax of `logit * ce + dense * dense_score + bm25 * bm25_score` (the model the fit assumes)."""
    rng = np.random.default_rng(seed)
    candidates, qrels = {}, {}
    for q in range(n):
        ce = rng.normal(0.0, 2.0, width)
        ds = rng.uniform(0.2, 0.8, width)
        bm = rng.uniform(5.0, 30.0, width)
        s = logit * ce + dense * ds + bm25 * bm
        p = np.exp(s - s.max())
        gold = int(rng.choice(width, p=p / p.sum()))
        ids = tuple(f"q{q}p{i}" for i in range(width))
        candidates[f"q{q}"] = RerankCandidates(ids, tuple(ds), tuple(ce), tuple(bm))
        qrels[f"q{q}"] = {ids[gold]: 1}
    return candidates, qrels


def test_the_fit_recovers_the_shares_that_generated_the_labels():
    candidates, qrels = _heads(3000, 10, logit=1.0, dense=8.0, bm25=0.3)
    choice = fit_rerank_weights(candidates, qrels, dense=True, bm25=True)
    assert choice.method == "listwise" and choice.questions == 3000 and not choice.on_edge
    assert choice.weight == pytest.approx(8.0, rel=0.15)
    assert choice.bm25_weight == pytest.approx(0.3, rel=0.15)
    # the one point tried is the fitted one, with its MRR@10 on these heads
    assert list(choice.mrr) == [(choice.weight, choice.bm25_weight)] and 0 < choice.mrr[list(choice.mrr)[0]] <= 100


def test_a_share_not_asked_for_stays_zero():
    candidates, qrels = _heads(1000, 8, logit=1.0, dense=8.0, bm25=0.3)
    assert fit_rerank_weights(candidates, qrels, dense=True, bm25=False).bm25_weight == 0.0
    only_bm25 = fit_rerank_weights(candidates, qrels, dense=False, bm25=True)
    assert only_bm25.weight == 0.0 and only_bm25.bm25_weight > 0


def test_a_share_that_would_be_negative_is_dropped_and_the_rest_refitted():
    candidates, qrels = _heads(2000, 8, logit=1.0, dense=6.0, bm25=-0.4)
    choice = fit_rerank_weights(candidates, qrels, dense=True, bm25=True)
    assert choice.bm25_weight == 0.0
    alone = fit_rerank_weights(candidates, qrels, dense=True, bm25=False)
    assert choice.weight == alone.weight > 0


def test_a_cross_encoder_that_does_not_help_is_refused():
    candidates, qrels = _heads(1000, 8, logit=-1.0, dense=6.0, bm25=0.0)
    with pytest.raises(ValueError, match="no positive weight"):
        fit_rerank_weights(candidates, qrels, dense=True)


def test_heads_without_a_relevant_passage_cannot_be_fitted():
    c = RerankCandidates(("a", "b"), (0.1, 0.2), (1.0, 0.0), (3.0, 2.0))
    with pytest.raises(ValueError, match="no head holds a relevant passage"):
        fit_rerank_weights({"q": c}, {"q": {"elsewhere": 1}}, dense=True)
    with pytest.raises(ValueError, match="needs a bm25 score"):
        fit_rerank_weights({"q": RerankCandidates(("a",), (0.1,), (1.0,))}, {"q": {"a": 1}}, bm25=True)


def test_choose_or_fit_takes_a_known_method_only():
    candidates, qrels = _heads(200, 6, logit=1.0, dense=4.0, bm25=0.0)
    grid = choose_or_fit(candidates, qrels, "grid", dense=True, bm25=False)
    assert grid.method == "grid" and len(grid.mrr) > 1
    assert choose_or_fit(candidates, qrels, "listwise", dense=True, bm25=False).method == "listwise"
    with pytest.raises(ValueError, match="only applies to the grid"):
        choose_or_fit(candidates, qrels, "listwise", dense=True, bm25=False, extend=2)
    with pytest.raises(ValueError, match="unknown way"):
        choose_or_fit(candidates, qrels, "best", dense=True, bm25=False)


def test_on_noisy_dev_heads_the_fit_transfers_better_than_the_grid():
    """Both choose on 300 'dev' heads; on 4,000 fresh heads of the same model the fit's shares rank
    better than the grid's (the grid maximises a noisy MRR@10; the fit, a smooth likelihood)."""
    from engine.fusion import choose_rerank_weight, rerank_order
    from engine.metrics import evaluate_rankings

    dev, dev_qrels = _heads(300, 20, logit=1.0, dense=12.0, bm25=0.15, seed=1)
    test, test_qrels = _heads(4000, 20, logit=1.0, dense=12.0, bm25=0.15, seed=2)
    fit = fit_rerank_weights(dev, dev_qrels, dense=True, bm25=True)
    grid = choose_rerank_weight(dev, dev_qrels, bm25_weights=(0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))

    def mrr(w, v):
        rankings = {q: [c.ids[i] for i in rerank_order(c.ce_logits, c.dense, w, c.bm25, v)] for q, c in test.items()}
        return evaluate_rankings(rankings, test_qrels).metrics["MRR@10"]

    assert mrr(fit.weight, fit.bm25_weight) > mrr(grid.weight, grid.bm25_weight)
    assert mrr(fit.weight, fit.bm25_weight) > mrr(0.0, 0.0) + 1.0  # the shares matter on these heads


def test_evaluate_and_rerank_mix_fit_the_same_shares(tiny_beir, tmp_path, tiny_model_dir, capsys):
    """evaluate --rerank-fit listwise saves its heads; rerank-mix --rerank-fit listwise on them fits the same
    shares and gives the same metrics. Without a dev split, or with a grid extension, it is refused."""
    import torch

    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    random.seed(0)
    torch.manual_seed(3)
    CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir)).save(tmp_path / "ce")
    argv = ["evaluate", "--data", str(tiny_beir), "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    argv += ["--retriever", "hybrid", "--split", "test", "--rerank-depth", "4", "--k", "6", "--reranker"]
    argv += [str(tmp_path / "ce"), "--rerank-bm25", "--rerank-fit", "listwise"]
    assert main(argv) == 2 and "add --rerank-weight-from-dev" in capsys.readouterr().err
    argv += ["--rerank-weight-from-dev", "train"]
    assert main([*argv, "--rerank-grid-extend", "2"]) == 2
    assert "does not apply to --rerank-fit listwise" in capsys.readouterr().err
    code = main([*argv, "--output", str(tmp_path / "e.json"), "--rerank-features", str(tmp_path / "f.jsonl")])
    mix = ["rerank-mix", "--data", str(tiny_beir), "--features", str(tmp_path / "f.jsonl"), "--dev", "train"]
    mix += ["--rerank-bm25", "--rerank-fit", "listwise"]
    assert code == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["config"]["rerank_weight_choice"]["method"] == "listwise"
    assert main([*mix, "--output", str(tmp_path / "m.json")]) == 0
    mixed = json.loads((tmp_path / "m.json").read_text())
    for key in ("rerank_weight", "rerank_bm25_weight"):
        assert mixed["config"][key] == evaluated["config"][key]
    assert {k: mixed[k] for k in ("MRR@10", "R@1", "R@5")} == {k: evaluated[k] for k in ("MRR@10", "R@1", "R@5")}
    assert main([*mix[:-2], "--weights", "1", "0", "--rerank-fit", "listwise"]) == 2
    assert "--weights fixes the shares" in capsys.readouterr().err
    assert main([*mix, "--rerank-grid-extend", "1"]) == 2
    assert "does not apply to --rerank-fit listwise" in capsys.readouterr().err


def test_every_command_offers_the_engines_fit_methods():
    """evaluate, rerank-mix and ablation take their `--rerank-fit` choices from one place, and that place
    lists exactly the methods engine.fusion knows."""
    from engine.cli import RERANK_FIT_CHOICES, build_parser
    from engine.fusion import RERANK_FIT_METHODS

    assert RERANK_FIT_CHOICES == RERANK_FIT_METHODS
    parser = build_parser()
    for argv in (["evaluate", "--data", "d"], ["rerank-mix", "--data", "d", "--features", "f"]):
        for method in RERANK_FIT_METHODS:
            assert parser.parse_args([*argv, "--rerank-fit", method]).rerank_fit == method
    ablation = ["ablation", "--data", "d", "--output", "o"]
    assert parser.parse_args(ablation).rerank_fit == "grid"
    with pytest.raises(SystemExit):
        parser.parse_args([*ablation, "--rerank-fit", "oracle"])
