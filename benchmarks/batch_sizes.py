"""Inference batch size on a CPU: re-ranking a top-20 and encoding passages, per runtime.

The measurement behind `engine.encoder.CPU_BATCH_TOKENS` and the fp32 ONNX Runtime path. For each
batch size it times, on the same questions and passages:
- re-ranking: one question against 20 passages drawn at random from the corpus (as a dense top-20
  is: lengths vary), pairs sorted by token length, cut into batches of B (B = 20: one padded batch);
  the cross-encoder in PyTorch fp32, PyTorch dynamic int8, ONNX Runtime fp32 and int8;
- passage encoding: the corpus's first passages sorted by length, batches of B, PyTorch fp32.
The cross-encoder is the packaged MiniLM with a fresh head unless --cross-encoder names one: speed
does not depend on the weights.

    python benchmarks/batch_sizes.py --data ../shared/data/squad-v1.1-dev [--questions 15]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.cross_encoder import CrossEncoder, CrossEncoderConfig  # noqa: E402
from engine.encoder import TextEncoder, default_model_path, inference_batches, token_lengths  # noqa: E402
from engine.quantize import QuantizeConfig, onnx_cross_encoder, quantize_cross_encoder  # noqa: E402
from engine.readers import load_any  # noqa: E402

BATCHES = (1, 2, 4, 8, 20)


def rerank_ms(ce: CrossEncoder, sets: list[tuple[str, list]], batch: int) -> float:
    """Median ms to score one question's passages in length-sorted batches of `batch` (no token cap)."""
    times = []
    for q, passages in sets:
        texts = [ce.passage_text(p) for p in passages]
        t0 = time.perf_counter()
        lengths = token_lengths(
            ce.tokenizer, [q] * len(texts), texts, truncation="only_second", max_length=ce.config.max_length
        )
        with torch.inference_mode():
            for idx in inference_batches(lengths, batch):
                ce.forward([q] * len(idx), [passages[i] for i in idx])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="BEIR directory (corpus.jsonl + queries.jsonl)")
    p.add_argument("--cross-encoder", default=None, help="cross-encoder directory (default: MiniLM, fresh head)")
    p.add_argument("--questions", type=int, default=15)
    p.add_argument("--passages", type=int, default=512, help="passages for the encoding rows")
    p.add_argument("--output", default=None, help="JSON file for the results")
    args = p.parse_args(argv)

    dataset = load_any(args.data)
    corpus = dataset.corpus.passages
    questions = [q.text for q in dataset.questions.values()]
    rng = random.Random(0)
    sets = [(rng.choice(questions), rng.sample(corpus, 20)) for _ in range(args.questions)]
    torch.manual_seed(0)
    ce = CrossEncoder.load(args.cross_encoder) if args.cross_encoder else CrossEncoder.build(CrossEncoderConfig())
    runtimes = {
        "torch fp32": ce,
        "torch int8": quantize_cross_encoder(ce, QuantizeConfig(backend="torch")),
        "onnx fp32": onnx_cross_encoder(ce),
        "onnx int8": quantize_cross_encoder(ce, QuantizeConfig(backend="onnx")),
    }
    out: dict = {"threads": torch.get_num_threads(), "max_length": ce.config.max_length, "rerank_ms": {}}
    print(f"re-rank top-20, median ms per question ({args.questions} questions, {ce.config.max_length} tokens)")
    print("batch  " + "  ".join(f"{name:>11}" for name in runtimes))
    for batch in BATCHES:
        row = {}
        for name, model in runtimes.items():
            rerank_ms(model, sets[:1], batch)  # warm-up
            row[name] = round(rerank_ms(model, sets, batch), 1)
        out["rerank_ms"][batch] = row
        print(f"{batch:>5}  " + "  ".join(f"{row[n]:>11.0f}" for n in runtimes), flush=True)

    encoder = TextEncoder.from_pretrained(default_model_path(), max_length=128)
    texts = [p.full_text for p in corpus[: args.passages]]
    encoder.encode(texts[:32])
    out["encode_passages_per_s"] = {}
    print(f"passage encoding, PyTorch fp32, 128 tokens, {len(texts)} passages sorted by length")
    for batch in (8, 16, 32, 64):
        lengths = token_lengths(encoder.tokenizer, texts, truncation=True, max_length=128)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for idx in inference_batches(lengths, batch):
                encoder.forward([texts[i] for i in idx])
        rate = len(texts) / (time.perf_counter() - t0)
        out["encode_passages_per_s"][batch] = round(rate, 1)
        print(f"batch {batch:>3}: {rate:6.1f} passages/s", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
