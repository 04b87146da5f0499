"""The four RocketQA steps end to end on a tiny real setup, resume, and bad inputs (engine.pipeline)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from engine.config import PipelineConfig, preset, with_base_model
from engine.data import Corpus, DataError, Dataset, Passage, Question, read_beir
from engine.decisions import read_decisions
from engine.examples import read_examples
from engine.pipeline import (
    STEP_DIRS,
    PipelineError,
    labelled_examples,
    open_run,
    run_pipeline,
    run_summary,
    step3_denoise,
    step4_augment,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "demo" / "sample_data"


@pytest.fixture(scope="module")
def sample() -> Dataset:
    if not (SAMPLE / "qrels" / "unlabeled.tsv").is_file():
        pytest.skip(f"{SAMPLE} (the demo's BEIR sample with train/dev/unlabeled splits) is not there")
    ds = read_beir(SAMPLE)
    # keep the end-to-end test small: 48 training and 20 unlabeled questions
    ds.qrels["train"] = dict(list(ds.qrels["train"].items())[:48])
    ds.qrels["unlabeled"] = dict(list(ds.qrels["unlabeled"].items())[:20])
    return ds


@pytest.fixture(scope="module")
def tiny_config(tiny_model_dir) -> PipelineConfig:
    return with_base_model(preset("tiny"), tiny_model_dir)


def small_dataset(text_suffix: str = "") -> Dataset:
    corpus = Corpus([Passage(f"p{i}", f"passage number {i}{text_suffix}") for i in range(6)])
    questions = {f"q{i}": Question(f"q{i}", f"question {i}") for i in range(3)}
    return Dataset(corpus, questions, {"train": {"q0": {"p0": 1}, "q1": {"p1": 1}, "q2": {"p2": 0}}}, name="small")


def test_config_round_trips_through_json():
    for name in ("tiny", "cpu", "gpu", "paper"):
        cfg = preset(name, extra_unlabeled=("a.jsonl",))
        assert PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        preset("tpu")
    with pytest.raises(ValueError, match="unknown config keys"):
        PipelineConfig.from_dict({"nonsense": 1})


def test_four_steps_end_to_end_then_resume(tmp_path, sample, tiny_config, caplog, capsys):
    caplog.set_level(logging.INFO, logger="engine")
    t0 = time.perf_counter()
    run = open_run(SAMPLE, tmp_path / "run", tiny_config, dataset=sample)
    results = run_pipeline(run)
    elapsed = time.perf_counter() - t0
    assert [r.step for r in results] == [1, 2, 3, 4] and not any(r.skipped for r in results)
    assert elapsed < 180, f"tiny pipeline took {elapsed:.0f} s"
    d = tmp_path / "run"
    assert (d / "config.json").is_file() and (d / "corpus.jsonl").is_file()
    for name in STEP_DIRS.values():
        for f in ("DONE", "metrics.json", "config.json"):
            assert (d / name / f).is_file(), f"{name}/{f}"
        assert (d / name / "model").is_dir()
    m1 = json.loads((d / "step1_dual_encoder" / "metrics.json").read_text())
    assert m1["train"]["loss_end"] < m1["train"]["loss_start"]  # training lowered the loss
    assert {"MRR@10", "R@1", "Acc@20"} <= set(m1["dev"])
    m2 = json.loads((d / "step2_cross_encoder" / "metrics.json").read_text())
    assert m2["train_pairs"] > 0 and m2["heldout"]["heldout"] is not None

    denoise = read_decisions(d / "step3_denoise" / "decisions.jsonl")
    assert {r.decision for r in denoise} <= {"positive", "hard_negative", "dropped_false_negative", "random_fill"}
    for r in denoise:
        if r.decision == "hard_negative":
            assert r.ce_prob < r.neg_threshold and not r.is_labelled_positive
        if r.decision == "dropped_false_negative":
            assert r.ce_prob >= r.neg_threshold
        if r.decision == "random_fill":
            assert r.ce_prob is None and not r.is_labelled_positive
        assert r.run_id == "run" and "@" in r.dual_encoder and "@" in r.cross_encoder
    train3 = read_examples(d / "step3_denoise" / "train.jsonl")
    labelled = labelled_examples(sample, "train")
    assert [e.question_id for e in train3] == [e.question_id for e in labelled]
    negatives = {(r.question_id, r.passage_id) for r in denoise if r.decision in ("hard_negative", "random_fill")}
    assert {(e.question_id, pid) for e in train3 for pid in e.negatives} == negatives

    augment = read_decisions(d / "step4_augment" / "decisions.jsonl")
    assert augment and all(r.step == "augment" and r.ce_prob is not None for r in augment)
    for r in augment:
        if r.decision == "pseudo_positive":
            assert r.ce_prob > r.pos_threshold
        if r.decision == "pseudo_negative":
            assert r.ce_prob < r.neg_threshold
    train4 = read_examples(d / "step4_augment" / "train.jsonl")
    assert len(train4) == len(train3) + sum(r.decision == "pseudo_positive" for r in augment)

    summary = run_summary(d, sample)["summary"]
    assert sum(s.count for s in summary.steps["denoise"]) == len(denoise)
    from engine.cli import main

    assert main(["pipeline", "summary", str(d), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["questions"]["denoise"] == len(labelled)

    # interrupted step 4: steps 1-3 are skipped, step 4 is redone
    mtimes = {s: (d / STEP_DIRS[s] / "DONE").stat().st_mtime_ns for s in (1, 2, 3)}
    (d / "step4_augment" / "DONE").unlink()
    (d / "step4_augment" / "partial-leftover").write_text("x")
    run = open_run(SAMPLE, d, tiny_config, dataset=sample)
    again = run_pipeline(run)
    assert [(r.step, r.skipped) for r in again] == [(1, True), (2, True), (3, True), (4, False)]
    assert {s: (d / STEP_DIRS[s] / "DONE").stat().st_mtime_ns for s in (1, 2, 3)} == mtimes
    assert (d / "step4_augment" / "DONE").is_file() and not (d / "step4_augment" / "partial-leftover").exists()
    assert any("step1_dual_encoder: DONE, skipped" in m for m in caplog.messages)

    # the positive threshold chosen on dev agrees with a hand count over the same dev pairs
    from engine.cross_encoder import CrossEncoder
    from engine.denoise import retrieve, score
    from engine.dual_encoder import DualEncoder
    from engine.pipeline import dense_index, dev_pos_threshold

    run.config = replace(run.config, augment=replace(run.config.augment, pos_precision_target=0.5, pos_min_support=1))
    m1, ce = DualEncoder.load(d / STEP_DIRS[3] / "model"), CrossEncoder.load(d / STEP_DIRS[2] / "model")
    index = dense_index(run, m1)
    choice = dev_pos_threshold(run, m1, index, ce)
    questions, qrels = sample.split("dev")
    rankings = retrieve(m1, index, questions, run.config.augment.top_k)
    probs = score(ce, [(q.text, pid) for q, r in zip(questions, rankings) for pid in r.ids], sample.corpus).tolist()
    best, i = [], 0
    for q, r in zip(questions, rankings):
        p, pid = max(zip(probs[i : i + len(r.ids)], r.ids), key=lambda x: x[0])
        best.append((p, qrels[q.id].get(pid, 0) > 0))
        i += len(r.ids)
    assert choice["questions"] == len(questions) and choice["split"] == "dev"
    for row in choice["table"]:
        chosen = [g for p, g in best if p > row["pos_threshold"]]
        assert row["pseudo_positives"] == len(chosen)
        if chosen:
            assert row["precision_gold"] == round(sum(chosen) / len(chosen), 4)
    eligible = [r["pos_threshold"] for r in choice["table"] if r["pseudo_positives"] and r["precision_gold"] >= 0.5]
    assert choice["pos_threshold"] == (min(eligible) if eligible else run.config.augment.pos_threshold)


def test_run_directory_of_another_corpus_or_config_is_refused(tmp_path, tiny_config):
    open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset())
    with pytest.raises(PipelineError, match="another corpus"):
        open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset(" changed"))
    other = replace(tiny_config, denoise=replace(tiny_config.denoise, neg_threshold=0.2))
    with pytest.raises(PipelineError, match="another config.*neg_threshold"):
        open_run("small", tmp_path / "r", other, dataset=small_dataset())


def test_a_run_made_before_a_config_field_existed_reopens_with_its_old_behaviour(tmp_path, tiny_config):
    open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset())
    meta = json.loads((tmp_path / "r" / "config.json").read_text())
    del meta["config"]["step2"]["loss"]  # as written before CrossTrainConfig.loss existed
    (tmp_path / "r" / "config.json").write_text(json.dumps(meta))
    open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset())  # pointwise: what it did
    listwise = replace(tiny_config, step2=replace(tiny_config.step2, loss="listwise"))
    with pytest.raises(PipelineError, match="another config.*step2.loss: 'pointwise' -> 'listwise'"):
        open_run("small", tmp_path / "r", listwise, dataset=small_dataset())
    del meta["config"]["inverse_cloze"]  # as written before step 1 had pseudo-queries: it had none
    (tmp_path / "r" / "config.json").write_text(json.dumps(meta))
    open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset())
    pseudo = replace(tiny_config, inverse_cloze=replace(tiny_config.inverse_cloze, per_passage=1))
    with pytest.raises(PipelineError, match="another config.*inverse_cloze.per_passage: 0 -> 1"):
        open_run("small", tmp_path / "r", pseudo, dataset=small_dataset())
    del meta["config"]["ce_sampling"]["inverse_cloze"]  # before step 2 could have pseudo-queries
    (tmp_path / "r" / "config.json").write_text(json.dumps(meta))
    open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset())
    pseudo = replace(tiny_config, ce_sampling=replace(tiny_config.ce_sampling, inverse_cloze=1))
    with pytest.raises(PipelineError, match="another config.*ce_sampling.inverse_cloze: 0 -> 1"):
        open_run("small", tmp_path / "r", pseudo, dataset=small_dataset())
    del meta["config"]["ce_sampling"]["bm25_negatives_per_positive"]  # before step 2 drew BM25 negatives
    (tmp_path / "r" / "config.json").write_text(json.dumps(meta))
    open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset())
    bm25 = replace(tiny_config, ce_sampling=replace(tiny_config.ce_sampling, bm25_negatives_per_positive=1))
    with pytest.raises(PipelineError, match="another config.*ce_sampling.bm25_negatives_per_positive: 0 -> 1"):
        open_run("small", tmp_path / "r", bm25, dataset=small_dataset())


def test_step1_trains_on_inverse_cloze_pseudo_queries_of_the_training_articles(tmp_path, tiny_beir, tiny_config):
    from engine.inverse_cloze import inverse_cloze_examples
    from engine.readers import load_any

    ds = load_any(str(tiny_beir))
    config = replace(tiny_config, inverse_cloze=replace(tiny_config.inverse_cloze, per_passage=1))
    config = replace(config, step1=replace(config.step1, max_steps=0))  # one whole epoch: every example seen
    run = open_run(str(tiny_beir), tmp_path / "run", config, dataset=ds)
    run_pipeline(run, [1])
    metrics = json.loads((tmp_path / "run" / STEP_DIRS[1] / "metrics.json").read_text())
    pseudo = inverse_cloze_examples(ds.corpus, labelled_examples(ds, "train"), config.inverse_cloze)
    # the training questions' articles (Honeybee, Lighthouse): their passages, one pseudo-query each
    assert sorted(e.positives[0] for e in pseudo) == sorted(
        p.id for p in ds.corpus if p.title in ("Honeybee", "Lighthouse")
    )
    assert (metrics["train_questions"], metrics["pseudo_queries"]) == (2, len(pseudo))
    assert metrics["train"]["examples_seen"] == 2 + len(pseudo)
    step_config = json.loads((tmp_path / "run" / STEP_DIRS[1] / "config.json").read_text())
    assert step_config["inverse_cloze"]["per_passage"] == 1


def _step2_beside_plain(tmp_path, tiny_beir, plain_config, config) -> Dataset:
    """Steps 1-2 with `plain_config` in tmp_path/plain, then step 2 with `config` in tmp_path/run on
    the same M_D0 (step 1 copied); returns the dataset."""
    from engine.readers import load_any

    ds = load_any(str(tiny_beir))
    run_pipeline(open_run(str(tiny_beir), tmp_path / "plain", plain_config, dataset=ds), [1, 2])
    run = open_run(str(tiny_beir), tmp_path / "run", config, dataset=ds)
    shutil.copytree(tmp_path / "plain" / STEP_DIRS[1], tmp_path / "run" / STEP_DIRS[1])  # the same M_D0
    run_pipeline(run, [2])
    return ds


def test_step2_trains_on_pseudo_queries_never_held_out_and_leaves_the_questions_sampling_alone(
    tmp_path, tiny_beir, tiny_config, caplog
):
    from engine.inverse_cloze import inverse_cloze_examples

    caplog.set_level(logging.INFO, logger="engine.train_cross")

    config = replace(tiny_config, ce_sampling=replace(tiny_config.ce_sampling, inverse_cloze=1))
    ds = _step2_beside_plain(tmp_path, tiny_beir, tiny_config, config)
    pseudo = inverse_cloze_examples(
        ds.corpus, labelled_examples(ds, "train"), replace(config.inverse_cloze, per_passage=1)
    )
    assert len(pseudo) == 4  # the training articles' passages (Honeybee, Lighthouse), one each
    metrics = json.loads((tmp_path / "run" / STEP_DIRS[2] / "metrics.json").read_text())
    assert metrics["pseudo_queries"] == len(pseudo) and metrics["train_questions"] == 2
    # 2 questions: 1 held out, 1 trained on, plus every pseudo-query (never held out)
    held = metrics["heldout"]
    assert (held["heldout_questions"], held["train_questions"], held["train_only_examples"]) == (1, 1, len(pseudo))
    assert "1 questions (1 held out) + 4 train-only" in caplog.text  # the log line counts them apart too
    written = read_examples(tmp_path / "run" / STEP_DIRS[2] / "train.jsonl")
    ict = [e for e in written if e.question_id.startswith("ict:")]
    assert [(e.question, e.positives) for e in ict] == [(e.question, e.positives) for e in pseudo]
    assert all(e.negatives and not set(e.negatives) & set(e.positives) for e in ict)
    before = read_examples(tmp_path / "plain" / STEP_DIRS[2] / "train.jsonl")
    assert [e for e in written if not e.question_id.startswith("ict:")] == before  # the same negatives
    step_config = json.loads((tmp_path / "run" / STEP_DIRS[2] / "config.json").read_text())
    assert step_config["inverse_cloze"]["per_passage"] == 1 and step_config["sampling"]["inverse_cloze"] == 1
    assert "inverse_cloze" not in json.loads((tmp_path / "plain" / STEP_DIRS[2] / "config.json").read_text())


def test_step2_adds_bm25_negatives_after_the_same_dense_and_random_ones(tmp_path, tiny_beir, tiny_config):
    from engine.sparse import BM25Index

    config = replace(tiny_config, ce_sampling=replace(tiny_config.ce_sampling, bm25_negatives_per_positive=1))
    ds = _step2_beside_plain(tmp_path, tiny_beir, tiny_config, config)
    before = read_examples(tmp_path / "plain" / STEP_DIRS[2] / "train.jsonl")
    after = read_examples(tmp_path / "run" / STEP_DIRS[2] / "train.jsonl")
    found = BM25Index.build(ds.corpus).search([e.question for e in after], config.ce_sampling.top_k).ids
    added = 0
    for b, a, top in zip(before, after, found, strict=True):
        assert a.negatives[: len(b.negatives)] == b.negatives  # the dense and random negatives unchanged
        extra = a.negatives[len(b.negatives) :]
        assert len(extra) <= len(a.positives) and set(extra) <= set(top) - set(a.positives) - set(b.negatives)
        added += len(extra)
    assert added > 0
    m_plain = json.loads((tmp_path / "plain" / STEP_DIRS[2] / "metrics.json").read_text())
    metrics = json.loads((tmp_path / "run" / STEP_DIRS[2] / "metrics.json").read_text())
    assert metrics["train_pairs"] == m_plain["train_pairs"] + added
    assert metrics["bm25_negatives"]["per_positive"] == 1 and m_plain["bm25_negatives"]["per_positive"] == 0
    step_config = json.loads((tmp_path / "run" / STEP_DIRS[2] / "config.json").read_text())
    assert step_config["sampling"]["bm25_negatives_per_positive"] == 1


def test_question_without_positive_is_skipped_with_a_log(caplog):
    caplog.set_level(logging.WARNING)
    examples = labelled_examples(small_dataset(), "train")
    assert [e.question_id for e in examples] == ["q0", "q1"]
    assert any("1 questions have no positive" in m for m in caplog.messages)
    ds = small_dataset()
    ds.qrels["none"] = {"q2": {"p2": 0}}
    with pytest.raises(PipelineError, match="no question with a positive"):
        labelled_examples(ds, "none")


def test_passage_missing_from_corpus_is_an_error():
    ds = small_dataset()
    ds.qrels["train"]["q0"] = {"nowhere": 1}
    with pytest.raises(DataError, match="nowhere"):
        labelled_examples(ds, "train")


def test_empty_unlabeled_set_and_missing_steps_are_errors(tmp_path, tiny_config):
    run = open_run("small", tmp_path / "r", tiny_config, dataset=small_dataset())
    with pytest.raises(PipelineError, match="needs unlabeled questions"):
        step4_augment(run)
    with pytest.raises(PipelineError, match="needs step 1"):
        step3_denoise(run)
    with pytest.raises(PipelineError, match="unknown steps"):
        run_pipeline(run, [5])


@pytest.mark.parametrize(
    "argv", [["pipeline", "run"], ["pipeline", "summary"], ["train-dual"], ["ablation"]], ids=lambda a: " ".join(a)
)
def test_every_command_has_help(argv, capsys):
    from engine.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_bad_steps_argument_is_refused(capsys):
    from engine.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["pipeline", "run", "--data", "d", "--output", "o", "--steps", "1,7"])
    assert "--steps" in capsys.readouterr().err


def test_cross_max_length_argument(capsys):
    from engine.cli import build_parser
    from engine.pipeline_cli import build_config

    base = ["pipeline", "run", "--data", "d", "--output", "o", "--preset", "cpu"]
    assert build_config(build_parser().parse_args(base)).cross.max_length == preset("cpu").cross.max_length
    config = build_config(build_parser().parse_args([*base, "--cross-max-length", "256"]))
    assert config.cross.max_length == 256 and config.step1 == preset("cpu").step1
    for bad in ("8", "1024", "long"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, "--cross-max-length", bad])
        assert "--cross-max-length" in capsys.readouterr().err


def test_passage_max_length_argument(capsys):
    from engine.cli import build_parser
    from engine.pipeline_cli import build_config

    base = ["pipeline", "run", "--data", "d", "--output", "o", "--preset", "cpu"]
    assert build_config(build_parser().parse_args(base)).dual.passage_max_length == 128
    config = build_config(build_parser().parse_args([*base, "--passage-max-length", "256"]))
    assert config.dual.passage_max_length == 256 and config.dual.query_max_length == 32
    assert config.cross == preset("cpu").cross and config.step1 == preset("cpu").step1
    for bad in ("8", "1024", "long"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, "--passage-max-length", bad])
        assert "--passage-max-length" in capsys.readouterr().err
    from engine.ablation import base_config
    from engine.pipeline_cli import ablation_config

    ablation = ["ablation", "--data", "d", "--output", "o", "--preset", "cpu"]
    assert base_config(ablation_config(build_parser().parse_args(ablation))).dual.passage_max_length == 128
    ab = ablation_config(build_parser().parse_args([*ablation, "--passage-max-length", "256"]))
    assert ab.passage_max_length == 256
    # every row shares the base config: the untrained MiniLM row and each trained row read 256 tokens
    assert base_config(ab).dual == replace(preset("cpu").dual, passage_max_length=256)
    assert base_config(ab).cross == preset("cpu").cross
    for bad in ("8", "long"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*ablation, "--passage-max-length", bad])
        assert "--passage-max-length" in capsys.readouterr().err


def test_train_dual_keeps_a_loaded_models_lengths_unless_told(tmp_path, tiny_beir, tiny_model_dir, capsys):
    from engine.cli import main
    from engine.dual_encoder import DualEncoder, DualEncoderConfig

    start = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir, query_max_length=16, passage_max_length=40))
    start.save(tmp_path / "start")
    common = ["train-dual", "--data", str(tiny_beir), "--max-steps", "1", "--batch-size", "2", "--threads", "1"]

    def lengths(out: str, *extra: str) -> tuple[int, int]:
        assert main([*common, "--output", str(tmp_path / out), *extra]) == 0
        saved = json.loads((tmp_path / out / "model" / "dual_encoder.json").read_text())
        return saved["query_max_length"], saved["passage_max_length"]

    assert lengths("kept", "--model", str(tmp_path / "start")) == (16, 40)
    assert lengths("told", "--model", str(tmp_path / "start"), "--passage-max-length", "64") == (16, 64)
    assert lengths("fresh", "--model", tiny_model_dir) == (32, 128)  # a model this tool did not write
    assert lengths("default", "--model", str(tmp_path / "start"), "--query-max-length", "0") == (16, 40)
    for bad in ("-3", "1024", "many"):
        with pytest.raises(SystemExit):
            main([*common, "--output", str(tmp_path / "never"), "--passage-max-length", bad])
        assert "--passage-max-length" in capsys.readouterr().err


def test_positive_threshold_arguments(capsys):
    from engine.cli import build_parser
    from engine.pipeline_cli import build_config

    base = ["pipeline", "run", "--data", "d", "--output", "o", "--preset", "cpu"]
    default = build_config(build_parser().parse_args(base)).augment
    assert (default.pos_threshold, default.pos_precision_target) == (0.9, 0.0)
    args = [*base, "--pos-threshold", "0.95", "--pos-threshold-from-dev", "0.9"]
    augment = build_config(build_parser().parse_args(args)).augment
    assert (augment.pos_threshold, augment.pos_precision_target) == (0.95, 0.9)
    for flag, bad in (
        ("--pos-threshold", "1"),
        ("--pos-threshold", "-0.2"),
        ("--pos-threshold-from-dev", "0"),
        ("--pos-threshold-from-dev", "high"),
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, flag, bad])
        assert flag in capsys.readouterr().err
    from engine.pipeline_cli import ablation_config

    ablation = ["ablation", "--data", "d", "--output", "o"]
    assert (ablation_config(build_parser().parse_args(ablation)).pos_precision_target, 0) == (0.0, 0)
    args = [*ablation, "--cross-max-length", "256", "--pos-threshold-from-dev", "0.9"]
    config = ablation_config(build_parser().parse_args(args))
    assert (config.cross_max_length, config.pos_precision_target) == (256, 0.9)
    assert (config.rerank_weight_from_dev, config.rerank_onnx, config.rerank_bm25) == (True, False, True)
    config = ablation_config(
        build_parser().parse_args([*ablation, "--no-rerank-weight", "--rerank-onnx", "--no-rerank-bm25"])
    )
    assert (config.rerank_weight_from_dev, config.rerank_onnx, config.cross_loss) == (False, True, "")
    assert config.rerank_bm25 is False
    assert ablation_config(build_parser().parse_args([*ablation, "--cross-loss", "listwise"])).cross_loss == "listwise"
    fine = ["--pos-threshold-from-dev", "0.9", "--pos-threshold-grid", "0.95,0.91,0.9,0.95"]
    assert ablation_config(build_parser().parse_args([*ablation, *fine])).pos_threshold_grid == (0.9, 0.91, 0.95)
    augment = build_config(build_parser().parse_args([*base, *fine])).augment
    assert (augment.pos_threshold_grid, augment.pos_precision_target) == ((0.9, 0.91, 0.95), 0.9)
    assert build_config(build_parser().parse_args(base)).augment.pos_threshold_grid == default.pos_threshold_grid
    with pytest.raises(ValueError, match="only matters with --pos-threshold-from-dev"):
        build_config(build_parser().parse_args([*base, "--pos-threshold-grid", "0.9,0.95"]))
    for bad in ("0.9,1", "0.9,x", ","):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, "--pos-threshold-from-dev", "0.9", "--pos-threshold-grid", bad])
        assert "--pos-threshold-grid" in capsys.readouterr().err
    from engine.pipeline_cli import build_config

    run = ["pipeline", "run", "--data", "d", "--output", "o"]
    assert build_config(build_parser().parse_args(run)).step2.loss == "pointwise"
    assert build_config(build_parser().parse_args([*run, "--cross-loss", "listwise"])).step2.loss == "listwise"


def test_ablation_reranking_rows(tmp_path, tiny_model_dir, monkeypatch):
    from conftest import write_tiny_beir

    from engine.ablation import (
        AblationConfig,
        dense_candidates,
        hybrid_candidates,
        rerank,
        rerank_candidates,
        rerank_weight_on_dev,
        reranked,
    )
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
    from engine.dual_encoder import DualEncoder, DualEncoderConfig
    from engine.fusion import RERANK_BM25_WEIGHTS, RERANK_WEIGHTS, reciprocal_rank_fusion
    from engine.sparse import BM25Index

    ds = read_beir(write_tiny_beir(tmp_path / "d"))
    questions, _ = ds.split("test")
    dual = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    ce = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    first = dense_candidates(tmp_path / "run", dual, ds, questions, 5)
    cand = rerank_candidates(ce, ds, questions, first, 3)
    for q in questions:
        c, f = cand[q.id], first[q.id]
        assert (list(c.ids), list(c.dense), c.bm25) == (f.ids[:3], f.scores[:3], ())
        one_by_one = ce.logits([q.text] * 3, [ds.corpus[pid] for pid in c.ids])  # batching changes nothing
        assert np.allclose(c.ce_logits, one_by_one, atol=1e-5)
    plain = reranked(first, cand)
    for q in questions:
        c = cand[q.id]
        assert plain[q.id][:3] == [c.ids[i] for i in np.argsort(-np.asarray(c.ce_logits), kind="stable")]
        assert plain[q.id][3:] == first[q.id].ids[3:]  # the tail keeps its first-stage order
    assert reranked(first, cand, 1e6) == {qid: r.ids for qid, r in first.items()}  # the dense score dominates
    ids_only = rerank(ce, ds, questions, {qid: r.ids for qid, r in first.items()}, 3)
    assert ids_only == plain
    choice = rerank_weight_on_dev(tmp_path / "run", dual, ce, ds, "train", AblationConfig(rerank_depth=3))
    assert choice.weight in RERANK_WEIGHTS and choice.questions == 2
    assert set(choice.mrr) == {(w, 0.0) for w in RERANK_WEIGHTS} and choice.bm25_weight == 0.0

    # with a BM25 index: BM25 scores as a feature, logits memoised per (question, passage)
    bm25 = BM25Index.build(ds.corpus)
    memo = {(questions[0].id, first[questions[0].id].ids[0]): 123.0}  # a known pair is not scored again
    with_bm25 = rerank_candidates(ce, ds, questions, first, 3, bm25, memo)
    assert with_bm25[questions[0].id].ce_logits[0] == 123.0
    for q in questions:
        c = with_bm25[q.id]
        assert list(c.bm25) == pytest.approx(bm25.score_passages([q.text], [list(c.ids)])[0])
        assert all(memo[(q.id, pid)] == logit for pid, logit in zip(c.ids, c.ce_logits))
    assert len(memo) == 3 * len(questions)

    # the hybrid first stage: RRF order of M_D2 and BM25, each passage with its exact inner product
    hybrid = hybrid_candidates(tmp_path / "run", dual, ds, questions, 5, bm25)
    lexical = bm25.search([q.text for q in questions], 5)
    for q, b_ids in zip(questions, lexical.ids):
        fused = [pid for pid, _ in reciprocal_rank_fusion([first[q.id].ids, b_ids], [1.0, 1.0])][:5]
        assert hybrid[q.id].ids == fused
        qv = dual.encode_queries([q.text])[0]
        exact = dual.encode_passages([ds.corpus[pid] for pid in fused]) @ qv
        assert hybrid[q.id].scores == pytest.approx(exact.tolist(), abs=1e-5)
    both = rerank_weight_on_dev(
        tmp_path / "run", dual, ce, ds, "train", AblationConfig(rerank_depth=3, eval_k=5), bm25, True
    )
    assert set(choice.mrr) < set(both.mrr) and len(both.mrr) == len(RERANK_WEIGHTS) * len(RERANK_BM25_WEIGHTS)
    with pytest.raises(ValueError, match="needs a BM25 index"):
        rerank_weight_on_dev(tmp_path / "run", dual, ce, ds, "train", AblationConfig(rerank_depth=3), hybrid=True)

    # `ablation --rerank-fit listwise`: the same dev heads, the shares fitted (engine.fusion.choose_or_fit)
    from engine.cli import build_parser
    from engine.fusion import choose_or_fit
    from engine.pipeline_cli import ablation_config

    listwise = ablation_config(
        build_parser().parse_args(["ablation", "--data", "d", "--output", "o", "--rerank-fit", "listwise"])
    )
    assert listwise.rerank_fit == "listwise"
    seen = []

    def spy(cand, qrels, method, dense, bm25, extend=0):
        seen.append((method, dense, bm25, len(cand)))
        return choose_or_fit(cand, qrels, "grid", dense, bm25)

    import engine.ablation

    monkeypatch.setattr(engine.ablation, "choose_or_fit", spy)
    ab = replace(listwise, rerank_depth=3, eval_k=5)
    assert rerank_weight_on_dev(tmp_path / "run", dual, ce, ds, "train", ab, bm25, True) == both
    assert seen == [("listwise", True, True, 2)]


def test_large_batch_row_trains_m_d0_by_gradcache_in_one_process_and_is_reused(tmp_path, tiny_beir, tiny_config):
    from engine.ablation import large_batch_run
    from engine.cli import build_parser
    from engine.pipeline_cli import ablation_config

    target = large_batch_run(str(tiny_beir), tmp_path / "large-batch-seed13", tiny_config, 4, 2)
    metrics = json.loads((target / "metrics.json").read_text())
    assert (metrics["config"]["batch_size"], metrics["config"]["grad_cache_chunk"]) == (4, 2)
    assert metrics["world_size"] == 1 and metrics["config"]["hard_negatives_per_question"] == 0
    assert metrics["config"]["learning_rate"] == tiny_config.step1.learning_rate
    stamp = (target / "metrics.json").stat().st_mtime_ns
    assert large_batch_run(str(tiny_beir), target, tiny_config, 4, 2) == target  # reused, not retrained
    assert (target / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(RuntimeError, match="other settings.*batch_size 4 != 8"):  # never reused for another row
        large_batch_run(str(tiny_beir), target, tiny_config, 8, 2)
    longer = replace(tiny_config, dual=replace(tiny_config.dual, passage_max_length=64))
    with pytest.raises(RuntimeError, match="other settings.*passage_max_length 48 != 64"):  # nor at another length
        large_batch_run(str(tiny_beir), target, longer, 4, 2)
    ablation = ["ablation", "--data", "d", "--output", "o"]
    assert ablation_config(build_parser().parse_args(ablation)).large_batch == 0
    assert ablation_config(build_parser().parse_args([*ablation, "--inverse-cloze", "1"])).inverse_cloze == 1
    assert ablation_config(build_parser().parse_args([*ablation, "--large-batch", "128"])).large_batch == 128
    with pytest.raises(ValueError, match="--large-batch"):
        ablation_config(build_parser().parse_args([*ablation, "--large-batch", "-1"]))


def test_inverse_cloze_row_trains_m_d0_on_questions_and_pseudo_queries_and_is_reused(tmp_path, tiny_beir, tiny_config):
    from engine.ablation import inverse_cloze_run

    config = replace(tiny_config, inverse_cloze=replace(tiny_config.inverse_cloze, scope="corpus"))
    target = inverse_cloze_run(str(tiny_beir), tmp_path / "inverse-cloze-seed13", config, 1)
    metrics = json.loads((target / "metrics.json").read_text())
    # the scope reaches the subprocess: one pseudo-query per passage of the whole corpus
    assert (metrics["examples"], metrics["pseudo_queries"], metrics["inverse_cloze_scope"]) == (2, 8, "corpus")
    assert metrics["config"]["hard_negatives_per_question"] == 0 and metrics["world_size"] == 1
    stamp = (target / "metrics.json").stat().st_mtime_ns
    assert inverse_cloze_run(str(tiny_beir), target, config, 1) == target  # reused, not retrained
    assert (target / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(RuntimeError, match="other settings.*inverse_cloze 1 != 2"):
        inverse_cloze_run(str(tiny_beir), target, config, 2)


def test_inverse_cloze_arguments(capsys):
    from engine.cli import build_parser
    from engine.pipeline_cli import build_config

    base = ["pipeline", "run", "--data", "d", "--output", "o", "--preset", "cpu"]
    assert build_config(build_parser().parse_args(base)).inverse_cloze.per_passage == 0  # off by default
    config = build_config(build_parser().parse_args([*base, "--inverse-cloze", "2"])).inverse_cloze
    assert (config.per_passage, config.scope) == (2, "train-titles")
    args = [*base, "--inverse-cloze", "1", "--inverse-cloze-scope", "corpus"]
    assert build_config(build_parser().parse_args(args)).inverse_cloze.scope == "corpus"
    for bad in (["--inverse-cloze", "-1"], ["--inverse-cloze", "many"], ["--inverse-cloze-scope", "test"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, *bad])
        assert bad[0] in capsys.readouterr().err
    with pytest.raises(ValueError, match="--inverse-cloze-scope only matters with --inverse-cloze"):
        build_config(build_parser().parse_args([*base, "--inverse-cloze-scope", "corpus"]))
    config = build_config(build_parser().parse_args([*base, "--cross-inverse-cloze", "1"]))
    assert (config.ce_sampling.inverse_cloze, config.inverse_cloze.per_passage) == (1, 0)  # step 2 only
    assert build_config(build_parser().parse_args(base)).ce_sampling.inverse_cloze == 0
    args = [*base, "--cross-inverse-cloze", "2", "--inverse-cloze-scope", "positives"]
    assert build_config(build_parser().parse_args(args)).inverse_cloze.scope == "positives"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--cross-inverse-cloze", "21"])
    assert "--cross-inverse-cloze must be 0 (off) to 20" in capsys.readouterr().err
    train = build_parser().parse_args(["train-dual", "--data", "d", "--output", "o", "--inverse-cloze", "1"])
    assert (train.inverse_cloze, train.inverse_cloze_scope) == (1, None)  # None: the default scope, train-titles


def test_ablation_table_noise_notes_and_plot(tmp_path):
    from engine.ablation import AblationRow, AblationTable, _noise_notes, plot
    from engine.metrics import evaluate_rankings

    qrels = {f"q{i}": {f"p{i}": 1} for i in range(40)}
    good = {f"q{i}": [f"p{i}"] for i in range(40)}  # every gold passage at rank 1
    half = {f"q{i}": ([f"p{i}"] if i % 2 else ["x", f"p{i}"]) for i in range(40)}
    same = dict(good)
    results = {
        "in-batch negatives (M_D0)": [evaluate_rankings(half, qrels)],
        "cross-batch negatives (2 processes)": [evaluate_rankings(good, qrels)],
        "GradCache, batch 128 on one process (in-batch negatives)": [evaluate_rankings(good, qrels)],
        "M_D0 + inverse-cloze pseudo-queries (1 per training-article passage)": [evaluate_rankings(same, qrels)],
        "hard negatives, undenoised": [evaluate_rankings(same, qrels)],
    }
    notes = _noise_notes(results, list(qrels), 1)
    assert any(
        n.startswith("'M_D0 + inverse-cloze pseudo-queries (1 per training-article passage)' vs 'in-batch negatives")
        and "+25.00" in n
        for n in notes
    )
    assert any(n.startswith("'GradCache, batch 128 on one process (in-batch negatives)' vs 'in-batch") for n in notes)
    assert any(
        "'cross-batch negatives (2 processes)' vs 'in-batch negatives (M_D0)': MRR@10 +25.00" in n and "better" in n
        for n in notes
    )
    assert any("undenoised' vs 'in-batch" in n for n in notes)
    assert notes[-1].startswith("one seed")
    # re-ranking rows on a subset of 10 questions: compared over those 10 only
    sub = {q: qrels[q] for q in list(qrels)[:10]}
    fused = "M_D2 + cross-encoder top-20, + w x dense score (w from dev)"
    rerank_results = {
        "M_D2 on the re-ranking subset (10 q)": [evaluate_rankings(half, sub)],
        "M_D2 + cross-encoder top-20": [evaluate_rankings(half, sub)],
        fused: [evaluate_rankings(good, sub)],
    }
    notes = _noise_notes(rerank_results, list(qrels), 1)
    assert any(
        n.startswith("'M_D2 + cross-encoder top-20' vs 'M_D2 on the re-ranking subset (10 q)': MRR@10 +0.00")
        for n in notes
    )
    assert any(n.startswith(f"'{fused}' vs 'M_D2 + cross-encoder top-20': MRR@10 +25.00") for n in notes)
    # the BM25-share rows: compared with the dense-share row, and the hybrid one with it and with BM25
    bm25_share = "M_D2 + cross-encoder top-20, + w x dense + v x BM25 (w, v from dev)"
    hybrid = "hybrid M_D2 + BM25 (RRF) + cross-encoder top-20, + w x dense + v x BM25 (w, v from dev)"
    rerank_results |= {
        "BM25": [evaluate_rankings(half, qrels)],
        bm25_share: [evaluate_rankings(half, sub)],
        "hybrid M_D2 + BM25 (RRF) on the re-ranking subset (10 q)": [evaluate_rankings(good, sub)],
        hybrid: [evaluate_rankings(good, sub)],
    }
    notes = _noise_notes(rerank_results, list(qrels), 1)
    assert any(n.startswith(f"'{bm25_share}' vs '{fused}': MRR@10 -25.00") and "worse" in n for n in notes)
    assert any(n.startswith(f"'{hybrid}' vs '{bm25_share}': MRR@10 +25.00") for n in notes)
    assert any(n.startswith(f"'{hybrid}' vs 'BM25': MRR@10 +25.00") for n in notes)  # over the 10 both evaluated
    assert any(n.startswith(f"'{fused}' vs 'M_D2 + cross-encoder top-20'") for n in notes)  # still found
    rows = [
        AblationRow(name, "trained", {k: v for k, v in rs[0].metrics.items()}, seconds=1.0)
        for name, rs in results.items()
    ]
    table = AblationTable(rows, "data", "test", (13,), notes)
    md = table.markdown()
    assert "| cross-batch negatives (2 processes) | 100.0 | 100.0 |" in md
    assert json.loads(json.dumps(table.to_dict()))["rows"][0]["name"] == "in-batch negatives (M_D0)"
    png = plot(table, tmp_path / "ablation.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_noise_notes_with_several_seeds_average_per_question_and_need_every_seed_to_agree():
    from engine.ablation import _noise_notes
    from engine.metrics import evaluate_rankings

    qrels = {f"q{i}": {f"p{i}": 1} for i in range(40)}
    good = evaluate_rankings({f"q{i}": [f"p{i}"] for i in range(40)}, qrels)  # RR 1 everywhere
    half = evaluate_rankings({f"q{i}": ([f"p{i}"] if i % 2 else ["x", f"p{i}"]) for i in range(40)}, qrels)
    results = {
        "BM25": [good],  # a reference row: one result, compared with every seed
        "in-batch negatives (M_D0)": [half, half],
        "cross-batch negatives (2 processes)": [good, half],  # +25 with seed 1, +0 with seed 2
        "hard negatives, undenoised": [good, good],  # +25 with both seeds
        "hard negatives, denoised (M_D1)": [good, good],
        "+ data augmentation (M_D2)": [half, good],
    }
    notes = {n.split(": MRR@10")[0]: n for n in _noise_notes(results, list(qrels), 2)}
    # per question: even ones gain (1 + 0.5) / 2 - 0.5 = 0.25, odd ones 0 -> mean +12.50; the
    # interval excludes 0, but seed 2 shows no gain, so it is not called better
    cb = notes["'cross-batch negatives (2 processes)' vs 'in-batch negatives (M_D0)'"]
    assert "+12.50" in cb and "mean of 2 seeds" in cb and "per seed +25.00, +0.00" in cb
    assert cb.endswith("seeds disagree")
    und = notes["'hard negatives, undenoised' vs 'in-batch negatives (M_D0)'"]
    assert "+25.00" in und and "per seed +25.00, +25.00" in und and und.endswith("better")
    den = notes["'hard negatives, denoised (M_D1)' vs 'hard negatives, undenoised'"]
    assert "+0.00 ± 0.00" in den and den.endswith("within noise")
    bm = notes["'+ data augmentation (M_D2)' vs 'BM25'"]
    assert "-12.50" in bm and "per seed -25.00, +0.00" in bm and bm.endswith("seeds disagree")
    assert not any(n.startswith("one seed") for n in notes.values())


def test_ce_negatives_skip_answer_bearing_passages_and_random_ones_are_never_positive():
    import random
    from types import SimpleNamespace

    from engine.config import CrossSamplingConfig
    from engine.denoise import Ranking
    from engine.examples import TrainExample
    from engine.pipeline import sample_ce_negatives

    texts = ["Paris is the capital", "Paris again here", "nothing", "still nothing", "Lyon", "Nice", "Lille", "Metz"]
    corpus = Corpus([Passage(f"p{i}", t) for i, t in enumerate(texts)])
    questions = {"q0": Question("q0", "capital of France?", ("Paris",))}
    ds = Dataset(corpus, questions, {"train": {"q0": {"p0": 1}}}, name="tiny")
    sampling = CrossSamplingConfig(
        top_k=3, negatives_per_positive=2, random_negatives_per_positive=3, exclude_answer_negatives=True
    )
    run = SimpleNamespace(
        config=replace(preset("tiny"), ce_sampling=sampling), dataset=ds, corpus=corpus, progress=None
    )
    example = TrainExample("q0", "capital of France?", ("p0",))
    ranking = Ranking(["p0", "p1", "p2", "p3"], [0.9, 0.8, 0.7, 0.6])
    for seed in range(20):
        (out,), excluded = sample_ce_negatives(run, [example], [ranking], random.Random(seed))
        assert excluded == 1  # p1 contains "Paris"
        assert set(out.negatives[:2]) == {"p2", "p3"}  # the top-k negatives come first
        assert len(out.negatives) == 5 == len(set(out.negatives)) and "p0" not in out.negatives
    # without the exclusion p1 is a candidate negative
    run.config = replace(run.config, ce_sampling=replace(sampling, exclude_answer_negatives=False))
    seen = set()
    for seed in range(20):
        (out,), excluded = sample_ce_negatives(run, [example], [ranking], random.Random(seed))
        seen |= set(out.negatives[:2])
        assert excluded == 0
    assert "p1" in seen


def test_a_cross_encoder_at_chance_is_refused_by_steps_3_and_4(tiny_model_dir):
    from types import SimpleNamespace

    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
    from engine.pipeline import check_cross_encoder

    def with_auc(auc):
        held = {"after_calibration": {"auc": auc}} if auc is not None else None
        cfg = CrossEncoderConfig(model=str(tiny_model_dir), trained=True, provenance={"heldout": held})
        return CrossEncoder.build(cfg)

    run = SimpleNamespace(config=replace(preset("tiny"), min_ce_auc=0.75))
    with pytest.raises(PipelineError, match=r"held-out ROC AUC is 0\.550, below min_ce_auc=0\.75"):
        check_cross_encoder(run, with_auc(0.55), 3)
    with pytest.raises(PipelineError, match="min_ce_auc"):
        check_cross_encoder(run, with_auc(float("nan")), 4)
    check_cross_encoder(run, with_auc(0.9), 3)  # good enough: no error
    check_cross_encoder(run, with_auc(None), 3)  # nothing on record: a warning, not an error
    run.config = replace(run.config, min_ce_auc=0.0)
    check_cross_encoder(run, with_auc(0.55), 4)  # the check is off


def test_cross_encoder_length_script_retrains_step2_and_compares(tmp_path, tiny_config, capsys):
    """benchmarks/cross_encoder_length.py: step 2 again at another max length, next to the run's own."""
    from conftest import load_benchmark

    cel = load_benchmark("cross_encoder_length")
    run = open_run(SAMPLE, tmp_path / "run", tiny_config)
    run_pipeline(run, (1, 2))
    out = tmp_path / "longer"
    args = ["--data", str(SAMPLE), "--run", str(tmp_path / "run"), "--output", str(out)]
    argv = [*args, "--max-length", "96", "--questions", "5", "--depth", "4", "--report-truncation"]
    ict = ["--inverse-cloze", "1", "--inverse-cloze-scope", "corpus"]
    assert cel.main([*argv, "--top-negatives", "2", "--random-negatives", "0", *ict]) == 0
    report = json.loads((out / "cross_encoder_length.json").read_text())
    assert report["inverse_cloze_scope"] == "corpus"
    step2 = json.loads((out / STEP_DIRS[2] / "config.json").read_text())["inverse_cloze"]
    assert (step2["per_passage"], step2["scope"]) == (1, "corpus")
    sampling = (report["sampling"], report["baseline_sampling"])
    assert [
        (s["negatives_per_positive"], s["random_negatives_per_positive"], s["inverse_cloze"]) for s in sampling
    ] == [
        (2, 0, 1),
        (tiny_config.ce_sampling.negatives_per_positive, tiny_config.ce_sampling.random_negatives_per_positive, 0),
    ]
    from engine.inverse_cloze import inverse_cloze_examples

    ds = read_beir(SAMPLE)
    whole = replace(tiny_config.inverse_cloze, per_passage=1, scope="corpus")
    expected = inverse_cloze_examples(ds.corpus, labelled_examples(ds, "train"), whole)
    narrow = inverse_cloze_examples(ds.corpus, labelled_examples(ds, "train"), replace(whole, scope="train-titles"))
    assert len(expected) > len(narrow)  # the sample has passages outside the training articles
    assert json.loads((out / STEP_DIRS[2] / "metrics.json").read_text())["pseudo_queries"] == len(expected)
    with pytest.raises(SystemExit) as refused:
        cel.main([*args[:-1], str(tmp_path / "bad"), "--top-negatives", "-1"])
    assert refused.value.code == 2 and not (tmp_path / "bad").exists()
    assert (report["max_length"], report["baseline_max_length"]) == (96, tiny_config.cross.max_length)
    assert json.loads((out / "config.json").read_text())["config"]["cross"]["max_length"] == 96
    assert (out / "step2_cross_encoder" / "DONE").is_file()
    rr = report["rerank_test"]
    assert rr["questions"] == 5 and rr["dual_encoder"].endswith("step1_dual_encoder/model")
    assert all(0 <= rr[k]["MRR@10"] <= 100 for k in ("dense", "run", "new"))
    paired = rr["new_vs_run"]
    assert paired["MRR@10"] == pytest.approx(rr["new"]["MRR@10"] - rr["run"]["MRR@10"], abs=0.02)
    assert paired["questions"] == 5 and paired["ci95"] >= 0 and paired["verdict"] in ("better", "worse", "within noise")
    assert {p["pos_threshold"] for p in report["threshold_sweep_dev"]["new"]["positive"]} >= {0.9}
    cut = report["answer_cut_off_train"]
    assert 0 <= cut["96"] <= cut[str(tiny_config.cross.max_length)] <= 1  # a longer input cuts off fewer answers
    assert (report["loss"], report["baseline_loss"]) == ("pointwise", "pointwise")
    listwise = tmp_path / "listwise"
    args[-1] = str(listwise)
    argv = [*args, "--max-length", "64", "--questions", "5", "--depth", "4", "--loss", "listwise", "--epochs", "2"]
    assert cel.main([*argv, "--rerank-shares"]) == 0
    report = json.loads((listwise / "cross_encoder_length.json").read_text())
    shares = report["rerank_test"]["shares"]
    assert set(shares) == {"run", "new", "new_vs_run"} and set(shares["new"]) == {"dense", "hybrid"}
    paired = shares["new_vs_run"]  # row by row, new minus run, over the same questions
    assert len(paired) == 6 and paired["dense: first stage"]["MRR@10"] == 0 == paired["hybrid: first stage"]["MRR@10"]
    # rows named by their place, not by one side's weights (each cross-encoder chooses its own)
    assert {"dense: + w x dense", "dense: + w x dense + v x BM25", "hybrid: + w x dense + v x BM25"} < set(paired)
    alone = paired["dense: cross-encoder"]["MRR@10"]
    assert alone == pytest.approx(
        shares["new"]["dense"]["cross-encoder"]["MRR@10"] - shares["run"]["dense"]["cross-encoder"]["MRR@10"], abs=0.02
    )
    dense_rows = shares["new"]["dense"]
    assert list(dense_rows)[:2] == ["first stage", "cross-encoder"] and len(dense_rows) == 5
    assert dense_rows["first stage"] == report["rerank_test"]["dense"]  # the same questions and first stage
    assert dense_rows["cross-encoder"]["MRR@10"] == pytest.approx(report["rerank_test"]["new"]["MRR@10"], abs=0.01)
    assert any(" x BM25" in row for row in shares["new"]["hybrid"])
    assert (report["loss"], report["epochs"], report["baseline_epochs"]) == ("listwise", 2, tiny_config.step2.epochs)
    step2 = json.loads((listwise / "config.json").read_text())["config"]["step2"]
    assert (step2["loss"], step2["epochs"]) == ("listwise", 2)
    logits = json.loads((listwise / "rerank_logits.json").read_text())
    assert set(logits) == {"run", "new"} and len(logits["run"]) == len(logits["new"]) > 0
    with pytest.raises(SystemExit) as refused:
        cel.main([*argv, "--rerank-ensemble"])  # needs --rerank-shares
    assert refused.value.code == 2
    assert cel.main([*argv, "--rerank-shares", "--rerank-ensemble"]) == 0  # step 2 is reused
    shares = json.loads((listwise / "cross_encoder_length.json").read_text())["rerank_test"]["shares"]
    assert {"ensemble", "ensemble_vs_run", "ensemble_vs_new"} <= set(shares)
    logits = {
        name: {(q, pid): v for q, pid, v in rows}
        for name, rows in json.loads((listwise / "rerank_logits.json").read_text()).items()
    }
    assert set(logits["ensemble"]) == set(logits["run"]) == set(logits["new"])
    for key, v in logits["ensemble"].items():
        assert v == pytest.approx((logits["run"][key] + logits["new"][key]) / 2)
    # the ensemble's "cross-encoder alone" row, recomputed from its logits by hand
    from engine.dual_encoder import DualEncoder
    from engine.index import DenseIndex
    from engine.metrics import evaluate_rankings

    test_q, test_qrels = ds.split("test")
    picked = {q for q, _ in logits["ensemble"]} & set(test_qrels)
    dense = DualEncoder.load(listwise / STEP_DIRS[1] / "model")
    index = DenseIndex.build(dense.encode_passages(ds.corpus.passages), ds.corpus.ids)
    by_id = {q.id: q for q in test_q}
    chosen = sorted(picked)
    top = index.search(dense.encode_queries([by_id[q].text for q in chosen]), 4).ids
    by_logit = {
        q: sorted(ids, key=lambda pid, q=q: -logits["ensemble"][(q, pid)]) for q, ids in zip(chosen, top, strict=True)
    }
    alone = evaluate_rankings(by_logit, {q: test_qrels[q] for q in chosen}, ds.corpus, ks=(1,)).metrics
    assert shares["ensemble"]["dense"]["cross-encoder"]["MRR@10"] == pytest.approx(alone["MRR@10"], abs=0.01)
    gap = shares["ensemble_vs_new"]["dense: cross-encoder"]["MRR@10"]
    ens_row, new_row = (shares[n]["dense"]["cross-encoder"]["MRR@10"] for n in ("ensemble", "new"))
    assert gap == pytest.approx(ens_row - new_row, abs=0.02)
    with pytest.raises(ValueError, match="different pairs"):
        cel.ensemble_logits({("q", "p"): 1.0}, {("q", "r"): 1.0})


def _bm25_run(tmp_path, sampling):
    from types import SimpleNamespace

    texts = [
        "Paris is the capital of France",
        "the capital of Italy is Rome",
        "France has a capital city",
        "nothing here",
        "still nothing",
        "capital of Spain is Madrid",
        "a river",
        "a mountain",
    ]
    corpus = Corpus([Passage(f"p{i}", t) for i, t in enumerate(texts)])
    questions = {"q0": Question("q0", "what is the capital of France", ("Paris",))}
    ds = Dataset(corpus, questions, {"train": {"q0": {"p0": 1}}}, name="tiny")
    return SimpleNamespace(config=replace(preset("tiny"), ce_sampling=sampling), dataset=ds, corpus=corpus)


def test_bm25_negatives_come_from_bm25s_top_k_and_leave_the_other_negatives_alone(tmp_path):
    from engine.config import CrossSamplingConfig
    from engine.examples import TrainExample
    from engine.pipeline import add_bm25_negatives
    from engine.sparse import BM25Index

    example = TrainExample("q0", "what is the capital of France", ("p0",), ("p3", "p6"))
    off = _bm25_run(tmp_path, CrossSamplingConfig(top_k=3, exclude_answer_negatives=True))
    assert add_bm25_negatives(off, [example]) == ([example], 0)  # off by default: unchanged
    top = BM25Index.build(off.corpus).search([example.question], 3).ids[0]
    assert top[:2] == ["p0", "p2"] and top[2] in {"p1", "p5"}  # the positive, then lexical near-misses
    on = _bm25_run(tmp_path, CrossSamplingConfig(top_k=3, exclude_answer_negatives=True, bm25_negatives_per_positive=1))
    drawn = set()
    for seed in range(10):
        on.config = replace(on.config, ce_sampling=replace(on.config.ce_sampling, seed=seed))
        (out,), excluded = add_bm25_negatives(on, [example])
        assert out.negatives[:2] == ("p3", "p6") and len(out.negatives) == 3  # appended, the others kept
        assert out.negatives[2] in set(top) - {"p0"} and excluded == 0
        drawn.add(out.negatives[2])
        assert add_bm25_negatives(on, [example])[0] == [out]  # seeded: the same draw again
    assert drawn == set(top) - {"p0"}  # both near-misses get drawn over the seeds


def test_ranked_negatives_skip_positives_taken_and_answer_bearing_passages():
    import random

    from engine.examples import TrainExample
    from engine.train_cross import add_ranked_negatives

    texts = ["Paris is the capital", "Paris again", "Rome", "Madrid", "Berlin"]
    corpus = Corpus([Passage(f"p{i}", t) for i, t in enumerate(texts)])
    example = TrainExample("q0", "capital of France?", ("p0",), ("p2",))
    ranking = ["p0", "p1", "p2", "p3", "p4"]
    for seed in range(20):
        (out,), excluded = add_ranked_negatives([example], [ranking], corpus, random.Random(seed), 2, {"q0": ["Paris"]})
        assert excluded == 1  # p1 holds the answer
        assert out.negatives[0] == "p2" and set(out.negatives[1:]) == {"p3", "p4"}
    # a short pool gives fewer negatives, never a random or repeated one
    (out,), _ = add_ranked_negatives([example], [["p0", "p2", "p3"]], corpus, random.Random(0), 3)
    assert out.negatives == ("p2", "p3")
    with pytest.raises(ValueError, match="must be >= 0"):
        add_ranked_negatives([example], [ranking], corpus, random.Random(0), -1)


def test_cross_bm25_negatives_argument(capsys):
    from engine.cli import build_parser
    from engine.pipeline_cli import build_config

    base = ["pipeline", "run", "--data", "d", "--output", "o", "--preset", "cpu"]
    assert build_config(build_parser().parse_args(base)).ce_sampling.bm25_negatives_per_positive == 0
    config = build_config(build_parser().parse_args([*base, "--cross-bm25-negatives", "1"]))
    assert config.ce_sampling.bm25_negatives_per_positive == 1
    assert config.ce_sampling.negatives_per_positive == preset("cpu").ce_sampling.negatives_per_positive
    for bad in ("-1", "11", "one"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, "--cross-bm25-negatives", bad])
        assert "--cross-bm25-negatives" in capsys.readouterr().err
    with pytest.raises(ValueError, match="bm25_negatives_per_positive must be >= 0"):
        replace(preset("cpu").ce_sampling, bm25_negatives_per_positive=-1)
