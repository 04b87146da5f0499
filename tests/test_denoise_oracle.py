"""benchmarks/denoise_oracle.py: step 3's undenoised hard negatives minus the answer-bearing ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

from engine.config import preset, with_base_model
from engine.data import Corpus, Passage
from engine.examples import TrainExample, read_examples
from engine.metrics import has_answer
from engine.pipeline import STEP_DIRS, open_run, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "demo" / "sample_data"


def _script():
    return load_benchmark("denoise_oracle")


def test_answer_free_removes_exactly_the_negatives_that_hold_an_answer():
    corpus = Corpus(
        [
            Passage("a", "The queen lays the eggs."),
            Passage("b", "Drones are male bees."),
            Passage("c", "Workers build the comb."),
            Passage("d", "Queen Victoria reigned long."),
        ]
    )
    examples = [
        TrainExample("q1", "who lays eggs?", ("a",), ("b", "d", "c")),  # d holds "queen": removed
        TrainExample("q2", "what are male bees?", ("b",), ("a",)),  # nothing to remove
        TrainExample("q3", "who reigned?", ("c",), ("d",)),  # its only negative holds the answer
        TrainExample("q4", "no answers known", ("c",), ("d",)),
    ]
    answers = {"q1": ("queen",), "q2": ("drones",), "q3": ("Victoria",)}
    out, counts = _script().answer_free(examples, corpus, answers)
    assert [e.negatives for e in out] == [("b", "c"), ("a",), (), ("d",)]
    assert [(e.question_id, e.positives) for e in out] == [(e.question_id, e.positives) for e in examples]
    assert counts == {"negatives": 6, "answer_bearing_removed": 2, "questions_left_without_negative": 1}
    assert _script().answer_bearing_share(examples, corpus, answers) == round(2 / 6, 4)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_model_dir):
    """A tiny pipeline run (steps 1-3) and the ablation's undenoised step 3 from its M_D0."""
    from engine.ablation import undenoised_run
    from engine.readers import load_any

    if not (SAMPLE / "qrels" / "train.tsv").is_file():
        pytest.skip(f"{SAMPLE} (the demo's BEIR sample) is not there")
    base = tmp_path_factory.mktemp("oracle")
    config = with_base_model(preset("tiny"), tiny_model_dir)
    ds = load_any(str(SAMPLE))
    run = open_run(str(SAMPLE), base / "run", config, dataset=ds)
    run_pipeline(run, [1, 2, 3])
    und = undenoised_run(str(SAMPLE), ds, base / "run", base / "undenoised", config)
    return base, ds, und


def test_oracle_trains_m_d1_on_answer_free_negatives_and_pairs_it_with_both_models(tiny_runs, capsys):
    base, ds, und = tiny_runs
    out = base / "oracle"
    argv = ["--data", str(SAMPLE), "--run", str(base / "run"), "--undenoised", str(und), "--output", str(out)]
    assert _script().main([*argv, "--split", "dev"]) == 0
    report = json.loads((out / "denoise_oracle.json").read_text())
    assert report == json.loads(capsys.readouterr().out)
    questions, qrels = ds.split("dev")
    assert report["questions"] == len(qrels)
    names = {"undenoised", "denoised (cross-encoder, M_D1)", "answer-string oracle"}
    assert set(report["metrics"]) == names and set(report["paired_vs_undenoised"]) == names - {"undenoised"}
    for paired in report["paired_vs_undenoised"].values():
        assert paired["questions"] == len(qrels) and paired["verdict"] in ("better", "worse", "within noise")
    # the oracle's examples: the undenoised ones, minus every answer-bearing negative
    answers = {q.id: q.answers for q in ds.split("train")[0]}
    written = read_examples(out / "train.jsonl")
    before = read_examples(und / STEP_DIRS[3] / "train.jsonl")
    assert [e.question_id for e in written] == [e.question_id for e in before]
    for w, b in zip(written, before):
        assert w.negatives == tuple(p for p in b.negatives if not has_answer(ds.corpus[p].text, answers[b.question_id]))
    counts = report["hard_negatives"]["answer-string oracle"]
    assert counts["negatives"] == sum(len(e.negatives) for e in before)
    assert counts["answer_bearing_removed"] == counts["negatives"] - sum(len(e.negatives) for e in written)
    assert report["hard_negatives"]["undenoised"]["answer_bearing_share"] == pytest.approx(
        counts["answer_bearing_removed"] / counts["negatives"], abs=1e-4
    )
    saved = {f.name: f.stat().st_mtime_ns for f in (out / "model").iterdir()}
    assert "dual_encoder.json" in saved
    assert _script().main([*argv, "--split", "dev"]) == 0  # a second call reuses the trained model
    assert {f.name: f.stat().st_mtime_ns for f in (out / "model").iterdir()} == saved


def test_a_denoised_run_is_refused_as_the_undenoised_one(tiny_runs, capsys):
    base, _, _ = tiny_runs
    argv = ["--data", str(SAMPLE), "--run", str(base / "run"), "--undenoised", str(base / "run")]
    with pytest.raises(SystemExit) as e:
        _script().main([*argv, "--output", str(base / "x")])
    assert e.value.code == 2 and "ran step 3 with denoising" in capsys.readouterr().err
