"""Which form of the re-ranking mix re-ranks best? Compared on saved heads, chosen on dev.

The engine orders a re-ranked head by `logit + w x dense + v x BM25` with raw scores. A BM25 score
grows with the question's length and the rarity of its words, so one v weighs BM25 more for some
questions than for others. This compares, on the heads that `evaluate --rerank-features` saved (no
model is loaded; several files: their mean logit), three forms of the same linear mix:
- `raw`: the engine's, on `engine.fusion`'s grids (extended as `--rerank-grid-extend 3` does);
- `bm25/max`: the BM25 score divided by the head's largest BM25 score;
- `min-max`: the dense and the BM25 score each min-max scaled within the head.
Each form chooses its (w, v) on the dev heads by MRR@10 (`engine.fusion.choose_rerank_weight`); the
form with the best dev MRR@10 is the one to use. Test is scored for every form, with paired
differences against `raw`, so a form that dev prefers but test does not is visible. A last row,
never a choice, is an oracle: the raw form's shares chosen on the evaluated split itself, the most
any choice of shares can give these logits. The row before it is not a form but another way to choose
the raw form's shares on dev: fitted by the listwise likelihood (`engine.fusion.fit_rerank_weights`,
`evaluate --rerank-fit listwise`) instead of the grid's best MRR@10; its dev MRR@10 is below the grid's
by construction, so the form chosen by dev MRR@10 is only ever a grid row.

    python benchmarks/rerank_fusion_forms.py --data ../shared/data/squad-v1.1-dev \
        --features base.jsonl [more.jsonl ...] [--dev dev] [--split test] [--output forms.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.fusion import (  # noqa: E402
    RERANK_BM25_WEIGHTS,
    RERANK_WEIGHTS,
    RerankCandidates,
    choose_rerank_weight,
    fit_rerank_weights,
)
from engine.metrics import evaluate_rankings, paired_mrr10  # noqa: E402
from engine.readers import load_any  # noqa: E402
from engine.rerank_features import SavedHead, heads_for, ranking, read_features  # noqa: E402

SCALED_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)  # x a score scaled to [0, 1] within the head


def _minmax(values: tuple[float, ...]) -> tuple[float, ...]:
    lo, hi = min(values), max(values)
    return tuple((v - lo) / (hi - lo) if hi > lo else 0.0 for v in values)


def bm25_over_max(c: RerankCandidates) -> RerankCandidates:
    top = max(c.bm25)
    return replace(c, bm25=tuple(b / top if top > 0 else 0.0 for b in c.bm25))


def min_max(c: RerankCandidates) -> RerankCandidates:
    return replace(c, dense=_minmax(c.dense), bm25=_minmax(c.bm25))


FORMS = {
    "raw": (lambda c: c, RERANK_WEIGHTS, RERANK_BM25_WEIGHTS),
    "bm25/max": (bm25_over_max, RERANK_WEIGHTS, SCALED_WEIGHTS),
    "min-max": (min_max, SCALED_WEIGHTS, SCALED_WEIGHTS),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="the data the features were made on")
    p.add_argument("--features", nargs="+", required=True, help="`evaluate --rerank-features` files")
    p.add_argument("--dev", default="dev")
    p.add_argument("--split", default="test")
    p.add_argument("--extend", type=int, default=3, help="grid extensions, as evaluate --rerank-grid-extend")
    p.add_argument(
        "--resample",
        type=int,
        default=0,
        metavar="N",
        help="also choose the raw form's shares on N random halves of dev, by the grid and by the listwise fit, "
        "and score each choice on the evaluated split (how much each way depends on the dev sample)",
    )
    p.add_argument("--output", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)

    features = [read_features(f) for f in args.features]
    ds = load_any(args.data)
    by_split = heads_for(features, ds.corpus.fingerprint(), [args.dev, args.split])
    dev_heads, heads = by_split[args.dev], by_split[args.split]
    if any(not (h.candidates.bm25 and h.candidates.dense) for h in [*dev_heads.values(), *heads.values()]):
        raise SystemExit("every saved head needs dense and BM25 scores (evaluate --retriever hybrid)")
    dev_qrels = ds.split(args.dev)[1]
    questions, qrels = ds.split(args.split)
    answers = {q.id: q.answers for q in questions if q.answers}

    rows, results = [], {}
    for name, (form, weights, bm25_weights) in FORMS.items():
        dev = {qid: form(h.candidates) for qid, h in dev_heads.items()}
        choice = choose_rerank_weight(dev, dev_qrels, weights, bm25_weights, extend=args.extend)
        test = {q.id: SavedHead(form(heads[q.id].candidates), heads[q.id].tail) for q in questions}
        rankings = {qid: ranking(h, choice.weight, choice.bm25_weight) for qid, h in test.items()}
        results[name] = evaluate_rankings(rankings, qrels, ds.corpus, answers or None)
        m = results[name].metrics
        rows.append(
            {
                "form": name,
                "w": choice.weight,
                "v": choice.bm25_weight,
                "on_grid_edge": choice.on_edge,
                "dev MRR@10": round(choice.mrr[(choice.weight, choice.bm25_weight)], 2),
                "test MRR@10": round(m["MRR@10"], 2),
                "test R@1": round(m["R@1"], 2),
            }
        )
    for row in rows:
        row["vs raw (paired, test)"] = (
            paired_mrr10(results["raw"], results[row["form"]]) if row["form"] != "raw" else None
        )
    chosen = max(rows, key=lambda r: r["dev MRR@10"])["form"]
    # another way to choose, not another form: the raw form's shares fitted by the listwise likelihood
    try:
        fit = fit_rerank_weights({qid: h.candidates for qid, h in dev_heads.items()}, dev_qrels, dense=True, bm25=True)
    except ValueError as e:  # a cross-encoder that does not help on dev: no fitted row
        print(f"listwise fit: {e}", file=sys.stderr)
        fit = None
    if fit is not None:
        rankings = {q.id: ranking(heads[q.id], fit.weight, fit.bm25_weight) for q in questions}
        results["listwise"] = evaluate_rankings(rankings, qrels, ds.corpus, answers or None)
        m = results["listwise"].metrics
        rows.append(
            {
                "form": "raw, shares fitted on dev (listwise likelihood, not by MRR@10)",
                "w": fit.weight,
                "v": fit.bm25_weight,
                "on_grid_edge": False,
                "dev MRR@10": round(fit.mrr[(fit.weight, fit.bm25_weight)], 2),
                "test MRR@10": round(m["MRR@10"], 2),
                "test R@1": round(m["R@1"], 2),
                "vs raw (paired, test)": paired_mrr10(results["raw"], results["listwise"]),
            }
        )
    # the oracle: shares chosen on the evaluated split (an upper bound, not a result)
    oracle = choose_rerank_weight(
        {q.id: heads[q.id].candidates for q in questions}, qrels, RERANK_WEIGHTS, RERANK_BM25_WEIGHTS, args.extend
    )
    best = oracle.mrr[(oracle.weight, oracle.bm25_weight)]
    rows.append(
        {
            "form": "raw, shares chosen on the evaluated split (oracle, not a result)",
            "w": oracle.weight,
            "v": oracle.bm25_weight,
            "on_grid_edge": oracle.on_edge,
            "dev MRR@10": None,
            "test MRR@10": round(best, 2),
            "test R@1": None,
            "vs raw (paired, test)": None,
        }
    )
    print(
        f"features: {', '.join(args.features)}; {len(questions)} {args.split} questions; chosen on {args.dev}: {chosen}"
    )
    print("| form | w | v | dev MRR@10 | test MRR@10 | test R@1 | vs raw (paired, test) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        d = r["vs raw (paired, test)"]
        vs = f"{d['MRR@10']:+.2f} ± {d['ci95']:.2f} ({d['verdict']})" if d else "—"
        mark = " (dev's choice)" if r["form"] == chosen else ""
        dev = "—" if r["dev MRR@10"] is None else f"{r['dev MRR@10']:.2f}"
        r1 = "—" if r["test R@1"] is None else f"{r['test R@1']:.2f}"
        print(f"| {r['form']}{mark} | {r['w']:g} | {r['v']:g} | {dev} | {r['test MRR@10']:.2f} | {r1} | {vs} |")
    resampled = resample(args, dev_heads, dev_qrels, heads, questions, qrels) if args.resample else None
    if args.output:
        out = {"features": args.features, "chosen": chosen, "rows": rows, "resampled": resampled}
        Path(args.output).write_text(json.dumps(out, indent=2))
    return 0


def resample(args, dev_heads, dev_qrels, heads, questions, qrels, seed: int = 0) -> dict:
    """The raw form's shares chosen on `args.resample` random halves of dev by the grid and by the
    listwise fit; each choice's MRR@10 on the evaluated split. Printed as a table; returned."""
    import random
    import statistics

    rng = random.Random(seed)
    ids = sorted(dev_heads)
    test_heads = {q.id: heads[q.id] for q in questions}

    def test_mrr(w: float, v: float) -> float:
        rankings = {qid: ranking(h, w, v) for qid, h in test_heads.items()}
        return evaluate_rankings(rankings, qrels).metrics["MRR@10"]

    runs = []
    for _ in range(args.resample):
        half = rng.sample(ids, len(ids) // 2)
        cand = {qid: dev_heads[qid].candidates for qid in half}
        sub_qrels = {qid: dev_qrels[qid] for qid in half if qid in dev_qrels}
        grid = choose_rerank_weight(cand, sub_qrels, RERANK_WEIGHTS, RERANK_BM25_WEIGHTS, extend=args.extend)
        fit = fit_rerank_weights(cand, sub_qrels, dense=True, bm25=True)
        runs.append(
            {
                "grid": [grid.weight, grid.bm25_weight, test_mrr(grid.weight, grid.bm25_weight)],
                "listwise": [fit.weight, fit.bm25_weight, test_mrr(fit.weight, fit.bm25_weight)],
            }
        )
    diffs = [r["listwise"][2] - r["grid"][2] for r in runs]
    summary = {"halves": args.resample, "dev questions each": len(ids) // 2, "runs": runs}
    print(f"\nshares chosen on {args.resample} random halves of {args.dev} ({len(ids) // 2} questions each):")
    print(f"| way | {args.split} MRR@10: mean | sd | min | max | distinct (w, v) |")
    print("|---|---|---|---|---|---|")
    for way in ("grid", "listwise"):
        m = [r[way][2] for r in runs]
        sd = statistics.stdev(m) if len(m) > 1 else 0.0
        distinct = len({tuple(round(x, 1) for x in r[way][:2]) for r in runs})
        summary[way] = {"mean": statistics.fmean(m), "sd": sd, "min": min(m), "max": max(m)}
        print(f"| {way} | {statistics.fmean(m):.2f} | {sd:.2f} | {min(m):.2f} | {max(m):.2f} | {distinct} |")
    wins = sum(d > 0 for d in diffs)
    summary["listwise minus grid"] = {"mean": statistics.fmean(diffs), "listwise better": wins}
    print(f"listwise minus grid: mean {statistics.fmean(diffs):+.2f}, listwise better on {wins} of {len(diffs)} halves")
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
