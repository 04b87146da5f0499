"""Command-line entry points of the RocketQA pipeline, added to `python -m engine` by `add_parser`.

- `pipeline run --data DIR --output RUN [--preset cpu|gpu|paper|tiny] [--steps 1,2,3,4] [--undenoised]`
  runs (or resumes) the four steps over a run directory (layout: `engine.pipeline`).
- `pipeline summary RUN [--data DIR] [--json]` prints counts per decision and how often each
  decision was right where gold or answers exist.
- `train-dual` trains one dual-encoder from a split or a train.jsonl; under
  `torchrun --nproc_per_node 2 -m engine train-dual ...` it uses cross-batch negatives.
- `ablation --data DIR --output DIR [--preset cpu] [--seeds 1]` reproduces the paper's ablation
  (`engine.ablation`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)


def _steps(text: str) -> list[int]:
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps must be numbers like 1,2,3,4, got {text!r}") from None
    if not steps or any(s not in (1, 2, 3, 4) for s in steps):
        raise argparse.ArgumentTypeError(f"--steps must name steps among 1,2,3,4, got {text!r}")
    return steps


def _check_grid(args: argparse.Namespace) -> None:
    if args.pos_threshold_grid and not args.pos_threshold_from_dev:
        raise ValueError(
            "--pos-threshold-grid only matters with --pos-threshold-from-dev (it is what that chooses from)"
        )


def build_config(args: argparse.Namespace):
    from engine.config import preset, with_base_model, with_step_overrides

    _check_grid(args)
    config = preset(args.preset)
    if args.base_model:
        config = with_base_model(config, args.base_model)
    if args.undenoised:
        config = replace(config, denoise=replace(config.denoise, denoise=False))
    if args.extra_unlabeled:
        config = replace(config, extra_unlabeled=tuple(str(Path(p).resolve()) for p in args.extra_unlabeled))
    if args.threads:
        config = replace(config, num_threads=args.threads)
    return with_step_overrides(
        config,
        args.cross_max_length,
        args.pos_threshold,
        args.pos_threshold_from_dev or 0.0,
        args.cross_loss or "",
        args.pos_threshold_grid or (),
        args.inverse_cloze,
        _inverse_cloze_scope(args),
        args.cross_inverse_cloze,
        args.passage_max_length,
        args.cross_bm25_negatives,
    )


def _add_cross_loss(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cross-loss",
        choices=["pointwise", "listwise"],
        default=None,
        help="step 2's loss (default: the preset's, pointwise): listwise = softmax over a positive and its "
        "negatives (docs/PIPELINE.md)",
    )


def _probability(flag: str, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number, got {text!r}") from None
        if not (0.0 < value < 1.0 if low_open else 0.0 < value <= 1.0):
            bound = "between 0 and 1 (exclusive)" if low_open else "in (0, 1]"
            raise argparse.ArgumentTypeError(f"{flag} must be a probability {bound}, got {text}")
        return value

    return parse


def _add_pos_threshold_from_dev(parser: argparse.ArgumentParser, note: str) -> None:
    parser.add_argument(
        "--pos-threshold-from-dev",
        type=_probability("--pos-threshold-from-dev"),
        default=None,
        metavar="PRECISION",
        help="step 4: choose the positive threshold on the dev split: the lowest of 0.9-0.995 (never below "
        f"the configured one) whose dev pseudo-positives reach this gold precision (e.g. 0.9); {note}",
    )


def _threshold_grid(text: str) -> tuple[float, ...]:
    parse = _probability("--pos-threshold-grid", low_open=True)
    values = [parse(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"--pos-threshold-grid needs comma-separated probabilities, got {text!r}")
    return tuple(sorted(set(values)))


def _add_pos_threshold_grid(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pos-threshold-grid",
        type=_threshold_grid,
        default=None,
        metavar="P,P,...",
        help="the thresholds --pos-threshold-from-dev chooses from (default 0.9,0.95,0.97,0.98,0.99,0.995), "
        "e.g. 0.9,0.91,0.92,0.93,0.94,0.95,0.96,0.97,0.98,0.99",
    )


def _max_length(flag: str, low: int = 32, zero: str = "the preset's"):
    """A parser of token counts in [low, 512], or 0 for `zero`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {text!r}") from None
        if value != 0 and not low <= value <= 512:
            raise argparse.ArgumentTypeError(f"{flag} must be 0 ({zero}) or {low}-512 tokens, got {value}")
        return value

    return parse


_cross_max_length = _max_length("--cross-max-length")


def _count(flag: str, high: int, unit: str):
    """An argparse type: a whole number from 0 (off) to `high` `unit`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {text!r}") from None
        if not 0 <= value <= high:
            raise argparse.ArgumentTypeError(f"{flag} must be 0 (off) to {high} {unit}, got {value}")
        return value

    return parse


def _pseudo_queries(flag: str):
    return _count(flag, 20, "pseudo-queries per passage")


def _inverse_cloze_scope(args: argparse.Namespace) -> str:
    """The scope asked for ("" = the default), refused without pseudo-queries to apply it to."""
    if args.inverse_cloze_scope and not (args.inverse_cloze or getattr(args, "cross_inverse_cloze", 0)):
        raise ValueError(
            "--inverse-cloze-scope only matters with --inverse-cloze N or --cross-inverse-cloze N (N > 0 "
            "pseudo-queries per passage)"
        )
    return args.inverse_cloze_scope or ""


def _add_inverse_cloze(parser: argparse.ArgumentParser, what: str) -> None:
    from engine.inverse_cloze import SCOPES

    parser.add_argument(
        "--inverse-cloze",
        type=_pseudo_queries("--inverse-cloze"),
        default=0,
        metavar="N",
        help=f"{what} N inverse-cloze pseudo-queries per passage (a word span of one of its sentences; "
        "not in the paper; docs/PIPELINE.md), e.g. 1; 0 = none",
    )
    parser.add_argument(
        "--inverse-cloze-scope",
        choices=SCOPES,
        default=None,
        help="passages that get pseudo-queries: train-titles = the training articles (passages sharing a title "
        "with a training positive; default), positives = training positives only, corpus = every passage",
    )


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from engine.pipeline import open_run, run_pipeline

    logging.getLogger("engine").setLevel(logging.INFO)
    config = build_config(args)
    run = open_run(args.data, args.output, config, eval_test=args.eval_test)
    t0 = time.perf_counter()
    results = run_pipeline(run, args.steps)
    rows = []
    for r in results:
        dev = r.metrics.get(config.dev_split, {})
        rows.append(
            {
                "step": r.name,
                "skipped": r.skipped,
                "seconds": round(r.seconds, 1),
                "dev_MRR@10": dev.get("MRR@10"),
                "dev_R@1": dev.get("R@1"),
                "dev_Acc@20": dev.get("Acc@20"),
            }
        )
    out = {"run": str(run.directory), "steps": rows, "seconds": round(time.perf_counter() - t0, 1)}
    (run.directory / "timings.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


def cmd_pipeline_summary(args: argparse.Namespace) -> int:
    from engine.pipeline import run_summary

    dataset = None
    if args.data:
        from engine.readers import load_any

        dataset = load_any(args.data)
    res = run_summary(args.run, dataset)
    if args.json:
        print(json.dumps({"run": res["run"], **res["summary"].to_dict()}, indent=2))
    else:
        print(res["summary"].text())
    return 0


def cmd_train_dual(args: argparse.Namespace) -> int:
    from engine.distributed import init_from_env, world
    from engine.dual_encoder import DualEncoder, DualEncoderConfig
    from engine.examples import read_examples
    from engine.inverse_cloze import InverseClozeConfig, inverse_cloze_examples
    from engine.pipeline import labelled_examples
    from engine.readers import load_any
    from engine.train_dual import DualTrainConfig, train_dual_encoder

    init_from_env()
    w = world()
    if w.is_main:
        logging.getLogger("engine").setLevel(logging.INFO)
    scope = _inverse_cloze_scope(args) or InverseClozeConfig.scope  # refused before any loading
    ds = load_any(args.data)
    examples = read_examples(args.examples) if args.examples else labelled_examples(ds, args.split)
    pseudo = inverse_cloze_examples(
        ds.corpus, examples, InverseClozeConfig(per_passage=args.inverse_cloze, scope=scope)
    )
    if pseudo and w.is_main:
        log.info("%d inverse-cloze pseudo-queries added to %d examples", len(pseudo), len(examples))
    lengths = {
        k: v
        for k, v in (("query_max_length", args.query_max_length), ("passage_max_length", args.passage_max_length))
        if v
    }
    if args.model and Path(args.model, "dual_encoder.json").is_file():
        model = DualEncoder.load(args.model, **lengths)
    else:
        fresh = {"query_max_length": 32, "passage_max_length": 128, **lengths}
        model = DualEncoder.build(DualEncoderConfig(model=args.model or "", **fresh))
    config = DualTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        hard_negatives_per_question=args.hard_negatives,
        cross_batch=not args.no_cross_batch,
        grad_cache_chunk=args.grad_cache_chunk,
        temperature=args.temperature,
        mixed_precision=args.mixed_precision,
        max_steps=args.max_steps,
        seed=args.seed,
        num_threads=args.threads,
    )
    if args.freeze_word_embeddings:
        from engine.pipeline import freeze_word_embeddings

        freeze_word_embeddings(model)
    result = train_dual_encoder(model, examples + pseudo, ds.corpus, config)
    if not w.is_main:
        return 0
    out_dir = Path(args.output)
    model.save(out_dir / "model")
    from engine.pipeline import _train_summary

    summary = {
        "world_size": w.size,
        "examples": len(examples),
        "inverse_cloze": args.inverse_cloze,  # pseudo-queries per passage asked for
        "pseudo_queries": len(pseudo),
        "inverse_cloze_scope": scope if pseudo else None,
        "config": config.__dict__,
        "train": _train_summary(result),
    }
    if args.eval_split:
        from engine.index import DenseIndex
        from engine.metrics import evaluate_rankings

        vectors = model.encode_passages(ds.corpus.passages)
        index = DenseIndex.build(vectors, ds.corpus.ids)
        questions, qrels = ds.split(args.eval_split)
        res = index.search(model.encode_queries([q.text for q in questions]), 100)
        rankings = {q.id: ids for q, ids in zip(questions, res.ids)}
        answers = {q.id: q.answers for q in questions if q.answers}
        summary[args.eval_split] = {
            k: round(v, 2) for k, v in evaluate_rankings(rankings, qrels, ds.corpus, answers or None).metrics.items()
        }
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2, default=str))
    return 0


def ablation_config(args: argparse.Namespace):
    from engine.ablation import AblationConfig

    _check_grid(args)
    if args.large_batch < 0:
        raise ValueError(f"--large-batch must be 0 (no row) or a number of questions, got {args.large_batch}")
    return AblationConfig(
        preset=args.preset,
        seeds=tuple(range(13, 13 + args.seeds)),
        rerank_depth=args.rerank_depth,
        rerank_max_questions=args.rerank_max_questions,
        rerank_weight_from_dev=not args.no_rerank_weight,
        rerank_bm25=not args.no_rerank_bm25,
        rerank_onnx=args.rerank_onnx,
        rerank_fit=args.rerank_fit,
        cross_batch_processes=args.processes,
        large_batch=args.large_batch,
        inverse_cloze=args.inverse_cloze,
        base_model=args.base_model or "",
        threshold_sweep=not args.no_threshold_sweep,
        cross_max_length=args.cross_max_length,
        pos_precision_target=args.pos_threshold_from_dev or 0.0,
        cross_loss=args.cross_loss or "",
        pos_threshold_grid=args.pos_threshold_grid or (),
        passage_max_length=args.passage_max_length,
    )


def cmd_ablation(args: argparse.Namespace) -> int:
    from engine.ablation import run_ablation

    logging.getLogger("engine").setLevel(logging.INFO)
    config = ablation_config(args)
    table = run_ablation(args.data, args.output, config, reuse_run=args.reuse_run)
    print(table.markdown())
    return 0


def add_parser(subparsers) -> None:
    from engine.cli import rerank_fit_arg

    p = subparsers.add_parser(
        "pipeline", help="run the four RocketQA steps over a run directory, or summarise its decisions"
    )
    sub = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")

    r = sub.add_parser("run", help="run or resume steps 1-4 (a step with DONE is skipped)")
    r.add_argument("--data", required=True, help="data directory (BEIR) with train/dev[/test/unlabeled] qrels")
    r.add_argument("--output", required=True, help="run directory (created, or resumed)")
    r.add_argument("--preset", choices=["tiny", "cpu", "gpu", "paper"], default="cpu")
    r.add_argument("--steps", type=_steps, default=[1, 2, 3, 4], help="comma-separated steps to run (default 1,2,3,4)")
    r.add_argument(
        "--undenoised", action="store_true", help="step 3 keeps plain top-k hard negatives (the paper's ablation)"
    )
    r.add_argument("--eval-test", action="store_true", help="also evaluate each step's model on the test split")
    r.add_argument(
        "--base-model", default="", help="start models from this directory / hub id (default: packaged MiniLM)"
    )
    r.add_argument(
        "--extra-unlabeled",
        nargs="*",
        default=[],
        help="question files (NQ-open, TriviaQA JSONL) added to step 4's pool",
    )
    r.add_argument("--threads", type=int, default=0, help="torch threads (0 = the preset's)")
    r.add_argument(
        "--cross-max-length",
        type=_cross_max_length,
        default=0,
        help="cross-encoder tokens per (question, passage) pair (0 = the preset's: cpu 160, paper 384); "
        "256 trains a better cross-encoder on SQuAD but step 2 takes ~1.6x as long (docs/PIPELINE.md)",
    )
    r.add_argument(
        "--passage-max-length",
        type=_max_length("--passage-max-length"),
        default=0,
        help="dual-encoder tokens per passage, title included (0 = the preset's: cpu and paper 128, gpu 256); on "
        "SQuAD test 15.0%% of answers end beyond token 128 and 1.8%% beyond 256 (benchmarks/passage_truncation.py)",
    )
    r.add_argument(
        "--pos-threshold",
        type=_probability("--pos-threshold", low_open=True),
        default=None,
        help="step 4: pseudo-positive iff cross-encoder probability > this (default: the preset's, paper 0.9)",
    )
    _add_pos_threshold_from_dev(r, "kept when none does")
    _add_pos_threshold_grid(r)
    _add_cross_loss(r)
    _add_inverse_cloze(r, "step 1 also trains on")
    r.add_argument(
        "--cross-inverse-cloze",
        type=_pseudo_queries("--cross-inverse-cloze"),
        default=0,
        metavar="N",
        help="step 2's cross-encoder also trains on N inverse-cloze pseudo-queries per passage (the scope of "
        "--inverse-cloze-scope; negatives drawn as for the questions; never held out for calibration; not in "
        "the paper; docs/PIPELINE.md); 0 = none",
    )
    r.add_argument(
        "--cross-bm25-negatives",
        type=_count("--cross-bm25-negatives", 10, "negatives per positive"),
        default=0,
        metavar="N",
        help="step 2's cross-encoder also trains on N negatives per positive drawn from BM25's top-k (the "
        "lexical near-misses of the hybrid head it re-ranks; answer-bearing ones skipped as for the dense "
        "negatives; not in the paper; docs/PIPELINE.md); 0 = none",
    )
    r.set_defaults(func=cmd_pipeline_run)

    s = sub.add_parser("summary", help="counts per decision and how often each was right (gold / answers)")
    s.add_argument("run", help="run directory")
    s.add_argument("--data", default=None, help="data directory for gold and answers (default: the run's)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_pipeline_summary)

    t = subparsers.add_parser(
        "train-dual", help="train one dual-encoder (torchrun --nproc_per_node N for cross-batch negatives)"
    )
    t.add_argument("--data", required=True, help="data directory (corpus, and the split when --examples is not given)")
    t.add_argument("--split", default="train", help="qrels split to train on (default train)")
    t.add_argument("--examples", default=None, help="train.jsonl to train on instead of a split")
    t.add_argument("--output", required=True, help="directory for model/ and metrics.json")
    t.add_argument("--model", default="", help="start from this model (default: packaged MiniLM)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch-size", type=int, default=32, help="questions per global batch (split over processes)")
    t.add_argument("--lr", type=float, default=3e-5)
    t.add_argument("--hard-negatives", type=int, default=0, help="hard negatives per question from the examples")
    t.add_argument("--temperature", type=float, default=0.05)
    t.add_argument("--no-cross-batch", action="store_true", help="do not gather passages across processes")
    t.add_argument("--grad-cache-chunk", type=int, default=0, help=">0: GradCache sub-batch size")
    t.add_argument("--mixed-precision", action="store_true", help="bf16/fp16 autocast on CUDA")
    t.add_argument("--max-steps", type=int, default=0)
    t.add_argument(
        "--query-max-length",
        type=_max_length("--query-max-length", low=1, zero="the default"),
        default=0,
        help="question tokens (0 = a new model 32, a --model written by this tool its own)",
    )
    t.add_argument(
        "--passage-max-length",
        type=_max_length("--passage-max-length", low=1, zero="the default"),
        default=0,
        help="passage tokens, title included (0 = a new model 128, a --model written by this tool its own)",
    )
    t.add_argument("--seed", type=int, default=13)
    t.add_argument("--threads", type=int, default=0)
    t.add_argument(
        "--freeze-word-embeddings", action="store_true", help="do not train the word-embedding matrix (CPU lever)"
    )
    t.add_argument("--eval-split", default=None, help="evaluate the trained model on this split (rank 0)")
    _add_inverse_cloze(t, "also train on")
    t.set_defaults(func=cmd_train_dual)

    a = subparsers.add_parser(
        "ablation", help="the paper's ablation on a data directory: table (Markdown + JSON) and plot"
    )
    a.add_argument("--data", required=True)
    a.add_argument("--output", required=True, help="directory for runs, ablation.md, ablation.json, ablation.png")
    a.add_argument("--preset", choices=["tiny", "cpu", "gpu", "paper"], default="cpu")
    a.add_argument("--seeds", type=int, default=1, help="seeds per trained row (differences within noise are flagged)")
    a.add_argument("--rerank-depth", type=int, default=20, help="M_D2 + cross-encoder re-ranking depth")
    a.add_argument(
        "--rerank-max-questions", type=int, default=0, help=">0: re-rank a seeded subset of N test questions (CPU time)"
    )
    a.add_argument(
        "--no-rerank-weight",
        action="store_true",
        help="skip the row that re-ranks by logit + w x dense score with w chosen on dev (it scores every dev question)",
    )
    a.add_argument(
        "--no-rerank-bm25",
        action="store_true",
        help="skip the rows with a BM25 share (logit + w x dense + v x BM25, on M_D2's top-k and on the "
        "M_D2 + BM25 hybrid's; w and v chosen on dev)",
    )
    a.add_argument(
        "--rerank-onnx",
        action="store_true",
        help="score the re-ranking rows with the fp32 ONNX Runtime copy of the cross-encoder (same logits, ~2x faster on CPUs)",
    )
    rerank_fit_arg(a, "the dev split")
    a.add_argument("--reuse-run", default=None, help="an existing pipeline run (same preset) to use for the first seed")
    a.add_argument("--processes", type=int, default=2, help="processes for the cross-batch row (torchrun)")
    a.add_argument("--base-model", default="", help="base model (default: packaged MiniLM)")
    a.add_argument("--no-threshold-sweep", action="store_true", help="skip the dev-only threshold check")
    a.add_argument(
        "--cross-max-length",
        type=_cross_max_length,
        default=0,
        help="cross-encoder tokens per pair (0 = the preset's); must match a --reuse-run's",
    )
    a.add_argument(
        "--passage-max-length",
        type=_max_length("--passage-max-length"),
        default=0,
        help="dual-encoder tokens per passage for every trained row and the untrained MiniLM (0 = the preset's); "
        "must match a --reuse-run's",
    )
    _add_pos_threshold_from_dev(a, "must match a --reuse-run's")
    _add_pos_threshold_grid(a)
    a.add_argument(
        "--large-batch",
        type=int,
        default=0,
        metavar="N",
        help="add a row: M_D0 with N questions per batch on one process by GradCache (sub-batches of 32), "
        "e.g. 128; 0 = no such row",
    )
    _add_cross_loss(a)
    a.add_argument(
        "--inverse-cloze",
        type=_pseudo_queries("--inverse-cloze"),
        default=0,
        metavar="N",
        help="add a row: M_D0 also trained on N inverse-cloze pseudo-queries per training-article passage "
        "(not in the paper), e.g. 1; 0 = no such row",
    )
    a.set_defaults(func=cmd_ablation)
