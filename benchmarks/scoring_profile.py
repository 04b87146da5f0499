"""Where the time of cross-encoder scoring goes: tokenising, padding, the model, or the whole call.

Steps 3 and 4 score hundreds of thousands of (question, passage) pairs. On one H200 that ran at
about 700 pairs/s (README, "Measured: one H200"), far below what the GPU computes, and it was never
profiled. This script times, on the device models go to (`ROCKETQA_DEVICE`, else a GPU when there is
one), over the same pairs:

- `tokenise`: the tokenizer alone, every pair once, as `CrossEncoder.logits` does;
- `pad`: cutting the tokenised pairs into length-sorted batches and padding them to tensors;
- `model`: the forward pass alone on those ready batches (fp32), with the device synchronised;
- `model_bf16`: the same under bf16 autocast (CUDA only; its largest logit difference to fp32 is
  reported, since steps 3 and 4 decide on thresholds);
- `logits`: `CrossEncoder.logits` end to end, the way the pipeline calls it.

Each is reported in pairs/s; the first three together should account for `logits`.

    python benchmarks/scoring_profile.py --data ../shared/data/squad-v1.1-dev --pairs 4096 \
        --max-length 384 --batch-size 256 [--model DIR] [--output FILE.json]

Pairs: each question of the split with its gold passage and seeded random passages, so the lengths
are those of the corpus.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench_timing import emit_json  # noqa: E402
from engine.cross_encoder import CrossEncoder, CrossEncoderConfig  # noqa: E402
from engine.encoder import LENGTH_CHUNK, batch_token_budget, inference_batches  # noqa: E402
from engine.readers import load_any  # noqa: E402


def make_pairs(ds, split: str, n: int, seed: int) -> tuple[list[str], list]:
    """n (question, passage) pairs: each question of `split` with its gold passage, then random ones."""
    questions, qrels = ds.split(split)
    if not questions:
        raise ValueError(f"split {split!r} has no questions")
    rng = random.Random(seed)
    ids = ds.corpus.ids
    qs, ps = [], []
    while len(qs) < n:
        for q in questions:
            gold = [pid for pid, grade in qrels.get(q.id, {}).items() if grade > 0 and pid in ds.corpus]
            pid = gold[0] if gold and len(qs) < len(questions) else ids[rng.randrange(len(ids))]
            qs.append(q.text)
            ps.append(ds.corpus[pid])
            if len(qs) == n:
                break
    return qs, ps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(ce: CrossEncoder, questions: list[str], passages: list, batch_size: int) -> dict:
    device = ce.device
    texts = [ce.passage_text(p) for p in passages]
    kwargs = {"truncation": "only_second", "max_length": ce.config.max_length}
    n = len(questions)

    t0 = time.perf_counter()
    chunks = [
        dict(ce.tokenizer(questions[s : s + LENGTH_CHUNK], texts[s : s + LENGTH_CHUNK], **kwargs))
        for s in range(0, n, LENGTH_CHUNK)
    ]
    tokenise = time.perf_counter() - t0

    t0 = time.perf_counter()
    batches, order = [], []  # order: the pairs' indices in batch order
    for start, features in zip(range(0, n, LENGTH_CHUNK), chunks):
        lengths = [len(ids) for ids in features["input_ids"]]
        for idx in inference_batches(lengths, batch_size, batch_token_budget(device)):
            rows = {key: [values[i] for i in idx] for key, values in features.items()}
            batches.append(dict(ce.tokenizer.pad(rows, padding=True, return_tensors="pt")))
            order.extend(idx + start)
    pad = time.perf_counter() - t0
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)

    def forward(autocast: bool) -> tuple[float, np.ndarray]:
        out = []
        ce.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            _sync(device)
            t0 = time.perf_counter()
            for b in batches:
                b = {k: v.to(device) for k, v in b.items()}
                out.append(ce.model(**b).logits.squeeze(-1).float())
            _sync(device)
            seconds = time.perf_counter() - t0
        return seconds, torch.cat(out).cpu().numpy()

    forward(False)  # warm-up: kernels, allocator
    model, fp32 = forward(False)
    result = {
        "device": str(device),
        "pairs": n,
        "max_length": ce.config.max_length,
        "batch_size": batch_size,
        "batches": len(batches),
        "tokens": tokens,
        "padding_share": round(1 - tokens / padded, 4) if padded else 0.0,
        "seconds": {"tokenise": round(tokenise, 3), "pad": round(pad, 3), "model": round(model, 3)},
    }
    if device.type == "cuda":
        bf16, low = forward(True)
        result["seconds"]["model_bf16"] = round(bf16, 3)
        result["bf16_max_abs_logit_diff"] = round(float(np.abs(low - fp32).max()), 4)

    _sync(device)
    t0 = time.perf_counter()
    logits = ce.logits(questions, passages, batch_size=batch_size)
    _sync(device)
    result["seconds"]["logits"] = round(time.perf_counter() - t0, 3)
    # the same pairs in the same batches: the end-to-end call must give the forward's logits
    result["logits_max_abs_diff"] = float(np.abs(logits[order] - fp32).max())
    result["pairs_per_second"] = {k: round(n / v, 1) if v > 0 else None for k, v in result["seconds"].items()}
    host = result["seconds"]["tokenise"] + result["seconds"]["pad"]
    result["host_share_of_logits"] = (
        round(host / result["seconds"]["logits"], 3) if result["seconds"]["logits"] else None
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="BEIR data directory")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--model", default="", help="cross-encoder directory or hub id (default: packaged MiniLM)")
    ap.add_argument("--pairs", type=int, default=4096)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's)")
    ap.add_argument("--output", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.pairs < 1 or args.batch_size < 1 or args.max_length < 8:
        ap.error("--pairs and --batch-size must be at least 1, --max-length at least 8")
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_any(args.data)
    if args.model and Path(args.model, "cross_encoder.json").is_file():
        ce = CrossEncoder.load(args.model, max_length=args.max_length)
    else:
        ce = CrossEncoder.build(CrossEncoderConfig(model=args.model, max_length=args.max_length))
    questions, passages = make_pairs(ds, args.split, args.pairs, args.seed)
    result = profile(ce, questions, passages, args.batch_size)
    return emit_json(result, args.output)


if __name__ == "__main__":
    sys.exit(main())
