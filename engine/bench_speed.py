"""Bench sections on models: encoding, cross-encoder scoring, int8 quality, query latency, training.

Each section runs ours and its baseline in the same process with the same weights, texts, max
lengths, batch size and thread count, alternating repeats (engine/bench_timing.py), and checks
that the fp32 outputs are identical to the baseline's before comparing speed.

Baselines: `sentence_transformers.SentenceTransformer.encode`, `sentence_transformers.CrossEncoder
.predict` (loaded from a copy of our cross-encoder saved to a temporary directory, so the random
or trained head is the same), a manual training loop over sentence-transformers'
`MultipleNegativesRankingLoss` (no Trainer overhead: the fairest comparison), and, for query
latency, the ~13 s per query reported for the official RocketQA on CPU (PaddleNLP issue #2271,
a reported number, not re-measured here).
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from engine.bench_context import BenchContext
from engine.bench_timing import Row, Section, compare, percentile

log = logging.getLogger(__name__)

ROCKETQA_CPU_SECONDS_PER_QUERY = 13.0  # PaddleNLP issue #2271, official RocketQA on CPU (reported)


def _st_model_dir(ctx: BenchContext) -> str:
    """The directory sentence-transformers loads for our passage tower."""
    model = ctx.config.model or ctx.dual.config.resolved_model()
    tower = Path(model) / "passage_encoder"
    return str(tower if tower.is_dir() else model)


def _fmt_rate(per_s: float, unit: str) -> str:
    return f"{per_s:,.1f} {unit}"


# --- passage encoding ---------------------------------------------------------------------


def encode_section(ctx: BenchContext) -> Section:
    from sentence_transformers import SentenceTransformer

    cfg = ctx.config
    texts = ctx.passage_texts(cfg.encode_passages)
    ours, ours_q = ctx.dual.passage_encoder, ctx.dual_int8.passage_encoder
    st = SentenceTransformer(_st_model_dir(ctx), device="cpu")
    st.max_seq_length = ours.max_length

    def run_ours() -> np.ndarray:
        return ours.encode(texts, batch_size=cfg.encode_batch)

    def run_int8() -> np.ndarray:
        return ours_q.encode(texts, batch_size=cfg.encode_batch)

    def run_st() -> np.ndarray:
        return st.encode(texts, batch_size=cfg.encode_batch, convert_to_numpy=True, show_progress_bar=False)

    a, b, q = run_ours(), run_st(), run_int8()
    max_abs = float(np.abs(a - b).max())
    cos = (q * a).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(a, axis=1))
    fp32 = compare(run_ours, run_st, cfg.repeats)
    int8 = compare(run_int8, run_st, cfg.repeats)
    n = len(texts)
    data = {
        "passages": n,
        "max_length": ours.max_length,
        "batch_size": cfg.encode_batch,
        "baseline": "sentence_transformers.SentenceTransformer.encode",
        "fp32": fp32.to_dict(n),
        "int8": int8.to_dict(n),
        "max_abs_diff_vs_baseline": max_abs,
        "identical": max_abs < 1e-5,
        "int8_cosine_to_fp32": {"min": float(cos.min()), "mean": float(cos.mean())},
    }
    rows = [
        Row(
            "passage encoding, fp32 (passages/s, 128 tokens)",
            _fmt_rate(n / fp32.ours.median, "p/s") + f" (max abs diff {max_abs:.1e})",
            _fmt_rate(n / fp32.baseline.median, "p/s") + " SentenceTransformer.encode",
            fp32.ratio,
            "≥ 1.0× and identical",
            fp32.ratio >= 1.0 and data["identical"],
        ),
        Row(
            f"passage encoding, {ctx.int8_name('dual')} (passages/s)",
            _fmt_rate(n / int8.ours.median, "p/s") + f" (cosine to fp32 ≥ {cos.min():.3f})",
            _fmt_rate(n / int8.baseline.median, "p/s") + " SentenceTransformer.encode fp32",
            int8.ratio,
            "≥ 1.8×",
            int8.ratio >= 1.8,
        ),
    ]
    onnx = ctx.dual_onnx
    if onnx is not None:
        enc = onnx.passage_encoder

        def run_onnx() -> np.ndarray:
            return enc.encode(texts, batch_size=cfg.encode_batch)

        row, data["onnx_fp32"] = _onnx_fp32_row(
            "passage encoding, ONNX Runtime fp32 (passages/s)",
            run_onnx,
            run_st,
            b,
            n,
            "p/s",
            "SentenceTransformer.encode",
            1e-5,
            cfg.repeats,
        )
        rows.insert(1, row)
    return Section("encode", data, rows)


def _onnx_fp32_row(label, run_onnx, run_st, reference, n, unit, baseline, tolerance, repeats) -> tuple[Row, dict]:
    """The fp32 model run by ONNX Runtime against the sentence-transformers baseline: same outputs, speed."""
    max_abs = float(np.abs(run_onnx() - reference).max())
    timing = compare(run_onnx, run_st, repeats)
    row = Row(
        label,
        _fmt_rate(n / timing.ours.median, unit) + f" (max abs diff {max_abs:.1e})",
        _fmt_rate(n / timing.baseline.median, unit) + f" {baseline}",
        timing.ratio,
        "≥ 1.0× and identical",
        timing.ratio >= 1.0 and max_abs < tolerance,
    )
    return row, {**timing.to_dict(n), "max_abs_diff_vs_baseline": max_abs, "identical": max_abs < tolerance}


# --- cross-encoder scoring ----------------------------------------------------------------


def cross_section(ctx: BenchContext) -> Section:
    from sentence_transformers import CrossEncoder as STCrossEncoder

    cfg = ctx.config
    ce, ce_q = ctx.cross, ctx.cross_int8
    questions, passages = ctx.pairs(cfg.ce_pairs)
    with tempfile.TemporaryDirectory(prefix="bench-ce-") as tmp:
        ce.save(tmp)  # the same head (trained or freshly initialised) for both sides
        st = STCrossEncoder(
            tmp, num_labels=1, max_length=ce.config.max_length, device="cpu", activation_fn=torch.nn.Identity()
        )
    pairs = [(q, ce.passage_text(p)) for q, p in zip(questions, passages)]

    def run_ours() -> np.ndarray:
        return ce.logits(questions, passages, batch_size=cfg.ce_batch)

    def run_int8() -> np.ndarray:
        return ce_q.logits(questions, passages, batch_size=cfg.ce_batch)

    def run_st() -> np.ndarray:
        return np.asarray(
            st.predict(pairs, batch_size=cfg.ce_batch, convert_to_numpy=True, show_progress_bar=False), dtype=np.float32
        )

    a, b, q = run_ours(), run_st(), run_int8()
    max_abs = float(np.abs(a - b).max())
    fp32 = compare(run_ours, run_st, cfg.repeats)
    int8 = compare(run_int8, run_st, cfg.repeats)
    n = len(pairs)
    spearman = float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(q)))[0, 1])
    data = {
        "pairs": n,
        "max_length": ce.config.max_length,
        "batch_size": cfg.ce_batch,
        "head_trained": ce.is_trained,
        "baseline": "sentence_transformers.CrossEncoder.predict (same weights, identity activation)",
        "fp32": fp32.to_dict(n),
        "int8": int8.to_dict(n),
        "max_abs_logit_diff_vs_baseline": max_abs,
        "identical": max_abs < 1e-4,
        "int8_spearman_to_fp32": spearman,
    }
    rows = [
        Row(
            "cross-encoder scoring, fp32 (pairs/s)",
            _fmt_rate(n / fp32.ours.median, "pairs/s") + f" (max abs diff {max_abs:.1e})",
            _fmt_rate(n / fp32.baseline.median, "pairs/s") + " CrossEncoder.predict",
            fp32.ratio,
            "≥ 1.0×",
            fp32.ratio >= 1.0 and data["identical"],
        ),
        Row(
            f"cross-encoder scoring, {ctx.int8_name('cross')} (pairs/s)",
            _fmt_rate(n / int8.ours.median, "pairs/s") + f" (rank corr. to fp32 {spearman:.3f})",
            _fmt_rate(n / int8.baseline.median, "pairs/s") + " CrossEncoder.predict fp32",
            int8.ratio,
            "≥ 1.8×",
            int8.ratio >= 1.8,
        ),
    ]
    onnx = ctx.cross_onnx
    if onnx is not None:

        def run_onnx() -> np.ndarray:
            return onnx.logits(questions, passages, batch_size=cfg.ce_batch)

        row, data["onnx_fp32"] = _onnx_fp32_row(
            "cross-encoder scoring, ONNX Runtime fp32 (pairs/s)",
            run_onnx,
            run_st,
            b,
            n,
            "pairs/s",
            "CrossEncoder.predict",
            1e-4,
            cfg.repeats,
        )
        rows.insert(1, row)
    return Section("cross", data, rows)


# --- retrieval quality, fp32 vs int8 --------------------------------------------------------


def _rankings(ctx: BenchContext, vectors: np.ndarray, int8: bool, k: int = 100) -> dict[str, list[str]]:
    from engine.index import DenseIndex

    questions, _ = ctx.split()
    model = ctx.dual_int8 if int8 else ctx.dual
    index = DenseIndex.build(vectors, ctx.corpus.ids)
    res = index.search(model.encode_queries([q.text for q in questions]), k)
    return {q.id: ids for q, ids in zip(questions, res.ids)}


def quality_section(ctx: BenchContext) -> Section:
    from engine.metrics import evaluate_rankings

    questions, qrels = ctx.split()
    answers = {q.id: q.answers for q in questions if q.answers}
    out, rows, dense = {}, [], {}
    for label, int8 in (("fp32", False), ("int8", True)):
        vectors = ctx.corpus_vectors(int8)
        dense[label] = _rankings(ctx, vectors, int8)
        result = evaluate_rankings(dense[label], qrels, ctx.corpus, answers or None)
        out[label] = {
            **{k: round(v, 2) for k, v in result.metrics.items()},  # already in percent
            "corpus_encode_s": round(ctx.seconds("vectors_int8_seconds" if int8 else "vectors_seconds"), 2),
        }
    loss = out["fp32"]["MRR@10"] - out["int8"]["MRR@10"]
    subset = ctx.config.quality_questions or ctx.config.quick_corpus
    scope = f"{len(questions)} {ctx.config.quality_split} questions over {len(ctx.corpus):,} passages" + (
        " (quick: SUBSET)" if subset else " (full split, whole corpus)"
    )
    data = {
        "scope": scope,
        "data": ctx.data_label,
        "int8_config": {
            **asdict(ctx.quantize_config),
            "dual": ctx.quantize_config.resolved_backend("dual"),
            "cross": ctx.quantize_config.resolved_backend("cross"),
        },
        **out,
        "mrr10_loss_points": round(loss, 2),
    }
    rows.append(
        Row(
            f"MRR@10 fp32 → {ctx.int8_name('dual')}"
            + (" (FFN outputs kept fp32)" if ctx.config.int8_skip_ffn_output else "")
            + " on SQuAD "
            + ctx.config.quality_split
            + (" (quick subset)" if subset else ""),
            f"{out['fp32']['MRR@10']:.2f} → {out['int8']['MRR@10']:.2f} (loss {loss:.2f} points)",
            "fp32",
            None,
            "loss < 0.5",
            loss < 0.5,
        )
    )
    rerank = _rerank_quality(ctx, dense["fp32"], qrels, answers)
    if rerank:
        data["rerank"] = rerank
        rows.append(
            Row(
                f"re-ranked MRR@10 (fp32 dense top-{rerank['depth']}), fp32 → {ctx.int8_name('cross')} cross-encoder, "
                f"{rerank['questions']} {ctx.config.quality_split} questions",
                f"{rerank['fp32']['MRR@10']:.2f} → {rerank['int8']['MRR@10']:.2f} "
                f"(loss {rerank['mrr10_loss_points']:.2f} points; dense alone {rerank['dense']['MRR@10']:.2f})",
                "fp32",
                None,
                "loss < 0.5",
                rerank["mrr10_loss_points"] < 0.5,
            )
        )
    return Section("quality", data, rows)


def _rerank_quality(ctx: BenchContext, dense: dict[str, list[str]], qrels: dict, answers: dict) -> dict | None:
    """MRR@10 of the same fp32 dense top-k re-ranked by the fp32 and by the int8 cross-encoder."""
    from engine.ablation import rerank
    from engine.metrics import evaluate_rankings

    cfg = ctx.config
    if not cfg.rerank_quality_questions or not ctx.cross.is_trained:
        return None  # an untrained head's order means nothing
    qids = sorted(q for q in dense if q in qrels)
    rng = np.random.default_rng(cfg.seed)
    sample = sorted(rng.choice(len(qids), size=min(cfg.rerank_quality_questions, len(qids)), replace=False))
    chosen = [qids[i] for i in sample]
    questions = [ctx.dataset.questions[qid] for qid in chosen]
    top = {qid: dense[qid][: cfg.rerank_depth] for qid in chosen}
    sub_qrels = {qid: qrels[qid] for qid in chosen}
    sub_answers = {qid: answers[qid] for qid in chosen if qid in answers} or None
    out: dict = {"questions": len(chosen), "depth": cfg.rerank_depth, "seed": cfg.seed}
    result = evaluate_rankings(top, sub_qrels, ctx.corpus, sub_answers, ks=(1, 5, 20))
    out["dense"] = {k: round(v, 2) for k, v in result.metrics.items()}
    for label, ce in (("fp32", ctx.cross), ("int8", ctx.cross_int8)):
        reranked = rerank(ce, ctx.dataset, questions, top, cfg.rerank_depth)
        result = evaluate_rankings(reranked, sub_qrels, ctx.corpus, sub_answers, ks=(1, 5, 20))
        out[label] = {k: round(v, 2) for k, v in result.metrics.items()}
    out["mrr10_loss_points"] = round(out["fp32"]["MRR@10"] - out["int8"]["MRR@10"], 2)
    return out


# --- query latency in process ---------------------------------------------------------------


def _latency_label(ctx: BenchContext) -> str:
    dual, cross = ctx.int8_name("dual"), ctx.int8_name("cross")
    return (
        dual
        if dual == cross
        else f"int8 ({dual.replace(' int8', '')} dual-encoder, {cross.replace(' int8', '')} cross-encoder)"
    )


def latency_section(ctx: BenchContext) -> Section:
    """encode + FAISS search + re-rank top-`rerank_depth`, one question at a time."""
    from engine.index import DenseIndex
    from engine.retriever import Retriever

    cfg = ctx.config
    all_questions, _ = ctx.dataset.split(cfg.quality_split)
    texts = [q.text for q in all_questions[: cfg.latency_queries]]
    logging.getLogger("engine.retriever").setLevel(logging.ERROR)  # untrained-head warning per query
    out, rows = {}, []
    variants = [("fp32", ctx.dual, ctx.cross, False), ("int8", ctx.dual_int8, ctx.cross_int8, True)]
    if ctx.dual_onnx is not None:  # the same fp32 models in ONNX Runtime: the same vectors, the fp32 index
        variants.insert(1, ("onnx_fp32", ctx.dual_onnx, ctx.cross_onnx, False))
    labels = {"fp32": "fp32", "onnx_fp32": "fp32 (ONNX Runtime)", "int8": _latency_label(ctx)}
    for label, dual, ce, int8 in variants:
        index = DenseIndex.build(ctx.corpus_vectors(int8), ctx.corpus.ids)
        retriever = Retriever(ctx.corpus, dense=dual, index=index, reranker=ce)
        retriever.search(texts[0], k=10, rerank_depth=cfg.rerank_depth)  # warm-up
        total, parts = [], {"encode": [], "search": [], "rerank": []}
        for q in texts:
            t0 = time.perf_counter()
            retriever.search(q, k=10, rerank_depth=cfg.rerank_depth)
            total.append(time.perf_counter() - t0)
            # the same three stages timed apart (a second pass, to show where the time goes)
            t0 = time.perf_counter()
            v = dual.encode_queries([q])
            t1 = time.perf_counter()
            res = index.search(v, cfg.rerank_depth)
            t2 = time.perf_counter()
            ce.logits([q] * len(res.ids[0]), [ctx.corpus[pid] for pid in res.ids[0]])
            t3 = time.perf_counter()
            parts["encode"].append(t1 - t0)
            parts["search"].append(t2 - t1)
            parts["rerank"].append(t3 - t2)
        ms = [1000 * s for s in total]
        out[label] = {
            "queries": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(percentile(ms, 95), 1),
            "min_ms": round(min(ms), 1),
            "stages_p50_ms": {k: round(1000 * statistics.median(v), 1) for k, v in parts.items()},
        }
        r = out[label]
        rows.append(
            Row(
                f"query latency {labels[label]}: encode + Flat search + re-rank top-{cfg.rerank_depth}, in process",
                f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms",
                f"~{ROCKETQA_CPU_SECONDS_PER_QUERY:.0f} s/query (official RocketQA on CPU, reported)",
                1000 * ROCKETQA_CPU_SECONDS_PER_QUERY / r["p50_ms"],
                "p50 ≤ 150 ms, p95 ≤ 300 ms",
                r["p50_ms"] <= 150 and r["p95_ms"] <= 300,
            )
        )
    data = {
        "corpus_passages": len(ctx.corpus),
        "rerank_depth": cfg.rerank_depth,
        "threads": torch.get_num_threads(),
        "baseline_s_per_query": ROCKETQA_CPU_SECONDS_PER_QUERY,
        "baseline_source": "PaddleNLP issue #2271 (reported, not re-measured)",
        **out,
    }
    return Section("latency", data, rows)


# --- dual-encoder training throughput -------------------------------------------------------


def _train_examples(ctx: BenchContext, n: int):
    from engine.examples import examples_from_split

    examples = examples_from_split(ctx.dataset, "train" if "train" in ctx.dataset.qrels else ctx.config.quality_split)
    if len(examples) < n:
        examples = (examples * (n // max(1, len(examples)) + 1))[:n]
    return examples[:n]


def train_section(ctx: BenchContext) -> Section:
    """Questions/s: our trainer vs a manual sentence-transformers MNRL loop, same batches and settings."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from engine.train_dual import DualTrainConfig, train_dual_encoder

    cfg = ctx.config
    n = cfg.train_steps * cfg.train_batch
    examples = _train_examples(ctx, n)
    corpus = ctx.dataset.corpus
    base = ctx.dual
    tconf = DualTrainConfig(
        batch_size=cfg.train_batch,
        hard_negatives_per_question=0,  # in-batch negatives only, as MNRL with (question, positive) pairs
        temperature=0.05,  # = MNRL's scale 20
        max_steps=cfg.train_steps,
        warmup_ratio=0.1,
    )
    q_len, p_len = base.query_encoder.max_length, base.passage_encoder.max_length
    st = SentenceTransformer(_st_model_dir(ctx), device="cpu")
    st_state = copy.deepcopy(st.state_dict())
    batches = [examples[i : i + cfg.train_batch] for i in range(0, n, cfg.train_batch)]

    def run_ours() -> None:
        model = copy.deepcopy(base)
        train_dual_encoder(model, examples, corpus, tconf, log_every=10**9)

    def run_st() -> None:
        st.load_state_dict(st_state)
        st.train()
        loss_fn = MultipleNegativesRankingLoss(st, scale=20.0)
        opt = torch.optim.AdamW(st.parameters(), lr=tconf.learning_rate)
        for batch in batches:
            st.max_seq_length = q_len
            fq = st.preprocess([ex.question for ex in batch])
            st.max_seq_length = p_len
            fp = st.preprocess([corpus[ex.positives[0]].full_text for ex in batch])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn([fq, fp], None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(st.parameters(), tconf.max_grad_norm)
            opt.step()

    comp = compare(run_ours, run_st, cfg.train_repeats)
    data = {
        "questions_per_repeat": n,
        "steps": cfg.train_steps,
        "batch_size": cfg.train_batch,
        "negatives": "in-batch only (1 positive per question), scale 20 / temperature 0.05",
        "max_lengths": [q_len, p_len],
        "baseline": "manual loop: SentenceTransformer.preprocess + MultipleNegativesRankingLoss + AdamW + clipping",
        "note": "each repeat starts from the same initial weights and includes optimiser creation on both sides",
        **comp.to_dict(n),
    }
    rows = [
        Row(
            f"dual-encoder training (questions/s, batch {cfg.train_batch}, in-batch negatives)",
            _fmt_rate(n / comp.ours.median, "q/s"),
            _fmt_rate(n / comp.baseline.median, "q/s") + " ST MNRL loop",
            comp.ratio,
            "≥ 1.0×",
            comp.ratio >= 1.0,
        )
    ]
    return Section("train", data, rows)
