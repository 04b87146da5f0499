"""Background jobs: the runner itself, training a cross-encoder from the app, running the pipeline from the app.

The training and pipeline jobs run for real, on the 1-layer MiniLM and the embedded sample data,
with a handful of steps (the `tiny` preset), so the whole file stays within about a minute.
"""

from __future__ import annotations

import threading
import time

import pytest
import test_demo_support as support
from test_demo_support import make_config

from demo import handlers
from demo.jobs import JobRunner
from demo.services import CE_JOB, IMPORT_JOB, PIPELINE_JOB, load_services, start_cross_encoder_training

demo_data = support.demo_data  # shared session fixture


def test_job_runner_reports_progress_result_and_failure():
    runner = JobRunner()
    gate = threading.Event()

    def job(progress):
        progress(0.5, "half way")
        gate.wait(5)
        return 42

    state = runner.start("a", job)
    assert state.running
    deadline = time.time() + 5
    while runner.state("a").message != "half way" and time.time() < deadline:
        time.sleep(0.01)
    assert runner.state("a").fraction == 0.5
    assert runner.start("a", job).running  # a second start while running returns the running job
    gate.set()
    assert runner.wait("a", 5).status == "done" and runner.result("a") == 42

    def broken(progress):
        raise RuntimeError("disk full")

    runner.start("b", broken)
    state = runner.wait("b", 5)
    assert state.status == "failed" and "disk full" in state.error
    assert runner.state("never").status == "idle"


def test_training_a_cross_encoder_in_the_background_swaps_it_in(tmp_path, demo_data, tiny_model_dir):
    config = make_config(tmp_path, demo_data, tiny_model_dir, ce_base_model=tiny_model_dir, ce_train_steps=3)
    services = load_services(config)
    assert not services.ce_trained and handlers.ask(services, "bees", 3).hits[0]["ce_prob"] is None
    seen = []
    start_cross_encoder_training(services)
    while services.jobs.state(CE_JOB).running:
        seen.append(services.jobs.state(CE_JOB).fraction)
        time.sleep(0.05)
    state = services.jobs.state(CE_JOB)
    assert state.status == "done", state.error
    assert services.ce_trained and seen and min(seen) >= 0.0
    result = handlers.ask(services, "bees", 3)
    assert result.reranked and all(h["ce_prob"] is not None for h in result.hits)
    check = services.cross_encoder.config.provenance["app_check"]
    assert check["split"] == "dev" and 0 <= check["reranked_mrr"] <= 1 and 0 <= check["dense_mrr"] <= 1
    from demo.ui import ce_status_html

    assert "Checked on" in ce_status_html(services) and "No trained cross-encoder" not in ce_status_html(services)
    # kept in the cache: the next start of the app on this corpus uses it
    assert load_services(config).ce_trained


def test_running_the_pipeline_from_the_app_loads_the_run(tmp_path, demo_data, tiny_model_dir):
    pytest.importorskip("engine.pipeline")
    services = load_services(make_config(tmp_path, demo_data, tiny_model_dir))
    assert services.run is None
    from demo import reports

    reports.start_pipeline(services, "1,2,3,4", "tiny")
    state = services.jobs.wait(PIPELINE_JOB, 300)
    assert state.status == "done", state.error
    assert services.run is not None and services.ce_trained
    assert services.jobs.wait(IMPORT_JOB, 60).status == "done"
    steps = reports.step_table(services)
    assert steps["done"].all()
    item, why = handlers.next_item(services, "pipeline-tester")
    assert item is not None, why
