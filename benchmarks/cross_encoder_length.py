"""Step 2 again at another cross-encoder max length (or with another loss or number of epochs), on
an existing run's M_D0, and what it changes.

Copies RUN's step 1 into OUTPUT, trains step 2 with the run's preset but `cross.max_length=N`
(and `--loss` / `--epochs`, CrossTrainConfig.loss / epochs, `--top-negatives` /
`--random-negatives` / `--inverse-cloze`, CrossSamplingConfig, and `--inverse-cloze-scope`, when
given), then reports, next to RUN's own cross-encoder:
- step 2's time and held-out metrics (AUC, accuracy);
- the dev-only threshold check of engine.ablation.threshold_sweep (pseudo-positive precision per
  threshold, share of answer-bearing passages kept / dropped per negative threshold);
- MRR@10 of RUN's final dual-encoder top-20 re-ranked by each cross-encoder, on a seeded sample of
  test questions, and the paired difference new minus RUN's with its 95% interval (`new_vs_run`);
- with `--rerank-shares`, for both cross-encoders on the same questions, the ablation's re-ranking
  rows (the cross-encoder alone, with a dense share, with dense and BM25 shares, and the latter on
  the hybrid head), the shares chosen on every dev question; every logit scored is written to
  OUTPUT/rerank_logits.json;
- with `--rerank-ensemble` too, the same rows for the mean of the two cross-encoders' logits.

    python benchmarks/cross_encoder_length.py --data ../shared/data/squad-v1.1-dev \
        --run runs/squad-cpu --output runs/ce256 --max-length 256
    python benchmarks/cross_encoder_length.py --data ../shared/data/squad-v1.1-dev \
        --run runs/squad-ce256 --output runs/ce256-listwise --max-length 256 --loss listwise
    python benchmarks/cross_encoder_length.py --data ../shared/data/squad-v1.1-dev \
        --run runs/squad-ce256 --output runs/ce256-2ep --max-length 256 --epochs 2 \
        --questions 1000 --rerank-shares

Why: SQuAD paragraphs are long; at the `cpu` preset's 160 tokens 6.9% of the training positives
have their answer cut off (`--report-truncation` prints the share for both lengths).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.ablation import AblationConfig, rerank, threshold_sweep  # noqa: E402
from engine.config import PipelineConfig  # noqa: E402
from engine.cross_encoder import CrossEncoder  # noqa: E402
from engine.dual_encoder import DualEncoder  # noqa: E402
from engine.index import DenseIndex  # noqa: E402
from engine.inverse_cloze import SCOPES  # noqa: E402
from engine.metrics import EvalResult, evaluate_rankings, paired_mrr10  # noqa: E402
from engine.pipeline import STEP_DIRS, open_run, run_pipeline  # noqa: E402
from engine.readers import load_any  # noqa: E402


def answer_cut_off(ds, split: str, tokenizer, passage_tokens: int) -> float:
    """Share of the split's gold (question, passage) pairs whose first answer starts past `passage_tokens`."""
    questions, qrels = ds.split(split)
    starts = []
    for q in questions:
        for pid in qrels[q.id]:
            text = ds.corpus[pid].text
            offsets = [text.find(a) for a in q.answers or () if text.find(a) >= 0]
            if offsets:
                starts.append(len(tokenizer(text[: min(offsets)], add_special_tokens=False)["input_ids"]))
    return float(np.mean(np.array(starts) > passage_tokens)) if starts else float("nan")


def rerank_mrr(
    ce: CrossEncoder, ds, questions: list, top: dict, qrels: dict, depth: int, memo: dict | None = None
) -> tuple[dict, EvalResult]:
    result = evaluate_rankings(rerank(ce, ds, questions, top, depth, memo), qrels, ds.corpus, ks=(1, 5, 20))
    return {"MRR@10": round(result.metrics["MRR@10"], 2), "R@1": round(result.metrics["R@1"], 2)}, result


def share_heads(run_dir: Path, dual: DualEncoder, ds, picked: list) -> dict:
    """The first stages `rerank_shares` re-ranks (they do not depend on the cross-encoder): per head
    ("dense", "hybrid"), the rankings of the picked test questions and of every dev question."""
    from engine.ablation import dense_candidates, hybrid_candidates
    from engine.sparse import BM25Index

    bm25 = BM25Index.build(ds.corpus)
    dev, _ = ds.split("dev")
    return {
        "bm25": bm25,
        "dense": tuple(dense_candidates(run_dir, dual, ds, qs, 100) for qs in (picked, dev)),
        "hybrid": tuple(hybrid_candidates(run_dir, dual, ds, qs, 100, bm25) for qs in (picked, dev)),
    }


def rerank_shares(
    ce: CrossEncoder | None, heads: dict, ds, picked: list, depth: int, memo: dict | None = None
) -> tuple[dict, list]:
    """The ablation's re-ranking rows for one cross-encoder on `picked` test questions: the
    cross-encoder alone, + w x dense, + w x dense + v x BM25 on the dual-encoder's top-`depth`, and
    + w x dense + v x BM25 on the hybrid's (RRF of the dual-encoder and BM25); w and v chosen on
    every dev question (engine.fusion.choose_rerank_weight). `heads` comes from `share_heads`.
    `memo` gets the logits per (question id, passage id); given one that already holds every pair
    (an ensemble's), `ce` is not needed. Returns the rows and each test row's evaluation, in row
    order (for paired comparisons)."""
    from engine.ablation import rerank_candidates, reranked
    from engine.fusion import RERANK_BM25_WEIGHTS, choose_rerank_weight

    bm25 = heads["bm25"]
    dev, dev_qrels = ds.split("dev")
    _, test_qrels = ds.split("test")
    sub = {q.id: test_qrels[q.id] for q in picked}
    memo = {} if memo is None else memo
    out: dict = {}
    results: list[EvalResult] = []

    def score(rankings: dict) -> dict:
        results.append(evaluate_rankings(rankings, sub, ds.corpus, ks=(1, 5, 20)))
        m = results[-1].metrics
        return {"MRR@10": round(m["MRR@10"], 2), "R@1": round(m["R@1"], 2)}

    for head in ("dense", "hybrid"):
        first, first_dev = heads[head]
        cand = rerank_candidates(ce, ds, picked, first, depth, bm25, memo)
        cand_dev = rerank_candidates(ce, ds, dev, first_dev, depth, bm25, memo)
        rows = {"first stage": score({q: r.ids for q, r in first.items()})}
        if head == "dense":
            rows["cross-encoder"] = score(reranked(first, cand))
            c = choose_rerank_weight(cand_dev, dev_qrels)
            rows[f"+ {c.weight:g} x dense"] = score(reranked(first, cand, c.weight))
        c = choose_rerank_weight(cand_dev, dev_qrels, bm25_weights=RERANK_BM25_WEIGHTS)
        rows[f"+ {c.weight:g} x dense + {c.bm25_weight:g} x BM25"] = score(
            reranked(first, cand, c.weight, c.bm25_weight)
        )
        rows["dev MRR@10 of that choice"] = round(c.mrr[(c.weight, c.bm25_weight)], 2)
        out[head] = rows
    return out, results


def generic_row(row: str) -> str:
    """A share row's name without its weights: "+ 5 x dense + 0.5 x BM25" -> "+ w x dense + v x BM25"."""
    return re.sub(r"\+ [0-9.e+-]+ x BM25", "+ v x BM25", re.sub(r"\+ [0-9.e+-]+ x dense", "+ w x dense", row))


def ensemble_logits(a: dict, b: dict) -> dict:
    """The mean of two cross-encoders' logits per (question id, passage id); both must hold the
    same pairs."""
    if a.keys() != b.keys():
        raise ValueError(f"the two cross-encoders scored different pairs ({len(a)} and {len(b)})")
    return {k: (a[k] + b[k]) / 2 for k in a}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--run", required=True, help="a finished pipeline run (its step 1, 2 and final model are used)")
    p.add_argument("--output", required=True, help="new run directory for the re-trained step 2")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--loss", choices=["pointwise", "listwise"], default=None, help="step 2's loss (default: the run's)")
    p.add_argument("--epochs", type=int, default=None, help="step 2's epochs (default: the run's)")
    p.add_argument(
        "--top-negatives",
        type=int,
        default=None,
        help="negatives per positive drawn from M_D0's top-k (ce_sampling.negatives_per_positive; default: the run's)",
    )
    p.add_argument(
        "--random-negatives",
        type=int,
        default=None,
        help="random negatives per positive (ce_sampling.random_negatives_per_positive; default: the run's)",
    )
    p.add_argument(
        "--inverse-cloze",
        type=int,
        default=None,
        help="inverse-cloze pseudo-queries per passage added to step 2's questions (ce_sampling.inverse_cloze; "
        "default: the run's)",
    )
    p.add_argument(
        "--inverse-cloze-scope",
        choices=SCOPES,
        default=None,
        help="which passages get those pseudo-queries (inverse_cloze.scope; default: the run's; step 1 is copied, "
        "so only step 2 sees it)",
    )
    p.add_argument("--questions", type=int, default=300, help="test questions re-ranked (seeded sample)")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--report-truncation", action="store_true", help="also print how many answers each length cuts off")
    p.add_argument(
        "--rerank-shares",
        action="store_true",
        help="also the ablation's re-ranking rows with dense and BM25 shares for both cross-encoders (weights "
        "chosen on every dev question; then every re-ranking row, the plain ones too, is scored through the fp32 ONNX "
        "Runtime copy when installed: the same logits)",
    )
    p.add_argument(
        "--rerank-ensemble",
        action="store_true",
        help="with --rerank-shares: also the same rows for the mean of both cross-encoders' logits (an ensemble; "
        "its own shares chosen on dev), paired against each",
    )
    args = p.parse_args(argv)
    if args.rerank_ensemble and not args.rerank_shares:
        p.error("--rerank-ensemble needs --rerank-shares")

    run_dir, out = Path(args.run), Path(args.output)
    meta = json.loads((run_dir / "config.json").read_text())
    base = PipelineConfig.from_dict(meta["config"])
    config = replace(base, cross=replace(base.cross, max_length=args.max_length))
    if args.loss:
        config = replace(config, step2=replace(config.step2, loss=args.loss))
    if args.epochs:
        config = replace(config, step2=replace(config.step2, epochs=args.epochs))
    sampling = {
        k: v
        for k, v in (
            ("negatives_per_positive", args.top_negatives),
            ("random_negatives_per_positive", args.random_negatives),
            ("inverse_cloze", args.inverse_cloze),
        )
        if v is not None
    }
    if any(v < 0 for v in sampling.values()):
        p.error("--top-negatives, --random-negatives and --inverse-cloze must be >= 0")
    if sampling:
        config = replace(config, ce_sampling=replace(config.ce_sampling, **sampling))
    if args.inverse_cloze_scope:
        config = replace(config, inverse_cloze=replace(config.inverse_cloze, scope=args.inverse_cloze_scope))
    ds = load_any(args.data)
    fresh = not (out / "config.json").is_file()
    run = open_run(args.data, out, config, ds)
    if fresh:
        shutil.copytree(run_dir / STEP_DIRS[1], out / STEP_DIRS[1])
    t0 = time.perf_counter()
    run_pipeline(run, (2,))
    report: dict = {
        "max_length": args.max_length,
        "baseline_max_length": base.cross.max_length,
        "loss": config.step2.loss,
        "baseline_loss": base.step2.loss,
        "epochs": config.step2.epochs,
        "baseline_epochs": base.step2.epochs,
        "sampling": asdict(config.ce_sampling),
        "baseline_sampling": asdict(base.ce_sampling),
        "inverse_cloze_scope": config.inverse_cloze.scope,
    }
    report["step2_seconds"] = {
        "new": json.loads((out / STEP_DIRS[2] / "metrics.json").read_text()).get("seconds", {}).get("total"),
        "run": json.loads((run_dir / STEP_DIRS[2] / "metrics.json").read_text()).get("seconds", {}).get("total"),
        "this_call": round(time.perf_counter() - t0, 1),
    }
    report["heldout"] = {
        name: json.loads((d / STEP_DIRS[2] / "metrics.json").read_text()).get("heldout")
        for name, d in (("new", out), ("run", run_dir))
    }
    report["threshold_sweep_dev"] = {
        "new": threshold_sweep(out, ds, config, AblationConfig()),
        "run": threshold_sweep(run_dir, ds, base, AblationConfig()),
    }

    questions, qrels = ds.split("test")
    qids = sorted(qrels)
    rng = np.random.default_rng(args.seed)
    chosen = [qids[i] for i in sorted(rng.choice(len(qids), min(args.questions, len(qids)), replace=False))]
    by_id = {q.id: q for q in questions}
    picked = [by_id[q] for q in chosen]
    final = next(d for d in (run_dir / STEP_DIRS[s] / "model" for s in (4, 3, 1)) if d.is_dir())  # latest model
    dual = DualEncoder.load(final)
    index = DenseIndex.build(dual.encode_passages(ds.corpus.passages), ds.corpus.ids)
    res = index.search(dual.encode_queries([q.text for q in picked]), args.depth)
    top = {q: ids for q, ids in zip(chosen, res.ids)}
    sub = {q: qrels[q] for q in chosen}
    dense = evaluate_rankings(top, sub, ds.corpus, ks=(1, 5, 20)).metrics
    report["rerank_test"] = {
        "questions": len(chosen),
        "depth": args.depth,
        "dual_encoder": str(final),
        "dense": {"MRR@10": round(dense["MRR@10"], 2), "R@1": round(dense["R@1"], 2)},
    }
    evaluated, models, logits = {}, {}, {}
    for name, d in (("run", run_dir), ("new", out)):
        models[name] = CrossEncoder.load(d / STEP_DIRS[2] / "model")
        if args.rerank_shares:
            from engine.onnx_int8 import available
            from engine.quantize import onnx_cross_encoder

            models[name] = onnx_cross_encoder(models[name]) if available() else models[name]
        logits[name] = {}  # reused by the shares' rows: the same pairs are not scored twice
        report["rerank_test"][name], evaluated[name] = rerank_mrr(
            models[name], ds, picked, top, sub, args.depth, logits[name]
        )
    report["rerank_test"]["new_vs_run"] = paired_mrr10(evaluated["run"], evaluated["new"])
    if args.rerank_shares:
        heads = share_heads(run_dir, dual, ds, picked)  # the same first stages for both cross-encoders
        shares, rows = {}, {}
        for name in ("run", "new"):
            shares[name], rows[name] = rerank_shares(models[name], heads, ds, picked, args.depth, logits[name])
        if args.rerank_ensemble:
            logits["ensemble"] = ensemble_logits(logits["run"], logits["new"])
            shares["ensemble"], rows["ensemble"] = rerank_shares(
                None, heads, ds, picked, args.depth, dict(logits["ensemble"])
            )
        # row by row (the same first stages and questions; the shares are each cross-encoder's own choice,
        # so a row is named by its place, "+ w x dense", not by one side's weights)
        names = [
            f"{head}: {generic_row(row)}"
            for head, table in shares["new"].items()
            for row in table
            if not row.startswith("dev ")
        ]
        for a, b in (("new", "run"), ("ensemble", "run"), ("ensemble", "new")):
            if b in rows and a in rows:
                shares[f"{a}_vs_{b}"] = {n: paired_mrr10(x, y) for n, x, y in zip(names, rows[b], rows[a], strict=True)}
        report["rerank_test"]["shares"] = shares
        # every logit scored, so that other combinations can be tried without scoring again
        (out / "rerank_logits.json").write_text(
            json.dumps({name: [[q, pid, v] for (q, pid), v in m.items()] for name, m in logits.items()}) + "\n"
        )
    if args.report_truncation:
        tok = CrossEncoder.load(out / STEP_DIRS[2] / "model").tokenizer
        lengths = (base.cross.max_length, args.max_length)
        # passage tokens = max length minus ~15 for the question and the special tokens
        report["answer_cut_off_train"] = {str(n): round(answer_cut_off(ds, "train", tok, n - 15), 3) for n in lengths}
    text_out = json.dumps(report, indent=2)
    (out / "cross_encoder_length.json").write_text(text_out + "\n")
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
