"""Is there anything to denoise? Step 3 with an answer-string oracle in place of the cross-encoder.

RocketQA's denoising drops the retriever's top-ranked non-positives that the cross-encoder believes
are unlabeled positives. Its benefit is bounded by how noisy the undenoised hard negatives are.
This script measures that bound on a labelled split that has answer strings (SQuAD):

- it takes the undenoised step 3 of a run (`ablation` writes one under
  `runs/undenoised-seedS`) and removes every hard negative that contains one of the question's
  answer strings: a DPR-style oracle that knows the answers, which the cross-encoder can only
  approximate;
- it trains M_D1 on those examples exactly as step 3 does (from the run's M_D0, the run's step 3
  settings and seed);
- it evaluates it on the test split next to the undenoised and the cross-encoder-denoised M_D1 of
  the same M_D0, with paired per-question MRR@10 differences (95% intervals).

    python benchmarks/denoise_oracle.py --data ../shared/data/squad-v1.1-dev \
        --run runs/squad-ce256 --undenoised runs/ablation-seeds/runs/undenoised-seed13 \
        --output runs/denoise-oracle

If the oracle does not beat the undenoised model either, no denoiser can on this data at this scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench_timing import emit_json  # noqa: E402
from engine.config import PipelineConfig  # noqa: E402
from engine.dual_encoder import DualEncoder  # noqa: E402
from engine.examples import TrainExample, read_examples, write_examples  # noqa: E402
from engine.index import DenseIndex  # noqa: E402
from engine.metrics import EvalResult, evaluate_rankings, has_answer, paired_mrr10  # noqa: E402
from engine.pipeline import STEP_DIRS, freeze_word_embeddings  # noqa: E402
from engine.readers import load_any  # noqa: E402


def answer_free(
    examples: list[TrainExample], corpus, answers: dict[str, tuple[str, ...]]
) -> tuple[list[TrainExample], dict]:
    """The examples with every negative that contains one of its question's answer strings removed,
    and counts: negatives before and after, and questions left without a hard negative."""
    out, before, removed, empty = [], 0, 0, 0
    for ex in examples:
        kept = tuple(p for p in ex.negatives if not has_answer(corpus[p].text, answers.get(ex.question_id) or ()))
        before += len(ex.negatives)
        removed += len(ex.negatives) - len(kept)
        empty += bool(ex.negatives) and not kept
        out.append(replace(ex, negatives=kept))
    counts = {"negatives": before, "answer_bearing_removed": removed, "questions_left_without_negative": empty}
    return out, counts


def answer_bearing_share(examples: list[TrainExample], corpus, answers: dict) -> float:
    negatives = [(ex.question_id, p) for ex in examples for p in ex.negatives]
    hits = sum(has_answer(corpus[p].text, answers.get(q) or ()) for q, p in negatives)
    return round(hits / len(negatives), 4) if negatives else 0.0


def evaluate(model_dir: Path, ds, split: str, k: int = 100) -> EvalResult:
    model = DualEncoder.load(model_dir)
    questions, qrels = ds.split(split)
    index = DenseIndex.build(model.encode_passages(ds.corpus.passages), ds.corpus.ids)
    res = index.search(model.encode_queries([q.text for q in questions]), k)
    rankings = {q.id: ids for q, ids in zip(questions, res.ids)}
    answers = {q.id: q.answers for q in questions if q.answers}
    return evaluate_rankings(rankings, qrels, ds.corpus, answers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--run", required=True, help="a pipeline run with steps 1 and 3 done (its M_D0 and M_D1)")
    p.add_argument("--undenoised", required=True, help="a run directory whose step 3 ran without denoising")
    p.add_argument("--output", required=True, help="directory for the oracle examples, model and report")
    p.add_argument("--split", default="test", help="evaluation split (default: test)")
    args = p.parse_args(argv)

    run_dir, und_dir, out = Path(args.run), Path(args.undenoised), Path(args.output)
    config = PipelineConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    und_config = json.loads((und_dir / STEP_DIRS[3] / "config.json").read_text())
    if und_config["denoise"]["denoise"]:
        p.error(f"{und_dir} ran step 3 with denoising: give the undenoised run (ablation: runs/undenoised-seedS)")
    for d in (run_dir / STEP_DIRS[1] / "model", run_dir / STEP_DIRS[3] / "model", und_dir / STEP_DIRS[3] / "model"):
        if not d.is_dir():
            p.error(f"{d} is missing: both runs need a finished step 3")
    ds = load_any(args.data)
    questions, _ = ds.split(config.train_split)
    answers = {q.id: tuple(q.answers or ()) for q in questions}
    undenoised = read_examples(und_dir / STEP_DIRS[3] / "train.jsonl")
    denoised = read_examples(run_dir / STEP_DIRS[3] / "train.jsonl")
    oracle, counts = answer_free(undenoised, ds.corpus, answers)
    out.mkdir(parents=True, exist_ok=True)
    write_examples(oracle, out / "train.jsonl")

    model_dir = out / "model"
    t0 = time.perf_counter()
    if not (model_dir / "dual_encoder.json").is_file():  # trained as step 3 trains M_D1
        from engine.train_dual import train_dual_encoder

        previous = config.init_step3 == "previous"
        model = DualEncoder.load(run_dir / STEP_DIRS[1] / "model") if previous else DualEncoder.build(config.dual)
        if config.freeze_word_embeddings:
            freeze_word_embeddings(model)
        train_dual_encoder(model, oracle, ds.corpus, config.step3)
        model.save(model_dir)
    train_seconds = round(time.perf_counter() - t0, 1)

    results = {
        "undenoised": evaluate(und_dir / STEP_DIRS[3] / "model", ds, args.split),
        "denoised (cross-encoder, M_D1)": evaluate(run_dir / STEP_DIRS[3] / "model", ds, args.split),
        "answer-string oracle": evaluate(model_dir, ds, args.split),
    }
    report = {
        "split": args.split,
        "questions": results["undenoised"].num_questions,
        "train_seconds": train_seconds,
        "hard_negatives": {
            "undenoised": {"answer_bearing_share": answer_bearing_share(undenoised, ds.corpus, answers)},
            "denoised (cross-encoder, M_D1)": {
                "answer_bearing_share": answer_bearing_share(denoised, ds.corpus, answers)
            },
            "answer-string oracle": counts,
        },
        "metrics": {
            name: {k: round(v, 2) for k, v in r.metrics.items() if k in ("MRR@10", "R@1", "R@5", "R@20", "Acc@20")}
            for name, r in results.items()
        },
        "paired_vs_undenoised": {
            name: paired_mrr10(results["undenoised"], r) for name, r in results.items() if name != "undenoised"
        },
    }
    return emit_json(report, out / "denoise_oracle.json")


if __name__ == "__main__":
    sys.exit(main())
