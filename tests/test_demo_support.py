"""Builders shared by the app's tests: a data directory with a hostile passage, a fake pipeline run,
a tiny trained cross-encoder, and services over them. Everything is real and small: the embedded
sample data, the 1-layer MiniLM from conftest, real SQLite files, decision records in the
documented format (docs/FORMATS.md).

(No tests here; the file is named test_demo_* so that it belongs to the app's test files.)
"""

from __future__ import annotations

import json
import shutil
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from demo.config import SAMPLE_DATA, AppConfig

HOSTILE_ID = "zz_hostile"
HOSTILE_TEXT = (
    "Zebra crossings were painted with <script>window.__pwned=1</script> stripes and "
    '<img src=x onerror="window.__pwned=1"> signs to help pedestrians cross the road safely.'
)
HOSTILE_QUESTION = "Why were zebra crossings painted with stripes for pedestrians?"
RUN_ID = "test-run"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data_dir(d: Path) -> Path:
    """A copy of the embedded sample with one passage holding HTML/JS injection attempts."""
    shutil.copytree(SAMPLE_DATA, d)
    with (d / "corpus.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"_id": HOSTILE_ID, "title": "Road <b>safety</b>", "text": HOSTILE_TEXT}) + "\n")
    return d


def _record(
    step: str,
    qid: str,
    qtext: str,
    pid: str,
    rank: int | None,
    prob: float | None,
    decision: str,
    positive: bool = False,
) -> dict:
    return {
        "run_id": RUN_ID, "step": step, "question_id": qid, "question_text": qtext, "passage_id": pid,
        "dense_rank": rank, "dense_score": None if rank is None else 0.9 - 0.01 * rank, "ce_prob": prob,
        "neg_threshold": 0.1, "pos_threshold": 0.9, "decision": decision, "is_labelled_positive": positive,
        "dual_encoder": "test-de", "cross_encoder": "test-ce",
    }  # fmt: skip


def make_run_dir(d: Path, data_dir: Path) -> Path:
    """A finished-looking run: config, corpus copy, step metrics and DONE files, decisions of steps 3 and 4.

    Step 3 (train questions q1, q2): each has its gold positive, two hard negatives (p < 0.1), one
    dropped (0.1 <= p) and one random fill. Step 4 (unlabeled q4, q9): pseudo-positive, pseudo-negative,
    ignored. No model directories: the app uses its configured models.
    """
    d.mkdir(parents=True)
    shutil.copy(data_dir / "corpus.jsonl", d / "corpus.jsonl")
    (d / "config.json").write_text(json.dumps({"data": str(data_dir), "run_id": RUN_ID, "config": {"preset": "tiny"}}))
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (data_dir / "queries.jsonl").open()}
    corpus = [json.loads(line)["_id"] for line in (data_dir / "corpus.jsonl").open()]
    gold = {}
    for split in ("train", "unlabeled"):
        for line in (data_dir / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
            qid, pid, _ = line.split("\t")
            gold.setdefault(qid, pid)
    others = [p for p in corpus if p.startswith("volcano") or p.startswith("coffee") or p.startswith("light")][
        :12
    ] or corpus[-12:]
    step3, step4 = [], []
    for n, qid in enumerate(("q1", "q2")):
        o = others[n * 4 : n * 4 + 4]
        step3 += [
            _record("denoise", qid, queries[qid], gold[qid], 1, 0.97, "positive", True),
            _record("denoise", qid, queries[qid], o[0], 2, 0.03, "hard_negative"),
            _record("denoise", qid, queries[qid], o[1], 3, 0.08, "hard_negative"),
            _record("denoise", qid, queries[qid], o[2], 4, 0.35, "dropped_false_negative"),
            _record("denoise", qid, queries[qid], o[3], None, None, "random_fill"),
        ]
    for n, qid in enumerate(("q4", "q9")):
        o = others[8 + n * 2 : 10 + n * 2]
        step4 += [
            _record("augment", qid, queries[qid], gold[qid], 1, 0.95, "pseudo_positive"),
            _record("augment", qid, queries[qid], o[0], 2, 0.04, "pseudo_negative"),
            _record("augment", qid, queries[qid], o[1], 3, 0.5, "ignored"),
        ]
    for step, records, metrics in (
        ("step1_dual_encoder", None, {"dev": {"MRR@10": 61.5, "R@5": 80.0}, "seconds": {"train": 12.0}}),
        ("step2_cross_encoder", None, {"heldout": {"accuracy": 0.9, "auc": 0.95}, "seconds": {"train": 30.0}}),
        ("step3_denoise", step3, {"dev": {"MRR@10": 63.0, "R@5": 82.0}, "decisions": {"hard_negative": 4}}),
        ("step4_augment", step4, {"dev": {"MRR@10": 64.2, "R@5": 83.0}, "decisions": {"pseudo_positive": 2}}),
    ):
        (d / step).mkdir()
        (d / step / "metrics.json").write_text(json.dumps(metrics))
        (d / step / "DONE").write_text("")
        if records:
            with (d / step / "decisions.jsonl").open("w") as f:
                for r in records:
                    f.write(json.dumps(r) + "\n")
    # the layout engine.ablation writes: metrics (and the seed spread) nested in each row
    (d / "ablation.json").write_text(json.dumps({"rows": [
        {"name": "BM25", "kind": "reference", "metrics": {"MRR@10": 55.0, "R@5": 70.0}, "spread": {}},
        {"name": "M_D2", "kind": "trained", "metrics": {"MRR@10": 64.2, "R@5": 83.0}, "spread": {"MRR@10": 0.4}},
    ], "data": "sample", "split": "test", "seeds": [13, 14], "notes": []}))  # fmt: skip
    return d


def make_trained_ce(d: Path, base_model: str, data_dir: Path, steps: int = 4) -> Path:
    """A cross-encoder from the 1-layer MiniLM trained for a few steps (trained=True; scores need not be good)."""
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
    from engine.examples import TrainExample, examples_from_split
    from engine.readers import load_any
    from engine.train_cross import CrossTrainConfig, train_cross_encoder

    ds = load_any(data_dir)
    ids = ds.corpus.ids
    examples = [
        TrainExample(
            ex.question_id, ex.question, ex.positives, tuple(p for p in ids[i * 3 : i * 3 + 6] if p not in ex.positives)
        )
        for i, ex in enumerate(examples_from_split(ds, "train")[:24])
    ]
    ce = CrossEncoder.build(CrossEncoderConfig(model=base_model, max_length=128))
    train_cross_encoder(
        ce, examples, ds.corpus, CrossTrainConfig(max_steps=steps, batch_size=8, calibration_fraction=0.25)
    )
    assert ce.is_trained
    return ce.save(d)


def make_config(tmp: Path, data_dir: Path, model: str, **overrides) -> AppConfig:
    return replace(
        AppConfig(data=str(data_dir), model=model, db=str(tmp / "annotations.db"), cache=str(tmp / "cache")),
        **overrides,
    )


# --- session fixtures (import them into a test module to use them) --------------------------


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_data) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("demo-run") / RUN_ID, demo_data)


@pytest.fixture(scope="session")
def demo_ce(tmp_path_factory, tiny_model_dir, demo_data) -> Path:
    return make_trained_ce(tmp_path_factory.mktemp("demo-ce") / "ce", tiny_model_dir, demo_data)
