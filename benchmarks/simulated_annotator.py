"""Simulated-annotator check of the annotation audit on real data (SQuAD v1.1 dev, BEIR layout).

    python benchmarks/simulated_annotator.py --decisions RUN/decisions.jsonl \
        --data ../shared/data/squad-v1.1-dev --db /tmp/sim.db [--sample N]

1. imports the run's decisions into a fresh annotation store;
2. a simulated annotator works through its queue (`annotations.next_items`): a passage is
   grade 3 if it is the question's gold paragraph (qrels) or contains one of its answer strings
   after DPR-style normalisation (lowercase, no punctuation, no articles, collapsed spaces),
   else grade 0;
3. runs the audit (`annotations.precision`);
4. recomputes, without the audit code, which items form each class's random sample (the judged
   prefix of the class's sample order) and their precision straight from gold, and prints both
   side by side, with the precision over the whole class from gold (what the sample estimates).

Exit status 1 if the audit and the direct computation differ in any class.

`--make-fake-decisions OUT` writes a STAND-IN decisions.jsonl (no neural models: BM25 ranks
passages and a made-up monotone function of the BM25 score plays the cross-encoder probability;
the documented thresholds 0.1 / 0.9 are then applied) for developing and testing this script
until the real pipeline has produced a run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import re
import string
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import annotations as ann  # noqa: E402

ANNOTATOR = "simulated"
CLAIMS = {"positive": True, "hard_negative": False, "dropped_false_negative": True, "random_fill": False,
          "pseudo_positive": True, "pseudo_negative": False, "ignored": None}  # fmt: skip


# --- gold -----------------------------------------------------------------------------------


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """DPR/SQuAD answer normalisation: lowercase, drop punctuation and articles, collapse spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_NO_PUNCTUATION)).split())


def load_gold(data: Path) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Gold paragraphs (every qrels split) and normalised answer strings per question id."""
    gold: dict[str, set[str]] = defaultdict(set)
    for tsv in sorted((data / "qrels").glob("*.tsv")):
        with open(tsv, encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if int(row["score"]) > 0:
                    gold[row["query-id"]].add(row["corpus-id"])
    answers: dict[str, list[str]] = {}
    with open(data / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            q = json.loads(line)
            answers[q["_id"]] = [a for a in (normalize(x) for x in q.get("answers", [])) if a]
    return gold, answers


def load_corpus(data: Path) -> dict[str, str]:
    with open(data / "corpus.jsonl", encoding="utf-8") as handle:
        return {r["_id"]: r.get("text", "") for r in map(json.loads, handle)}


class Oracle:
    def __init__(self, data: Path) -> None:
        self.gold, self.answers = load_gold(data)
        self.texts = load_corpus(data)
        self.norm_text: dict[str, str] = {}  # normalised lazily: only judged passages

    def relevant(self, qid: str, pid: str) -> bool:
        if pid in self.gold.get(qid, ()):
            return True
        if pid not in self.norm_text:
            self.norm_text[pid] = f" {normalize(self.texts[pid])} "
        return any(f" {a} " in self.norm_text[pid] for a in self.answers.get(qid, ()))


# --- the check ------------------------------------------------------------------------------


def simulate(decisions: Path, data: Path, db: Path, sample: int | None, batch: int = 50) -> int:
    oracle = Oracle(data)
    store = ann.Store(ann.StoreConfig(db, synchronous="normal"))  # a throwaway store: no fsync per judgment
    started = time.time()
    result = ann.import_decisions(store, decisions, data / "corpus.jsonl")
    print(f"imported {result.n_records} decisions ({result.n_inserted} new) of run(s) {', '.join(result.run_ids)} "
          f"in {time.time() - started:.1f} s")  # fmt: skip
    run_id = result.run_ids[0]
    judged: set[tuple[str, str]] = set()
    started = time.time()
    while sample is None or len(judged) < sample:
        n = batch if sample is None else min(batch, sample - len(judged))
        items = ann.next_items(store, ANNOTATOR, run_id, n=n, config=ann.QueueConfig(overlap=0.0))
        if not items:
            break
        for item in items:
            grade = 3 if oracle.relevant(item.question_id, item.passage_id) else 0
            ann.judge(store, ANNOTATOR, item.question_id, item.passage_id, grade, seconds=1.0,
                      decision_id=item.decision_id, stratum=item.stratum)  # fmt: skip
            judged.add((item.question_id, item.passage_id))
    print(f"simulated annotator judged {len(judged)} items in {time.time() - started:.1f} s")
    audit = ann.precision(store, run_id).set_index("decision")
    direct = direct_precision(decisions, run_id, judged, oracle)
    return compare(audit, direct)


def direct_precision(decisions: Path, run_id: str, judged: set, oracle: Oracle, seed: int = 0) -> dict[str, dict]:
    """Per class, from the decision file and gold only: the judged prefix of the sample order and its precision."""
    by_class: dict[str, list] = defaultdict(list)
    with open(decisions, encoding="utf-8") as handle:
        for line in handle:
            r = json.loads(line)
            if r["run_id"] != run_id:
                continue
            key = "\x1f".join(map(str, (seed, "sample", r["run_id"], r["step"], r["question_id"], r["passage_id"])))
            order = int(hashlib.sha256(key.encode()).hexdigest()[:13], 16)
            by_class[r["decision"]].append((order, r["question_id"], r["passage_id"]))
    out = {}
    for decision, rows in by_class.items():
        rows.sort()
        prefix = []
        for _, q, p in rows:
            if (q, p) not in judged:
                break
            prefix.append((q, p))
        claim = CLAIMS[decision]
        correct = sum(oracle.relevant(q, p) == claim for q, p in prefix) if claim is not None else None
        population = sum(oracle.relevant(q, p) == claim for _, q, p in rows) if claim is not None else None
        out[decision] = {
            "sampled": len(prefix),
            "correct": correct,
            "precision": correct / len(prefix) if prefix and claim is not None else math.nan,
            "population": len(rows),
            "population_precision": population / len(rows) if claim is not None else math.nan,
        }
    return out


def compare(audit, direct: dict[str, dict]) -> int:
    header = f"{'decision':24} {'pop':>6} {'sampled':>7} | {'audit prec':>10} {'95% CI':>15} | {'gold prec':>9} | {'gold, whole class':>17} | ok"
    print(header)
    print("-" * len(header))
    failures = 0
    for decision, d in direct.items():
        a = audit.loc[decision]
        same_n = int(a["sampled"]) == d["sampled"] and int(a["skipped"]) == 0
        ap, dp = float(a["precision"]), d["precision"]
        same_p = (math.isnan(ap) and math.isnan(dp)) or abs(ap - dp) < 1e-12
        ok = same_n and same_p
        failures += not ok
        ci = f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}]" if not math.isnan(ap) else "-"
        print(f"{decision:24} {d['population']:>6} {d['sampled']:>7} | {ap:>10.4f} {ci:>15} | {dp:>9.4f} | "
              f"{d['population_precision']:>17.4f} | {'yes' if ok else 'NO'}")  # fmt: skip
    print("audit == direct computation from gold" if not failures else f"MISMATCH in {failures} class(es)")
    return 1 if failures else 0


# --- stand-in decisions ---------------------------------------------------------------------


def make_fake_decisions(data: Path, out: Path, n_questions: int, top_k: int, seed: int = 0) -> None:
    """STAND-IN for a pipeline run: BM25 ranking, a made-up probability, the documented thresholds."""
    import bm25s
    import numpy as np

    neg_t, pos_t = 0.1, 0.9  # the paper's thresholds (docs/FORMATS.md)
    with open(data / "corpus.jsonl", encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle]
    ids = [c["_id"] for c in corpus]
    with open(data / "queries.jsonl", encoding="utf-8") as handle:
        texts = {q["_id"]: q["text"] for q in map(json.loads, handle)}
    rng = random.Random(seed)
    splits = {}
    for step, split in (("denoise", "train"), ("augment", "unlabeled")):
        with open(data / "qrels" / f"{split}.tsv", encoding="utf-8") as handle:
            qrels = [(r["query-id"], r["corpus-id"]) for r in csv.DictReader(handle, delimiter="\t")]
        qids = sorted({q for q, _ in qrels})
        splits[step] = (sorted(rng.sample(qids, min(n_questions, len(qids)))), {q: p for q, p in qrels})
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([f"{c['title']} {c['text']}" for c in corpus], show_progress=False), show_progress=False
    )
    results = {}
    for step, (qids, _) in splits.items():
        docs, scores = retriever.retrieve(
            bm25s.tokenize([texts[q] for q in qids], show_progress=False), k=top_k, show_progress=False
        )
        results[step] = (docs, scores)
    top1 = np.concatenate([s[:, 0] for _, s in results.values()])
    centre, spread = float(np.median(top1)), float(np.subtract(*np.percentile(top1, [75, 25]))) or 1.0

    def prob(score: float) -> float:  # made-up "cross-encoder": monotone in the BM25 score
        return round(1 / (1 + math.exp(-3 * (score - centre) / spread)), 6)

    run_id = f"fake-bm25-{out.parent.name or 'run'}"
    common = {"run_id": run_id, "neg_threshold": neg_t, "pos_threshold": pos_t, "dual_encoder": "bm25s (stand-in)",
              "cross_encoder": "sigmoid(bm25) (stand-in)"}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out, "w", encoding="utf-8") as handle:
        for step, (qids, gold) in splits.items():
            docs, scores = results[step]
            for i, qid in enumerate(qids):
                ranked = [(rank + 1, ids[int(d)], float(s)) for rank, (d, s) in enumerate(zip(docs[i], scores[i]))]
                probs = {pid: prob(s) for _, pid, s in ranked}
                top = max(ranked, key=lambda r: probs[r[1]])[1]
                has_pseudo = probs[top] > pos_t
                for rank, pid, score in ranked:
                    p = probs[pid]
                    labelled = step == "denoise" and gold[qid] == pid
                    if step == "denoise":
                        decision = (
                            "positive" if labelled else ("hard_negative" if p < neg_t else "dropped_false_negative")
                        )
                    elif has_pseudo and pid == top:
                        decision = "pseudo_positive"
                    elif has_pseudo and p < neg_t:
                        decision = "pseudo_negative"
                    else:
                        decision = "ignored"
                    record = {**common, "step": step, "question_id": qid, "question_text": texts[qid], "passage_id": pid,
                              "dense_rank": rank, "dense_score": round(score, 4), "ce_prob": p, "decision": decision,
                              "is_labelled_positive": labelled}  # fmt: skip
                    handle.write(json.dumps(record) + "\n")
                    n += 1
    print(f"wrote {n} STAND-IN decisions (BM25 + made-up probability) for run {run_id} to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=Path, help="decisions.jsonl of a pipeline run")
    parser.add_argument("--data", type=Path, required=True, help="BEIR data directory (squad-v1.1-dev)")
    parser.add_argument("--db", type=Path, help="annotation database to create (must not exist)")
    parser.add_argument("--sample", type=int, help="stop after judging this many items (default: the whole queue)")
    parser.add_argument("--make-fake-decisions", type=Path, metavar="OUT",
                        help="write a STAND-IN decisions.jsonl (BM25 + made-up probability, not a real pipeline run) and exit")  # fmt: skip
    parser.add_argument("--questions", type=int, default=500, help="stand-in: questions per step (default 500)")
    parser.add_argument("--top-k", type=int, default=20, help="stand-in: passages per question (default 20)")
    args = parser.parse_args(argv)
    if args.make_fake_decisions:
        make_fake_decisions(args.data, args.make_fake_decisions, args.questions, args.top_k)
        return 0
    if not args.decisions or not args.db:
        parser.error("--decisions and --db are required (or --make-fake-decisions OUT)")
    if args.db.exists():
        parser.error(f"{args.db} exists; give a fresh path so the check starts from an empty store")
    return simulate(args.decisions, args.data, args.db, args.sample)


if __name__ == "__main__":
    sys.exit(main())
