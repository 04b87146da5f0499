"""`python -m engine ...`: a thin command line over the library.

Commands: `evaluate` (retrieve for a split and score it), `index` (build or refresh the cached
dense index of a corpus, optionally from shards), `encode` (encode one shard of a corpus), `search`
(one question, print the hits). Other modules add their own commands through `register(...)`:
each entry of `COMMANDS` is a module with `add_parser(subparsers)` that sets `func`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

log = logging.getLogger("engine")

# Modules that add sub-commands (pipeline, benchmarks): imported lazily, skipped if absent.
COMMANDS = ["engine.pipeline_cli", "engine.bench", "engine.rerank_mix"]


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="data directory or file (BEIR, SQuAD JSON, DPR JSON, MS MARCO dir) or hf:NAME"
    )
    p.add_argument(
        "--cache",
        default=None,
        help="embedding/index cache root (default $ROCKETQA_CACHE or ~/.cache/rocketqa-workbench)",
    )


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="", help="dual-encoder: directory or Hugging Face id (default: packaged all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--index-factory", default="Flat", help="FAISS factory string, e.g. Flat (exact), HNSW32,Flat, IVF1024,PQ48"
    )
    p.add_argument(
        "--passage-max-length",
        type=int,
        default=None,
        help="passage tokens (default: what the model declares, 256 for all-MiniLM-L6-v2; the RocketQA paper used 128)",
    )


def _int8_args(p: argparse.ArgumentParser) -> None:
    runtime = p.add_mutually_exclusive_group()
    runtime.add_argument(
        "--onnx",
        action="store_true",
        help="encode passages with the fp32 dual-encoder run by ONNX Runtime (CPU; the same vectors, faster; "
        "shares the fp32 cache; measured in docs/BENCHMARKS.md)",
    )
    runtime.add_argument(
        "--int8",
        action="store_true",
        help="encode passages with an int8 copy of the dual-encoder (CPU; faster, slightly different vectors, "
        "cached under their own key; measured cost in docs/BENCHMARKS.md)",
    )
    p.add_argument(
        "--int8-backend",
        choices=["auto", "onnx", "torch"],
        default="auto",
        help="how the int8 copy runs: onnx (ONNX Runtime), torch (PyTorch dynamic), auto = onnx when installed",
    )


# The ways a dev split chooses the re-ranking shares (engine.fusion.RERANK_FIT_METHODS, which a test pins
# to this; written out so that building the parser imports no engine module).
RERANK_FIT_CHOICES = ("grid", "listwise")


def rerank_fit_arg(p: argparse.ArgumentParser, what: str) -> None:
    """`--rerank-fit`, as evaluate, rerank-mix and ablation share it; `what` names the dev choice it steers."""
    p.add_argument(
        "--rerank-fit",
        choices=RERANK_FIT_CHOICES,
        default="grid",
        help=f"how the re-ranking shares are chosen on {what}: `grid` (the grid's best MRR@10) or `listwise` (fitted by "
        "maximum likelihood of the relevant passages under a softmax over each head; "
        "engine.fusion.fit_rerank_weights)",
    )


def check_rerank_fit(fit: str, grid_extend: int) -> None:
    """A fit has no grid to extend: refuse the pair before any data loads."""
    if fit != "grid" and grid_extend:
        raise ValueError(f"--rerank-grid-extend extends the grid: it does not apply to --rerank-fit {fit}")


def _encoder(args: argparse.Namespace):
    from engine.dual_encoder import DualEncoder, DualEncoderConfig

    overrides = {"passage_max_length": args.passage_max_length} if args.passage_max_length else {}
    encoder = (
        DualEncoder.load(args.model, **overrides) if args.model else DualEncoder.build(DualEncoderConfig(**overrides))
    )
    if getattr(args, "int8", False):
        from engine.quantize import QuantizeConfig, quantize_dual_encoder

        encoder = quantize_dual_encoder(encoder, QuantizeConfig(backend=args.int8_backend))
    elif getattr(args, "onnx", False):
        from engine.quantize import onnx_dual_encoder

        encoder = onnx_dual_encoder(encoder)
    return encoder


def _load(data: str, split: str | None = None):
    from engine.readers import load_any

    return load_any(data, split=split)


def _retriever(args: argparse.Namespace, corpus, show_progress: bool = True):
    """The retriever that `--retriever/--model/--reranker/...` describe."""
    from engine.retriever import build_retriever

    retriever = build_retriever(
        corpus,
        model=args.model if args.retriever != "bm25" else None,
        # a BM25 share in re-ranking needs the index also when it does not retrieve
        bm25=args.retriever != "dense"
        or bool(getattr(args, "rerank_bm25_weight", 0) or getattr(args, "rerank_bm25", 0)),
        reranker=args.reranker,
        factory=args.index_factory,
        cache_root=args.cache,
        show_progress=show_progress,
        passage_max_length=args.passage_max_length,
    )
    max_length = getattr(args, "rerank_max_length", None)  # checked by cmd_evaluate before anything loads
    if max_length:
        retriever.reranker.config = replace(retriever.reranker.config, max_length=max_length)
    if args.rerank_onnx:
        if retriever.reranker is None:
            raise ValueError("--rerank-onnx needs --reranker")
        from engine.quantize import onnx_cross_encoder

        retriever.reranker = onnx_cross_encoder(retriever.reranker)
    return retriever


def _check_rerank_weights(args: argparse.Namespace) -> None:
    for flag, w in (("--rerank-weight", args.rerank_weight), ("--rerank-bm25-weight", args.rerank_bm25_weight)):
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"{flag} must be a number >= 0, got {w}")


def _search_all(retriever, questions, k: int, mode: str, rerank_depth: int, vectors=None) -> list:
    hits = []
    for start in range(0, len(questions), 256):
        batch = questions[start : start + 256]
        given = None if vectors is None else vectors[start : start + 256]
        hits.extend(
            retriever.search_batch(
                [q.text for q in batch], k=k, mode=mode, rerank_depth=rerank_depth, query_vectors=given
            )
        )
    return hits


def _rerank_weight_from_dev(args: argparse.Namespace, ds, retriever):
    """Choose the re-ranking weights (cross-encoder logit + w * dense score [+ v * BM25 score]) on
    another split."""
    from engine.fusion import choose_or_fit
    from engine.retriever import clean_question

    if args.rerank_depth < 1 or not args.reranker:
        raise ValueError("--rerank-weight-from-dev needs --reranker and --rerank-depth")
    split = args.rerank_weight_from_dev
    if split == args.split:
        raise ValueError(f"--rerank-weight-from-dev {split}: choose the weight on another split than the one evaluated")
    questions, qrels = ds.split(split)
    shared = set(qrels) & set(ds.qrels.get(args.split, {}))
    if shared:
        raise ValueError(
            f"--rerank-weight-from-dev {split}: {len(shared)} of its questions are in the evaluated split "
            f"{args.split!r} (e.g. {sorted(shared)[0]!r}); the weight must be chosen on other questions"
        )
    retriever.rerank_weight = retriever.rerank_bm25_weight = 0.0
    # encoded once: the first stage searches with them, and every head's missing dense scores need them
    vectors = (
        retriever.dense.encode_queries([clean_question(q.text) for q in questions])
        if retriever.dense is not None
        else None
    )
    hits = _search_all(retriever, questions, args.rerank_depth, args.retriever, args.rerank_depth, vectors)
    candidates = {}
    for i, (q, hs) in enumerate(zip(questions, hits)):
        head = retriever.with_scores(
            q.text,
            sorted(hs, key=lambda h: h.first_stage_rank),
            query_vector=None if vectors is None else vectors[i],
        )
        candidates[q.id] = _candidates(head)
    choice = choose_or_fit(
        candidates,
        qrels,
        args.rerank_fit,
        dense=retriever.dense is not None,
        bm25=args.rerank_bm25,
        extend=args.rerank_grid_extend,
    )
    log.info(
        "re-ranking weights %g (dense), %g (BM25) chosen on %s (%d questions, %s)",
        choice.weight,
        choice.bm25_weight,
        split,
        choice.questions,
        choice.method,
    )
    return choice, candidates


SPOT_CHECK_PAIRS = 16  # saved pairs scored again before `--rerank-logits-from` reuses a file
SPOT_CHECK_TOLERANCE = 0.01  # largest logit difference accepted (ONNX vs PyTorch, padding: ~1e-5)


def _reuse_logits(features, ds, retriever) -> dict:
    """Wrap the retriever's cross-encoder so that it reuses the saved logits of `features` (one
    table over every file, the first file's logit where two hold a pair); each file is checked
    first: same corpus, same `--rerank-max-length`, and `SPOT_CHECK_PAIRS` of its pairs scored
    again by this cross-encoder within `SPOT_CHECK_TOLERANCE`. Returns the output's record of the
    files and the check."""
    from engine.rerank_features import ReusedLogits, logit_table
    from engine.retriever import QueryError, clean_question

    texts = {}
    for split in ds.qrels:
        known = {}
        for q in ds.split(split)[0]:
            try:
                known[q.id] = clean_question(q.text)
            except QueryError:
                continue  # a question the retriever refuses is never re-ranked
        texts[split] = known
    fingerprint = ds.corpus.fingerprint()
    worst, merged = 0.0, {}
    for f in features:
        if f.corpus_fingerprint != fingerprint:
            raise ValueError(f"--rerank-logits-from {f.path}: made on another corpus (its fingerprint differs)")
        # pairs shorter than either length score alike, so the spot check alone could miss this
        length = f.config.get("rerank_max_length")
        if length is not None and length != retriever.reranker.config.max_length:
            raise ValueError(
                f"--rerank-logits-from {f.path}: scored at {length} tokens a pair, this cross-encoder reads "
                f"{retriever.reranker.config.max_length} (--rerank-max-length {length} reuses it)"
            )
        table = logit_table(f, texts)
        if not table:
            raise ValueError(f"--rerank-logits-from {f.path}: it holds no question of this data's splits")
        pairs = sorted(table)
        sample = pairs[:: max(1, len(pairs) // SPOT_CHECK_PAIRS)][:SPOT_CHECK_PAIRS]
        fresh = retriever.reranker.logits([q for q, _ in sample], [ds.corpus[pid] for _, pid in sample])
        diff = max(abs(float(x) - table[k]) for x, k in zip(fresh, sample))
        if diff > SPOT_CHECK_TOLERANCE:
            raise ValueError(
                f"--rerank-logits-from {f.path}: its logits are not this cross-encoder's (scored again, "
                f"{len(sample)} of its pairs differ by up to {diff:.3g}); pass the cross-encoder and "
                "--rerank-max-length that wrote it"
            )
        worst = max(worst, diff)
        merged = table | merged  # an earlier file's logit wins
    retriever.reranker = ReusedLogits(retriever.reranker, merged)
    return {
        "files": [f.path for f in features],
        "spot_check": {"pairs_per_file": SPOT_CHECK_PAIRS, "max_abs_diff": round(worst, 6)},
    }


def _candidates(head):
    """A re-ranked head's features, in first-stage order (dense and BM25 scores only when every hit
    has one: a retriever without a dual-encoder or a BM25 index has none to give)."""
    from engine.fusion import RerankCandidates

    head = sorted(head, key=lambda h: h.first_stage_rank)
    dense, bm25 = tuple(h.dense_score for h in head), tuple(h.bm25_score for h in head)
    return RerankCandidates(
        tuple(h.passage.id for h in head),
        dense if None not in dense else (),
        tuple(h.ce_logit for h in head),
        bm25 if None not in bm25 else (),
    )


def score_rankings(rankings: dict, questions, qrels, corpus):
    """The EvalResult of these rankings: gold metrics, and answer accuracy where questions have answers."""
    from engine.metrics import evaluate_rankings

    answers = {q.id: q.answers for q in questions if q.answers}
    return evaluate_rankings(rankings, qrels, corpus, answers or None)


def metrics_output(result) -> dict:
    """The head of an evaluation's JSON output: its metrics (percent, 2 decimals) and counts."""
    return {
        **{k: round(v, 2) for k, v in result.metrics.items()},
        "num_questions": result.num_questions,
        "num_with_answers": result.num_with_answers,
    }


def choice_config(choice, split: str) -> dict:
    """A WeightChoice as the `rerank_weight_choice` of an output's config: the split, and the MRR@10
    of every (dense, BM25) weight pair tried."""
    return {
        "split": split,
        "method": choice.method,
        "questions": choice.questions,
        "on_grid_edge": choice.on_edge,
        "grid_extensions": choice.extensions,
    } | {f"MRR@{choice.cutoff} at weights {w:g} (dense), {v:g} (BM25)": round(m, 2) for (w, v), m in choice.mrr.items()}


def _feature_rows(retriever, split: str, questions, hits) -> list:
    """(split, question id, SavedHead) for `--rerank-features`: each re-ranked head with its missing
    dense and BM25 scores filled in, and the ids below it."""
    from engine.rerank_features import SavedHead

    heads = [[h for h in hs if h.ce_logit is not None] for hs in hits]
    # questions whose head lacks a dense score (a dense share of 0 never asked for one): encoded in one batch
    need = [i for i, head in enumerate(heads) if any(h.dense_score is None for h in head)]
    vectors = {}
    if need and retriever.dense is not None:
        encoded = retriever.dense.encode_queries([questions[i].text for i in need])
        vectors = dict(zip(need, encoded))
    rows = []
    for i, (q, hs) in enumerate(zip(questions, hits)):
        head = retriever.with_scores(q.text, heads[i], query_vector=vectors.get(i))
        tail = tuple(h.passage.id for h in sorted(hs, key=lambda h: h.rank) if h.ce_logit is None)
        rows.append((split, q.id, SavedHead(_candidates(head), tail)))
    return rows


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.metrics import paired_mrr10

    _check_rerank_weights(args)
    if args.rerank_bm25 and not args.rerank_weight_from_dev:
        raise ValueError("--rerank-bm25 chooses the BM25 share on a dev split: add --rerank-weight-from-dev SPLIT")
    if args.rerank_max_length is not None:
        if not args.reranker:
            raise ValueError("--rerank-max-length needs --reranker")
        if not 32 <= args.rerank_max_length <= 512:
            raise ValueError(f"--rerank-max-length must be 32-512 tokens, got {args.rerank_max_length}")
    if args.rerank_grid_extend < 0:
        raise ValueError(f"--rerank-grid-extend must be >= 0, got {args.rerank_grid_extend}")
    if args.rerank_grid_extend and not args.rerank_weight_from_dev:
        raise ValueError("--rerank-grid-extend extends the grid that --rerank-weight-from-dev SPLIT searches: add it")
    if args.rerank_fit != "grid" and not args.rerank_weight_from_dev:
        raise ValueError(
            f"--rerank-fit {args.rerank_fit} fits the shares on a dev split: add --rerank-weight-from-dev SPLIT"
        )
    check_rerank_fit(args.rerank_fit, args.rerank_grid_extend)
    if args.rerank_features and (args.rerank_depth < 1 or not args.reranker):
        raise ValueError("--rerank-features saves re-ranked heads: it needs --reranker and --rerank-depth")
    if args.rerank_features and args.k < args.rerank_depth:
        raise ValueError(f"--rerank-features saves whole heads: --k {args.k} must be at least --rerank-depth")
    if args.rerank_weight_from_dev and (args.rerank_weight or args.rerank_bm25_weight):
        raise ValueError("--rerank-weight-from-dev chooses the weights: drop --rerank-weight / --rerank-bm25-weight")
    saved_logits = None
    if args.rerank_logits_from:
        if args.rerank_depth < 1 or not args.reranker:
            raise ValueError("--rerank-logits-from reuses re-ranking logits: it needs --reranker and --rerank-depth")
        from engine.rerank_features import read_features

        saved_logits = [read_features(f) for f in args.rerank_logits_from]  # a bad file fails before loading
    # one load: with a weight to choose on another split (or saved logits of any split), every split comes in
    ds = _load(args.data, None if args.rerank_weight_from_dev or saved_logits else args.split)
    questions, qrels = ds.split(args.split)
    # a hash of the whole corpus: only when a per-question file is read or written
    fingerprint = ds.corpus.fingerprint() if args.paired_with or args.per_question else None
    # read before the evaluation runs, so that a wrong file costs nothing
    baseline = read_per_question(args.paired_with, args.split, fingerprint, questions) if args.paired_with else None
    t0 = time.perf_counter()
    retriever = _retriever(args, ds.corpus)
    reuse = _reuse_logits(saved_logits, ds, retriever) if saved_logits else None
    t_load = time.perf_counter() - t0
    weight_choice, feature_rows = None, []
    if args.rerank_weight_from_dev:
        weight_choice, dev_candidates = _rerank_weight_from_dev(args, ds, retriever)
        if args.rerank_features:
            from engine.rerank_features import SavedHead

            split = args.rerank_weight_from_dev
            feature_rows = [(split, qid, SavedHead(c, ())) for qid, c in dev_candidates.items()]
        retriever.rerank_weight, retriever.rerank_bm25_weight = weight_choice.weight, weight_choice.bm25_weight
    else:
        retriever.rerank_weight, retriever.rerank_bm25_weight = args.rerank_weight, args.rerank_bm25_weight
    t0 = time.perf_counter()
    hits = _search_all(retriever, questions, args.k, args.retriever, args.rerank_depth)
    t_search = time.perf_counter() - t0
    rankings = {q.id: [h.passage.id for h in hs] for q, hs in zip(questions, hits)}
    result = score_rankings(rankings, questions, qrels, ds.corpus)
    out = {
        **metrics_output(result),
        "config": {
            "data": str(args.data),
            "split": args.split,
            "retriever": args.retriever,
            "model": args.model or "packaged all-MiniLM-L6-v2" if args.retriever != "bm25" else None,
            "reranker": args.reranker,
            "rerank_max_length": retriever.reranker.config.max_length if retriever.reranker else None,
            "rerank_depth": args.rerank_depth,
            "rerank_weight": retriever.rerank_weight if args.rerank_depth else None,
            "rerank_bm25_weight": retriever.rerank_bm25_weight if args.rerank_depth else None,
            "rerank_weight_choice": (
                choice_config(weight_choice, args.rerank_weight_from_dev) if weight_choice else None
            ),
            "index_factory": args.index_factory,
            "passage_max_length": retriever.dense.passage_encoder.max_length if retriever.dense else None,
            "k": args.k,
            "corpus_size": len(ds.corpus),
        },
        "seconds": {"load": round(t_load, 2), "search": round(t_search, 2)},
    }
    if reuse is not None:
        out["config"]["rerank_logits_from"] = reuse | {
            "pairs_reused": retriever.reranker.reused,
            "pairs_scored": retriever.reranker.scored,
        }
        log.info(
            "re-ranking: %d pairs' logits reused from %s, %d scored",
            retriever.reranker.reused,
            ", ".join(args.rerank_logits_from),
            retriever.reranker.scored,
        )
    if baseline is not None:
        paired = paired_mrr10(baseline[0], result)
        out["paired_with"] = {"file": args.paired_with, "against": baseline[1]} | paired
    if args.rerank_features:
        from engine.rerank_features import write_features

        feature_rows += _feature_rows(retriever, args.split, questions, hits)
        config = out["config"] | {"splits": sorted({r[0] for r in feature_rows})}
        n = write_features(args.rerank_features, ds.corpus.fingerprint(), config, feature_rows)
        log.info("re-ranking features of %d questions written to %s", n, args.rerank_features)
    if args.per_question:
        write_per_question(args.per_question, args.split, fingerprint, out["config"], result)
    text = json.dumps(out, indent=2)
    if args.output:
        write_json(args.output, out)
    print(text)
    return 0


PER_QUESTION_FORMAT = "rocketqa-workbench/evaluate-per-question/1"


def write_per_question(path: str, split: str, fingerprint: str, config: dict, result) -> None:
    """An EvalResult with its per-question ranks, for a later `--paired-with`."""
    write_json(
        path,
        {
            "format": PER_QUESTION_FORMAT,
            "split": split,
            "corpus_fingerprint": fingerprint,
            "config": config,
            "result": result.to_dict(),
        },
    )


def write_json(path: str, obj: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def read_per_question(path: str, split: str, fingerprint: str, questions) -> tuple:
    """The EvalResult stored by `evaluate --per-question` in `path` and its retriever, model and
    reranker; a clear error when it is not such a file, or was made on another split or corpus, or
    shares no question with `questions`."""
    from engine.metrics import EvalResult

    try:
        stored = json.loads(Path(path).read_text())
        if stored.get("format") != PER_QUESTION_FORMAT:
            raise ValueError(f"format {stored.get('format')!r}, expected {PER_QUESTION_FORMAT!r}")
        base = EvalResult(**stored["result"])
        if not isinstance(base.per_question, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("first_relevant_rank", 0), int | float)
            for v in base.per_question.values()
        ):
            raise ValueError("its per_question is not a mapping of question id to ranks")
    except OSError as e:
        raise ValueError(f"--paired-with {path}: cannot read it ({e.strerror or e})") from e
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"--paired-with {path}: not a file written by `evaluate --per-question` ({e})") from e
    if stored.get("split") != split:
        raise ValueError(f"--paired-with {path} evaluated split {stored.get('split')!r}, this evaluates {split!r}")
    if stored.get("corpus_fingerprint") != fingerprint:
        raise ValueError(f"--paired-with {path} was evaluated on another corpus (its fingerprint differs)")
    if not set(base.per_question) & {q.id for q in questions}:
        raise ValueError(f"--paired-with {path} shares no question with split {split!r}")
    config = stored.get("config") or {}
    return base, {k: config.get(k) for k in ("retriever", "model", "reranker", "rerank_depth")}


def cmd_index(args: argparse.Namespace) -> int:
    from engine.cache import cache_dir, cached_index, merge_shards
    from engine.index import DenseIndex

    ds = _load(args.data)
    encoder = _encoder(args)
    t0 = time.perf_counter()
    if args.from_shards:
        directory, count = args.from_shards.rsplit(":", 1) if ":" in args.from_shards else (args.from_shards, None)
        count = int(count) if count else len(list(Path(directory).glob("shard-*-of-*.json")))
        vectors = merge_shards(directory, count, ds.corpus, model=encoder.fingerprint())
        index = DenseIndex.build(vectors, ds.corpus.ids, args.index_factory)
        target = cache_dir(encoder, ds.corpus, args.cache) / f"index-{args.index_factory.replace(',', '_')}"
        index.save(target)
    else:
        index = cached_index(encoder, ds.corpus, factory=args.index_factory, root=args.cache)
        target = cache_dir(encoder, ds.corpus, args.cache)
    print(
        json.dumps(
            {
                "passages": len(index),
                "factory": index.factory,
                "dim": index.dim,
                "cache": str(target),
                "seconds": round(time.perf_counter() - t0, 2),
            },
            indent=2,
        )
    )
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from engine.cache import Shard, encode_shard

    ds = _load(args.data)
    encoder = _encoder(args)
    path = encode_shard(encoder, ds.corpus, Shard.parse(args.shard), args.output)
    print(f"wrote {path}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    _check_rerank_weights(args)
    ds = _load(args.data)
    retriever = _retriever(args, ds.corpus, show_progress=False)
    retriever.rerank_weight, retriever.rerank_bm25_weight = args.rerank_weight, args.rerank_bm25_weight
    hits = retriever.search(args.question, k=args.k, mode=args.retriever, rerank_depth=args.rerank_depth)
    if args.json:
        print(json.dumps([{**asdict(h), "passage": asdict(h.passage)} for h in hits], indent=2))
        return 0
    for h in hits:
        scores = [
            f"{name}={v:.4f}"
            for name, v in (
                ("dense", h.dense_score),
                ("bm25", h.bm25_score),
                ("ce_prob", h.ce_prob),
                ("rerank", h.rerank_score if retriever.rerank_weight or retriever.rerank_bm25_weight else None),
            )
            if v is not None
        ]
        print(f"{h.rank:>3}. [{h.passage.id}] {' '.join(scores)}")
        print(f"     {h.passage.title}: {h.passage.text[:160]}{'…' if len(h.passage.text) > 160 else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine", description="RocketQA workbench engine: retrieval, evaluation, training."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "evaluate", help="retrieve for every question of a split and compute R@k, MRR@10, nDCG@10, Acc@k"
    )
    _data_args(p)
    _model_args(p)
    p.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    p.add_argument("--retriever", choices=["bm25", "dense", "hybrid"], default="dense")
    p.add_argument("--reranker", default=None, help="cross-encoder directory or hub id to re-rank with")
    p.add_argument(
        "--rerank-max-length",
        type=int,
        default=None,
        help="cross-encoder tokens per (question, passage) pair at inference (default: what it was trained with)",
    )
    p.add_argument("--rerank-depth", type=int, default=0, help="re-rank the top-N with the cross-encoder (0 = off)")
    p.add_argument(
        "--rerank-weight",
        type=float,
        default=0.0,
        help="re-ranked order: cross-encoder logit + this x dense score (default 0: the cross-encoder alone)",
    )
    p.add_argument(
        "--rerank-bm25-weight",
        type=float,
        default=0.0,
        help="... + this x BM25 score (default 0; loads a BM25 index also with --retriever dense)",
    )
    p.add_argument(
        "--rerank-onnx",
        action="store_true",
        help="score with the cross-encoder's fp32 ONNX Runtime copy (CPU: the same logits, about 2x faster)",
    )
    p.add_argument(
        "--rerank-weight-from-dev",
        default=None,
        metavar="SPLIT",
        help="choose --rerank-weight on this split (e.g. dev) by MRR@10 over engine.fusion.RERANK_WEIGHTS",
    )
    p.add_argument(
        "--rerank-bm25",
        action="store_true",
        help="with --rerank-weight-from-dev: also choose the BM25 share (engine.fusion.RERANK_BM25_WEIGHTS)",
    )
    p.add_argument(
        "--rerank-grid-extend",
        type=int,
        default=0,
        metavar="N",
        help="with --rerank-weight-from-dev: while the dev choice is a share's largest weight, double that "
        "share's largest weight, at most N times (no extra scoring; default 0 = the fixed grid)",
    )
    rerank_fit_arg(p, "the --rerank-weight-from-dev split")
    p.add_argument("--k", type=int, default=100, help="hits per question (default 100, the deepest metric)")
    p.add_argument("--output", default=None, help="write the metrics JSON here")
    p.add_argument(
        "--per-question",
        default=None,
        metavar="FILE",
        help="also write each question's ranks (first relevant, answer) here, for a later --paired-with",
    )
    p.add_argument(
        "--rerank-features",
        metavar="FILE",
        default=None,
        help="also write every re-ranked head (dev and evaluated split) with its dense and BM25 scores and "
        "cross-encoder logits here (JSON Lines, engine.rerank_features), for `rerank-mix`",
    )
    p.add_argument(
        "--rerank-logits-from",
        nargs="+",
        metavar="FILE",
        default=None,
        help="reuse the cross-encoder logits that earlier `--rerank-features` files hold (the same cross-encoder "
        "and corpus, any first stage): only pairs not in them are scored; a sample of saved pairs is scored "
        "again first and a file whose logits differ is refused",
    )
    p.add_argument(
        "--paired-with",
        default=None,
        metavar="FILE",
        help="compare with an earlier `--per-question` file of the same split and corpus: MRR@10 difference "
        "per question (this minus that), its 95%% interval and a verdict (better / worse / within noise)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("index", help="build (or load from cache) the dense index of a corpus")
    _data_args(p)
    _model_args(p)
    p.add_argument(
        "--from-shards",
        default=None,
        metavar="DIR[:N]",
        help="merge embeddings written by `encode --shard i/N` instead of encoding",
    )
    _int8_args(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("encode", help="encode one shard of a corpus (run i/N in N processes or machines)")
    _data_args(p)
    _model_args(p)
    p.add_argument("--shard", required=True, metavar="I/N", help="which slice, e.g. 0/4")
    p.add_argument("--output", required=True, help="directory for shard files")
    _int8_args(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("search", help="search one question and print the hits")
    _data_args(p)
    _model_args(p)
    p.add_argument("question")
    p.add_argument("--retriever", choices=["bm25", "dense", "hybrid"], default="dense")
    p.add_argument("--reranker", default=None)
    p.add_argument("--rerank-depth", type=int, default=0)
    p.add_argument("--rerank-weight", type=float, default=0.0, help="cross-encoder logit + this x dense score")
    p.add_argument("--rerank-bm25-weight", type=float, default=0.0, help="... + this x BM25 score")
    p.add_argument("--rerank-onnx", action="store_true", help="score with the cross-encoder's fp32 ONNX Runtime copy")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.set_defaults(func=cmd_search)

    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from engine.quiet import quiet_third_party

    quiet_third_party()
    try:
        return args.func(args) or 0
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        # DataError, QueryError, IndexLoadError, missing files: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
