"""The app's handlers called directly (no server): Ask, judge, Annotate, Hard negatives, Audit, Pipeline.

Real things throughout: the embedded sample data (plus one hostile passage), the 1-layer MiniLM,
a cross-encoder trained for a few steps, a real SQLite annotation store in tmp_path, and a
pipeline run directory whose decision records follow docs/FORMATS.md.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import test_demo_support as support
from test_demo_support import HOSTILE_ID, RUN_ID, make_config

from demo import handlers, negatives, reports
from demo.handlers import AppError
from demo.services import IMPORT_JOB, load_services
from demo.ui import ce_status_html

demo_data, demo_run, demo_ce = support.demo_data, support.demo_run, support.demo_ce  # shared session fixtures


def rows(db_path) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(
            "SELECT annotator_id, question_id, passage_id, action, grade FROM judgments ORDER BY id"
        ).fetchall()


@pytest.fixture(scope="module")
def plain(tmp_path_factory, demo_data, tiny_model_dir):
    """Services with no cross-encoder and no run (what a fresh start looks like)."""
    tmp = tmp_path_factory.mktemp("plain")
    return load_services(make_config(tmp, demo_data, tiny_model_dir))


@pytest.fixture(scope="module")
def full(tmp_path_factory, demo_data, demo_run, demo_ce, tiny_model_dir):
    """Services with a trained cross-encoder and a pipeline run imported into the store."""
    tmp = tmp_path_factory.mktemp("full")
    services = load_services(make_config(tmp, demo_data, tiny_model_dir, run=str(demo_run), cross_encoder=str(demo_ce)))
    assert services.jobs.wait(IMPORT_JOB, 60).status == "done", services.jobs.state(IMPORT_JOB)
    return services


# --- Ask ----------------------------------------------------------------------------------


def test_ask_without_cross_encoder_shows_no_probabilities(plain):
    result = handlers.ask(plain, "Which member of a honeybee colony lays the fertilised eggs?", 5, "dense")
    assert result.question_id == "q1"  # a question of the data keeps its id
    assert [h["rank"] for h in result.hits] == [1, 2, 3, 4, 5]
    assert all(h["dense_score"] is not None and h["ce_prob"] is None and h["highlight"] is None for h in result.hits)
    scores = [h["dense_score"] for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert not result.reranked and "No trained cross-encoder" in result.notice


def test_ask_modes_and_typed_question_ids(plain):
    a = handlers.ask(plain, "  volcano lava eruption  ", 3, "bm25")
    b = handlers.ask(plain, "volcano lava eruption", 3, "hybrid")
    assert a.question_id == b.question_id and a.question_id.startswith("ask-")
    assert all(h["bm25_score"] is not None for h in a.hits)
    assert plain.asked[a.question_id] == "volcano lava eruption"


@pytest.mark.parametrize(
    "question, message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * 100_000, "100,000 characters"),
        ("\x00\x01\x02\x7f", "empty"),
        (None, "text"),
    ],
)
def test_ask_rejects_bad_questions_clearly(plain, question, message):
    with pytest.raises(AppError, match=message):
        handlers.ask(plain, question, 5, "dense")


def test_ask_survives_binary_garbage_that_is_printable(plain):
    garbage = bytes(range(256)).decode("latin-1") * 3
    result = handlers.ask(plain, garbage, 3, "dense")
    assert len(result.hits) == 3


@pytest.mark.parametrize("k", [0, 21, -1, 2.5, "many", None, True])
def test_ask_rejects_bad_k(plain, k):
    with pytest.raises(AppError, match="k must be"):
        handlers.ask(plain, "bees", k, "dense")


def test_ask_rejects_unknown_mode(plain):
    with pytest.raises(AppError, match="not available"):
        handlers.ask(plain, "bees", 3, "telepathy")


def test_ask_with_trained_cross_encoder_reranks_and_keeps_dense_ranks(full):
    result = handlers.ask(full, "What are male honeybees called?", 6, "dense")
    assert result.reranked and result.notice == ""
    probs = [h["ce_prob"] for h in result.hits]
    assert all(p is not None and 0.0 <= p <= 1.0 for p in probs)
    assert probs == sorted(probs, reverse=True)  # re-ranked order = cross-encoder order
    assert sorted(h["dense_rank"] for h in result.hits) == [1, 2, 3, 4, 5, 6]  # the same dense top-6, re-ordered
    for h in result.hits:
        if h["highlight"] is not None:
            assert h["highlight"] in h["text"] and h["highlight_prob"] >= full.config.highlight_min_prob


def test_ask_orders_by_the_configured_shares_and_says_so(full):
    q = "What are male honeybees called?"
    plain = handlers.ask(full, q, 6, "dense", highlight=False)
    assert handlers.order_label(full, "dense", True) == "cross-encoder order (first-stage ranks shown)"
    assert handlers.order_label(full, "bm25", False) == "bm25 order"
    r = full.retriever
    r.rerank_weight, r.rerank_bm25_weight = 0.0, 1e6  # BM25 dominates: the head in BM25-score order
    try:
        by_bm25 = handlers.ask(full, q, 6, "dense", highlight=False)
        label = handlers.order_label(full, "dense", True)
    finally:
        r.rerank_weight, r.rerank_bm25_weight = 0.0, 0.0
    assert label == "cross-encoder + 1e+06 x BM25 order (first-stage ranks shown)"
    assert all(h["bm25_score"] is not None for h in by_bm25.hits)  # filled in for the dense hits
    assert [h["bm25_score"] for h in by_bm25.hits] == sorted((h["bm25_score"] for h in by_bm25.hits), reverse=True)
    assert {h["passage_id"] for h in by_bm25.hits} == {h["passage_id"] for h in plain.hits}  # the same top-6


def test_highlight_threshold_controls_marking(full):
    low = replace(full.config, highlight_min_prob=0.0)
    full.config, saved = low, full.config
    try:
        result = handlers.ask(full, "What are male honeybees called?", 3, "dense")
    finally:
        full.config = saved
    assert all(h["highlight"] is not None for h in result.hits)  # at bar 0 every hit has a best sentence


def test_ranking_first_then_highlights_equals_one_call(full):
    q = "What are male honeybees called?"
    low = replace(full.config, highlight_min_prob=0.0)
    full.config, saved = low, full.config
    try:
        whole = handlers.ask(full, q, 4, "dense")
        ranking = handlers.ask(full, q, 4, "dense", highlight=False)
        assert all(h["highlight"] is None and h["highlight_prob"] is None for h in ranking.hits)
        later = handlers.add_highlights(full, ranking.question, [dict(h) for h in ranking.hits])
    finally:
        full.config = saved
    assert [h["passage_id"] for h in ranking.hits] == [h["passage_id"] for h in whole.hits]
    assert [(h["highlight"], h["highlight_prob"]) for h in later] == [
        (h["highlight"], h["highlight_prob"]) for h in whole.hits
    ]
    assert all(h["highlight"] is not None for h in later)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_int8_cross_encoder_serves_a_quantised_copy(tmp_path, demo_data, demo_ce, tiny_model_dir, backend):
    from engine.onnx_int8 import OnnxModule, available

    if backend == "onnx" and not available():
        pytest.skip("onnxruntime / onnx are not installed")
    config = make_config(
        tmp_path, demo_data, tiny_model_dir, cross_encoder=str(demo_ce), int8_cross_encoder=True, int8_backend=backend
    )
    services = load_services(config)
    if backend == "torch":
        types = {type(m).__name__ for m in services.cross_encoder.model.modules() if "Linear" in type(m).__name__}
        assert any("quantized" in type(m).__module__ for m in services.cross_encoder.model.modules()), types
    else:
        assert isinstance(services.cross_encoder.model, OnnxModule)
    assert services.retriever.reranker is services.cross_encoder and services.ce_trained
    result = handlers.ask(services, "What are male honeybees called?", 5, "dense")
    probs = [h["ce_prob"] for h in result.hits]
    assert result.reranked and probs == sorted(probs, reverse=True)


def test_onnx_cross_encoder_serves_the_same_probabilities(tmp_path, demo_data, demo_ce, tiny_model_dir):
    from engine.onnx_int8 import OnnxModule, available

    if not available():
        pytest.skip("onnxruntime / onnx are not installed")
    question = "What are male honeybees called?"
    plain = load_services(make_config(tmp_path / "a", demo_data, tiny_model_dir, cross_encoder=str(demo_ce)))
    onnx = load_services(
        make_config(tmp_path / "b", demo_data, tiny_model_dir, cross_encoder=str(demo_ce), onnx_cross_encoder=True)
    )
    assert isinstance(onnx.cross_encoder.model, OnnxModule) and onnx.retriever.reranker is onnx.cross_encoder
    assert "ONNX Runtime in fp32" in ce_status_html(onnx)
    a, b = (handlers.ask(s, question, 5, "dense") for s in (plain, onnx))
    assert [h["passage_id"] for h in a.hits] == [h["passage_id"] for h in b.hits]
    np.testing.assert_allclose([h["ce_prob"] for h in b.hits], [h["ce_prob"] for h in a.hits], atol=1e-5)


def test_configured_rerank_weights_reach_the_retriever(tmp_path, demo_data, tiny_model_dir):
    config = make_config(tmp_path, demo_data, tiny_model_dir, rerank_weight=5.0, rerank_bm25_weight=0.5)
    services = load_services(config)
    assert (services.retriever.rerank_weight, services.retriever.rerank_bm25_weight) == (5.0, 0.5)


def test_rerank_shares_for_other_models_are_served_with_a_notice(tmp_path, demo_data, tiny_model_dir):
    """Weights from an evaluation's output reach the retriever; when that evaluation named another
    dual-encoder than the app serves, the app says so (and says nothing when the models match)."""
    import json

    from demo.config import read_rerank_shares

    out = tmp_path / "eval.json"
    for model, expected in ((tiny_model_dir, 0), (str(tmp_path / "other-model"), 1)):
        config = {"model": model, "retriever": "hybrid", "rerank_weight": 5.0, "rerank_bm25_weight": 0.5}
        out.write_text(json.dumps({"config": config}))
        shares = read_rerank_shares(str(out))
        services = load_services(make_config(tmp_path, demo_data, tiny_model_dir, **shares), import_run=False)
        assert (services.retriever.rerank_weight, services.retriever.rerank_bm25_weight) == (5.0, 0.5)
        notes = [n for n in services.notices if "re-ranking weights" in n]
        assert len(notes) == expected
    assert "other-model" in notes[0] and tiny_model_dir in notes[0]


# --- judge --------------------------------------------------------------------------------


def test_judge_writes_one_row_and_reads_back(plain):
    result = handlers.ask(plain, "What are male honeybees called?", 3, "dense")
    pid = result.hits[0]["passage_id"]
    before = len(rows(plain.store.path))
    jid = handlers.judge(plain, "alice", result.question_id, pid, 3)
    after = rows(plain.store.path)
    assert isinstance(jid, int) and len(after) == before + 1
    assert after[-1] == ("alice", "q2", pid, "grade", 3)
    skip_id = handlers.judge(plain, "alice", result.question_id, pid, "skip")
    assert skip_id > jid and rows(plain.store.path)[-1][3:] == ("skip", None)


def test_judge_typed_question_is_registered(plain):
    result = handlers.ask(plain, "who calms bees with smoke", 2, "dense")
    handlers.judge(plain, "bob", result.question_id, result.hits[0]["passage_id"], "2")
    with sqlite3.connect(plain.store.path) as conn:
        text = conn.execute("SELECT text FROM questions WHERE id = ?", [result.question_id]).fetchone()[0]
    assert text == "who calms bees with smoke"


@pytest.mark.parametrize(
    "annotator, qid, pid, grade, message",
    [
        ("", "q1", "bee_1", 2, "No annotator identity"),
        ("   ", "q1", "bee_1", 2, "No annotator identity"),
        (None, "q1", "bee_1", 2, "No annotator identity"),
        ("carol", "q1", "no_such_passage", 2, "unknown passage id"),
        ("carol", "no_such_question", "bee_1", 2, "unknown question id"),
        ("carol", "q1", "bee_1", 5, "grade must be"),
        ("carol", "q1", "bee_1", -1, "grade must be"),
        ("carol", "q1", "bee_1", "lots", "grade must be"),
        ("carol", "", "bee_1", 1, "question id"),
    ],
)
def test_judge_refuses_bad_input_and_writes_nothing(plain, annotator, qid, pid, grade, message):
    before = rows(plain.store.path)
    with pytest.raises(AppError, match=message):
        handlers.judge(plain, annotator, qid, pid, grade)
    assert rows(plain.store.path) == before


def test_concurrent_annotators_lose_nothing(plain):
    before = len(rows(plain.store.path))
    errors = []

    def work(name: str) -> None:
        try:
            for i in range(8):
                handlers.judge(plain, name, "q1", f"bee_{1 + i}", i % 4)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"annotator-{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(rows(plain.store.path)) == before + 32


# --- Annotate -----------------------------------------------------------------------------


def test_annotate_queue_judge_and_undo(full):
    item, why = handlers.next_item(full, "dana")
    assert item is not None and why == "" and item.run_id == RUN_ID
    jid = handlers.judge_item(full, "dana", item.__dict__, "2", 4.5, blind=True)
    with sqlite3.connect(full.store.path) as conn:
        row = conn.execute(
            "SELECT decision_id, stratum, suggestion_visible, seconds, grade FROM judgments WHERE id = ?", [jid]
        ).fetchone()
    assert row == (item.decision_id, item.stratum, 0, 4.5, 2)
    mine, total = handlers.progress(full, "dana")
    assert (mine, total) == (1, 16)
    undone = handlers.undo(full, "dana")
    assert undone is not None and handlers.progress(full, "dana")[0] == 0
    with pytest.raises(AppError, match="No annotator identity"):
        handlers.judge_item(full, "", item.__dict__, 1, None, True)


def test_annotate_without_run_explains(plain):
    item, why = handlers.next_item(plain, "erin")
    assert item is None and "No machine decisions" in why


# --- Hard negatives -----------------------------------------------------------------------


def test_redecide_reproduces_recorded_decisions_at_recorded_thresholds(full):
    frame = full.run.decisions()
    assert (negatives.redecide(frame, 0.1, 0.9) == frame["decision"]).all()
    moved = negatives.redecide(frame, 0.4, 0.9)
    changed = frame[moved != frame["decision"]]
    # raising the negative threshold to 0.4 turns the dropped passages (p = 0.35) into hard negatives
    assert set(changed["decision"]) == {"dropped_false_negative"} and set(moved[changed.index]) == {"hard_negative"}
    strict = negatives.redecide(frame, 0.1, 0.99)  # nothing above 0.99: no pseudo-positive, all ignored
    assert set(strict[frame["step"] == "augment"]) == {"ignored"}


def test_question_view_and_counts(full):
    head, table = negatives.question_view(full, "q1", 20, 0.4, 0.9)
    assert "Gold passage" in head and "bee_1" in head
    assert list(table.columns) == negatives.TABLE_COLUMNS
    assert (table["changes"] == "CHANGES").sum() == 1
    counts = negatives.decision_counts(full, 0.4, 0.9).set_index("decision")
    assert (
        counts.loc["dropped_false_negative", "recorded"] == 2 and counts.loc["dropped_false_negative", "at_slider"] == 0
    )
    assert counts["difference"].sum() == 0


def test_question_view_preview_without_run(plain):
    head, table = negatives.question_view(plain, "q1", 10, 0.1, 0.9)
    assert "Preview" in head and "no trained cross-encoder" in head
    assert len(table) == 10 and set(table["decision"]) <= {"positive", "(no cross-encoder)"}
    with pytest.raises(AppError, match="unknown question"):
        negatives.question_view(plain, "nope", 10, 0.1, 0.9)


def test_training_question_search(full, plain):
    assert {qid for _, qid in negatives.training_questions(full)} == {"q1", "q2", "q4", "q9"}
    found = negatives.training_questions(plain, "HONEYBEE")
    assert found and all("honeybee" in label.lower() for label, _ in found)


# --- Audit and Pipeline ---------------------------------------------------------------------


def test_audit_tables_plots_and_exports(full, tmp_path):
    for _ in range(6):
        item, _ = handlers.next_item(full, "frank")
        if item is None:
            break
        handlers.judge_item(
            full, "frank", item.__dict__, 3 if item.decision in ("positive", "pseudo_positive") else 0, 2.0, True
        )
    view = reports.audit(full)
    assert not view.precision.empty and "decision" in view.precision.columns
    assert view.sweep_plot is not None and view.calibration_plot is not None
    path = reports.export(full, "qrels")
    lines = open(path).read().splitlines()
    assert lines and all(len(line.split()) == 4 and line.split()[1] == "0" for line in lines)
    assert reports.export(full, "jsonl").endswith(".jsonl")
    with pytest.raises(AppError, match="unknown export"):
        reports.export(full, "xml")


def test_pipeline_tables(full, plain):
    steps = reports.step_table(full)
    assert list(steps["step"]) == ["step1_dual_encoder", "step2_cross_encoder", "step3_denoise", "step4_augment"]
    assert steps["done"].all() and "dev.MRR@10" in steps.columns
    table, png, note = reports.ablation_view(full)
    assert list(table["name"]) == ["BM25", "M_D2"] and note == ""
    assert list(table["MRR@10"]) == [55.0, 64.2] and table["± MRR@10"].iloc[1] == 0.4
    assert not any(isinstance(v, dict) for v in table.to_numpy().ravel())  # nothing shown as [object Object]
    assert isinstance(reports.step_table(plain), pd.DataFrame) and reports.ablation_view(plain)[2].startswith(
        "No pipeline run"
    )
    with pytest.raises(AppError, match="steps must be"):
        reports.start_pipeline(plain, "7", "tiny")
    with pytest.raises(AppError, match="unknown preset"):
        reports.start_pipeline(plain, "1", "huge")


def test_hostile_passage_is_in_the_corpus(plain):
    assert HOSTILE_ID in plain.dataset.corpus


def test_background_ce_training_data_follows_the_pipeline_recipe(plain):
    from demo.services import ce_training_examples
    from engine.metrics import has_answer

    examples = ce_training_examples(plain)
    questions = {q.id: q for q in plain.dataset.split(plain.train_split())[0]}
    cfg = plain.config
    assert examples
    for ex in examples:
        per_positive = cfg.ce_train_negatives + cfg.ce_train_random_negatives
        assert len(ex.negatives) == per_positive * len(ex.positives) == len(set(ex.negatives))
        assert not set(ex.negatives) & set(ex.positives)
        answers = questions[ex.question_id].answers
        top = ex.negatives[: cfg.ce_train_negatives * len(ex.positives)]
        assert not any(has_answer(plain.dataset.corpus[pid].text, answers) for pid in top)
