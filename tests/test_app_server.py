"""End to end through HTTP: the app launched on a free localhost port, driven with gradio_client.

`ask` returns ranked hits with dense and cross-encoder scores; `judge` stores a judgment that we
then read back from the SQLite file; bad input comes back as a clear error and writes nothing.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
import test_demo_support as support
from test_demo_support import free_port, make_config

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

demo_data, demo_run, demo_ce = support.demo_data, support.demo_run, support.demo_ce  # shared session fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory, demo_data, demo_ce, tiny_model_dir):
    from demo import build_app, launch
    from demo.services import load_services

    tmp = tmp_path_factory.mktemp("server")
    services = load_services(make_config(tmp, demo_data, tiny_model_dir, cross_encoder=str(demo_ce)))
    app = build_app(services)
    port = free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield services, f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[1], verbose=False)


def test_ask_returns_hits_with_both_scores(client):
    out = client.predict(question="What are male honeybees called?", k=4, mode="dense", api_name="/ask")
    assert out["question_id"] == "q2" and out["reranked"] and out["cross_encoder_trained"]
    assert out["order"] == "cross-encoder order (first-stage ranks shown)"
    hits = out["hits"]
    assert len(hits) == 4
    for h in hits:
        assert isinstance(h["dense_score"], float) and isinstance(h["dense_rank"], int)
        assert 0.0 <= h["ce_prob"] <= 1.0 and h["ce_rank"] == h["rank"]
    assert [h["ce_prob"] for h in hits] == sorted((h["ce_prob"] for h in hits), reverse=True)


def test_judge_stores_a_row_we_can_read_back(client, server):
    services, _ = server
    out = client.predict(question="Which member of a honeybee colony lays the fertilised eggs?", k=3, api_name="/ask")
    pid = out["hits"][1]["passage_id"]
    jid = client.predict(
        annotator="grace", question_id=out["question_id"], passage_id=pid, grade="3", api_name="/judge"
    )
    with sqlite3.connect(services.store.path) as conn:
        row = conn.execute(
            "SELECT annotator_id, question_id, passage_id, action, grade FROM judgments WHERE id = ?", [jid]
        ).fetchone()
    assert row == ("grace", "q1", pid, "grade", 3)


def test_a_typed_question_can_be_judged_after_asking(client, server):
    out = client.predict(question="how do cyclists stay upright?", k=2, api_name="/ask")
    assert out["question_id"].startswith("ask-")
    jid = client.predict(
        annotator="heidi",
        question_id=out["question_id"],
        passage_id=out["hits"][0]["passage_id"],
        grade="skip",
        api_name="/judge",
    )
    with sqlite3.connect(server[0].store.path) as conn:
        assert conn.execute("SELECT action, grade FROM judgments WHERE id = ?", [jid]).fetchone() == ("skip", None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"annotator": "", "question_id": "q1", "passage_id": "bee_1", "grade": "2"}, "No annotator identity"),
        ({"annotator": "ivan", "question_id": "q1", "passage_id": "nope", "grade": "2"}, "unknown passage id"),
        ({"annotator": "ivan", "question_id": "nope", "passage_id": "bee_1", "grade": "2"}, "unknown question id"),
        ({"annotator": "ivan", "question_id": "q1", "passage_id": "bee_1", "grade": "9"}, "grade must be"),
    ],
)
def test_judge_errors_are_clear_and_write_nothing(client, server, kwargs, message):
    from gradio_client.exceptions import AppError

    with sqlite3.connect(server[0].store.path) as conn:
        before = conn.execute("SELECT count(*) FROM judgments").fetchone()[0]
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name="/judge")
    with sqlite3.connect(server[0].store.path) as conn:
        assert conn.execute("SELECT count(*) FROM judgments").fetchone()[0] == before


@pytest.mark.parametrize("question, message", [("", "empty"), ("   ", "empty"), ("y" * 100_000, "limit")])
def test_ask_errors_are_clear(client, question, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(question=question, k=3, api_name="/ask")


def test_status_endpoint(client):
    status = client.predict(api_name="/status")
    assert status["cross_encoder_trained"] is True and status["passages"] == 145
    assert status["timings"]["total_s"] > 0
