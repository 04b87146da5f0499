"""`python -m engine rerank-mix`: re-order saved re-ranking heads without scoring them again.

Reads one or more files written by `evaluate --rerank-features` (engine.rerank_features) over the
same first stage. With several files the cross-encoders' logits are averaged per passage (an
ensemble of cross-encoders). The dense and BM25 shares are chosen on the dev split's saved heads
as `evaluate --rerank-weight-from-dev` chooses them, then the evaluated split is ranked and scored
with the same metrics, per-question file and paired comparison as `evaluate`. One file and the
same options give back that evaluation's numbers (a test checks it). `--weights W V` fixes the
shares instead (`0 0`: the cross-encoder's order alone).

Not here: anything that needs the models. A head that was not saved cannot be re-ranked.
"""

from __future__ import annotations

import argparse
import json
import logging
import math

log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    from engine.cli import rerank_fit_arg

    p = subparsers.add_parser(
        "rerank-mix",
        help="re-rank from saved `evaluate --rerank-features` files: other weights, or several cross-encoders' "
        "mean logits, without scoring again",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--data", required=True, help="the data the features were made on (for qrels and answers)")
    p.add_argument(
        "--features", nargs="+", required=True, metavar="FILE", help="one or more `evaluate --rerank-features` files"
    )
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--dev", default="dev", help="split whose saved heads choose the weights (default: dev)")
    p.add_argument("--rerank-bm25", action="store_true", help="also choose the BM25 share (needs saved BM25 scores)")
    p.add_argument(
        "--rerank-grid-extend",
        type=int,
        default=0,
        metavar="N",
        help="double a share's largest weight while the dev choice is on it, at most N times (as evaluate's)",
    )
    rerank_fit_arg(p, "the --dev split's saved heads")
    p.add_argument(
        "--weights",
        nargs=2,
        type=float,
        metavar=("W", "V"),
        default=None,
        help="fixed dense and BM25 shares instead of a dev choice (0 0 = the cross-encoder alone)",
    )
    p.add_argument("--output", default=None, help="write the metrics JSON here")
    p.add_argument("--per-question", metavar="FILE", default=None, help="also write each question's ranks here")
    p.add_argument(
        "--paired-with", metavar="FILE", default=None, help="an earlier `--per-question` file: paired MRR@10 difference"
    )
    p.set_defaults(func=cmd_rerank_mix)


def cmd_rerank_mix(args: argparse.Namespace) -> int:
    from engine.cli import (
        _load,
        check_rerank_fit,
        choice_config,
        metrics_output,
        read_per_question,
        score_rankings,
        write_json,
        write_per_question,
    )
    from engine.fusion import choose_or_fit
    from engine.metrics import paired_mrr10
    from engine.rerank_features import heads_for, ranking, read_features

    if args.rerank_grid_extend < 0:
        raise ValueError(f"--rerank-grid-extend must be >= 0, got {args.rerank_grid_extend}")
    check_rerank_fit(args.rerank_fit, args.rerank_grid_extend)
    if args.weights is not None:
        if not all(math.isfinite(w) and w >= 0 for w in args.weights):
            raise ValueError(f"--weights must be two numbers >= 0, got {args.weights}")
        if args.rerank_bm25 or args.rerank_grid_extend or args.rerank_fit != "grid":
            raise ValueError(
                "--weights fixes the shares: drop --rerank-bm25 / --rerank-grid-extend / --rerank-fit, which choose them"
            )
    elif args.dev == args.split:
        raise ValueError(f"--dev {args.dev}: choose the weights on another split than the one evaluated")
    features = [read_features(f) for f in args.features]  # a bad file fails before the data loads
    ds = _load(args.data)
    fingerprint = ds.corpus.fingerprint()
    questions, qrels = ds.split(args.split)
    baseline = read_per_question(args.paired_with, args.split, fingerprint, questions) if args.paired_with else None
    splits = [args.split] if args.weights is not None else [args.split, args.dev]
    by_split = heads_for(features, fingerprint, splits)
    heads = by_split[args.split]
    dev_heads = by_split[args.dev] if args.weights is None else {}
    missing = [q.id for q in questions if q.id not in heads]
    if missing:
        raise ValueError(f"{len(missing)} questions of split {args.split!r} have no saved head (e.g. {missing[0]!r})")
    shared = set(dev_heads) & set(heads)
    if shared:
        raise ValueError(f"--dev {args.dev}: {len(shared)} of its questions are in split {args.split!r}")
    every = [*dev_heads.values(), *heads.values()]
    if args.rerank_bm25 and any(not h.candidates.bm25 for h in every):
        raise ValueError("--rerank-bm25: a saved head has no BM25 scores (evaluate had no BM25 index loaded)")
    if args.weights is not None:
        choice = None
        weight, bm25_weight = args.weights
        if weight and any(not h.candidates.dense for h in every):
            raise ValueError("--weights: a dense share needs dense scores, and a saved head has none")
        if bm25_weight and any(not h.candidates.bm25 for h in every):
            raise ValueError("--weights: a BM25 share needs BM25 scores, and a saved head has none")
    else:
        choice = choose_or_fit(
            {qid: h.candidates for qid, h in dev_heads.items()},
            ds.split(args.dev)[1],
            args.rerank_fit,
            dense=all(h.candidates.dense for h in every),  # no dual-encoder: no dense share
            bm25=args.rerank_bm25,
            extend=args.rerank_grid_extend,
        )
        weight, bm25_weight = choice.weight, choice.bm25_weight
    rankings = {q.id: ranking(heads[q.id], weight, bm25_weight) for q in questions}
    result = score_rankings(rankings, questions, qrels, ds.corpus)
    first = features[0].config
    out = {
        **metrics_output(result),
        "config": {
            "data": str(args.data),
            "split": args.split,
            "features": list(args.features),
            "retriever": first.get("retriever"),
            "model": first.get("model"),
            # several cross-encoders: their mean logit re-ranks
            "reranker": " + ".join(str(f.config.get("reranker")) for f in features),
            "rerank_depth": first.get("rerank_depth"),
            "rerank_weight": weight,
            "rerank_bm25_weight": bm25_weight,
            "rerank_weight_choice": choice_config(choice, args.dev) if choice else None,
        },
    }
    if baseline is not None:
        out["paired_with"] = {"file": args.paired_with, "against": baseline[1]} | paired_mrr10(baseline[0], result)
    if args.per_question:
        write_per_question(args.per_question, args.split, fingerprint, out["config"], result)
    if args.output:
        write_json(args.output, out)
    print(json.dumps(out, indent=2))
    return 0
