"""Filling in the dense scores of a hybrid head before re-ranking: three ways, timed side by side.

A hybrid head (the RRF of the dense model and BM25) holds passages that only BM25 returned. Before
a re-ranking with a dense share, `Retriever.with_scores` gives each of them its inner product with
the question. This times, on the same heads and in alternating repeats:
- `encode`: the question and those passages encoded again, per question (the code before c971dfb);
- `stored`: the passages' vectors looked up in the Flat index (`DenseIndex.stored_vectors`), the
  question still encoded per call (before 4f209a9);
- `stored + vector`: the lookup and the first stage's question vector (as `search_batch` now does).
It checks that all three give the same scores (within 1e-4) before comparing speed.

    python benchmarks/hybrid_rerank_fill.py --data ../shared/data/squad-v1.1-dev \
        [--model DUAL_ENCODER] [--passage-max-length 256] [--questions 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.readers import load_any  # noqa: E402
from engine.retriever import build_retriever  # noqa: E402

DEPTH = 20  # the re-ranked head, as in the README's re-ranking runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="data directory with a dev or test split")
    p.add_argument("--model", default="", help="dual-encoder directory or hub id (default: packaged MiniLM)")
    p.add_argument("--passage-max-length", type=int, default=None)
    p.add_argument("--split", default="dev")
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", default=None, help="embedding/index cache root")
    p.add_argument("--output", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    if args.questions < 1 or args.repeats < 1:
        p.error("--questions and --repeats must be at least 1")

    ds = load_any(args.data)
    questions = [q.text for q in ds.split(args.split)[0][: args.questions]]
    r = build_retriever(ds.corpus, model=args.model, cache_root=args.cache, passage_max_length=args.passage_max_length)
    heads = [hs[:DEPTH] for hs in r.search_batch(questions, k=DEPTH, mode="hybrid")]
    vectors = r.dense.encode_queries(questions)
    bm25_only = sum(h.dense_score is None for hs in heads for h in hs)
    index = r.index

    class NoStore:  # the index without its stored vectors: the retriever encodes, as before c971dfb
        def stored_vectors(self, ids):
            return None

    def encode():
        r.index = NoStore()
        try:
            return [r.with_scores(q, hs, bm25=False) for q, hs in zip(questions, heads)]
        finally:
            r.index = index

    def stored():
        return [r.with_scores(q, hs, bm25=False) for q, hs in zip(questions, heads)]

    def stored_vector():
        return [r.with_scores(q, hs, bm25=False, query_vector=v) for q, hs, v in zip(questions, heads, vectors)]

    ways = {"encode": encode, "stored": stored, "stored + vector": stored_vector}
    reference = [[h.dense_score for h in hs] for hs in encode()]
    diffs = {}
    for name, fn in ways.items():
        got = [[h.dense_score for h in hs] for hs in fn()]
        diffs[name] = max(abs(a - b) for ga, gb in zip(got, reference) for a, b in zip(ga, gb))
        if diffs[name] > 1e-4:
            raise SystemExit(f"{name}: dense scores differ from encoding by {diffs[name]:.2e}")
    times = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / len(questions))
    base = statistics.median(times["encode"])
    rows = []
    print(f"{len(questions)} {args.split} questions, hybrid top-{DEPTH}: {bm25_only} BM25-only passages to fill in")
    print(f"torch threads {torch.get_num_threads()}, passage max length {r.dense.config.passage_max_length}")
    print("| fill-in | ms per question (median of repeats) | ratio to encode | max abs diff |")
    print("|---|---|---|---|")
    for name in ways:
        ms = 1000 * statistics.median(times[name])
        ratio = base / statistics.median(times[name])
        rows.append(
            {"way": name, "ms_per_question": round(ms, 2), "ratio": round(ratio, 2), "max_abs_diff": diffs[name]}
        )
        print(f"| {name} | {ms:.2f} | {ratio:,.1f}x | {diffs[name]:.1e} |")
    if args.output:
        Path(args.output).write_text(
            json.dumps({"questions": len(questions), "bm25_only": bm25_only, "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
