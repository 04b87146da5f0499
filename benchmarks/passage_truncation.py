"""How much of each gold passage does a dual-encoder with a given passage length see?

A dual-encoder reads at most `passage_max_length` tokens of "title. text" (128 in the paper and in the
`cpu` preset). Where the answer lies beyond that window, the passage vector cannot hold it. For each
question of a split whose gold passage contains one of its answer strings, this script finds where
the earliest answer occurrence ends, in the model tokenizer's tokens, and counts how many end beyond
each length. The count includes [CLS] and the closing [SEP], so an answer whose count is at most N
survives truncation to N tokens. It also gives the distribution of passage lengths over the corpus.

    python benchmarks/passage_truncation.py --data ../shared/data/squad-v1.1-dev --split test \
        --lengths 128,256 [--model DIR] [--output FILE.json]

Questions whose answer is found in the gold passage only after normalisation (case, punctuation)
are counted apart, not placed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench_timing import emit_json  # noqa: E402
from engine.data import Passage  # noqa: E402
from engine.encoder import default_model_path  # noqa: E402
from engine.metrics import has_answer  # noqa: E402
from engine.readers import load_any  # noqa: E402


def answer_end_token(tokenizer, passage: Passage, answers) -> int | None:
    """The length, special tokens included, of the passage as the dual-encoder reads it ("title. text")
    cut after the earliest answer occurrence: the smallest max length that keeps the answer. None when
    no answer occurs verbatim."""
    text = passage.full_text
    ends = [text.find(a) + len(a) for a in answers if a and text.find(a) >= 0]
    if not ends:
        return None
    return len(tokenizer(text[: min(ends)], add_special_tokens=True)["input_ids"])


def measure(tokenizer, corpus, questions, qrels, lengths) -> dict:
    placed, normalised_only, no_answer = [], 0, 0
    for q in questions:
        gold = [pid for pid, grade in qrels.get(q.id, {}).items() if grade > 0 and pid in corpus]
        if not gold or not q.answers:
            no_answer += 1
            continue
        ends = [answer_end_token(tokenizer, corpus[pid], q.answers) for pid in gold]
        ends = [e for e in ends if e is not None]
        if ends:
            placed.append(min(ends))
        elif any(has_answer(corpus[pid].text, q.answers) for pid in gold):
            normalised_only += 1
        else:
            no_answer += 1
    placed = np.asarray(placed)
    passage_tokens = np.asarray(
        [len(ids) for ids in tokenizer([p.full_text for p in corpus], add_special_tokens=True)["input_ids"]]
    )
    return {
        "questions": len(questions),
        "answer_placed": int(len(placed)),
        "answer_only_after_normalisation": normalised_only,
        "no_answer_in_gold": no_answer,
        "answer_ends_beyond": {
            str(n): {
                "questions": int((placed > n).sum()),
                "percent": round(100.0 * float((placed > n).mean()), 2) if len(placed) else None,
            }
            for n in lengths
        },
        "passage_tokens": {
            "passages": int(len(passage_tokens)),
            "median": float(np.median(passage_tokens)),
            "mean": round(float(passage_tokens.mean()), 1),
            **{f"percent_longer_than_{n}": round(100.0 * float((passage_tokens > n).mean()), 2) for n in lengths},
        },
    }


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="BEIR directory with qrels and answer strings")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lengths", default="128,256", help="comma-separated passage lengths in tokens")
    ap.add_argument("--model", default="", help="whose tokenizer (default: packaged MiniLM)")
    ap.add_argument("--output", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    try:
        lengths = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--lengths must be whole numbers separated by commas, got {args.lengths!r}")
    if not lengths or min(lengths) < 1:
        ap.error(f"--lengths must be positive, got {args.lengths!r}")
    ds = load_any(args.data)
    if args.split not in ds.qrels:
        ap.error(f"--split {args.split!r}: the data has {sorted(ds.qrels)}")
    questions, qrels = ds.split(args.split)
    tokenizer = AutoTokenizer.from_pretrained(args.model or default_model_path())
    out = {"data": args.data, "split": args.split, "tokenizer": args.model or "packaged all-MiniLM-L6-v2"}
    out |= measure(tokenizer, ds.corpus, questions, qrels, lengths)
    return emit_json(out, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
