"""`python -m engine bench` on tiny inputs: documented JSON keys, identical-output checks, outputs.

Real things, small: a 1-layer MiniLM saved as a dual-encoder directory (so sentence-transformers
loads exactly our model), the 8-passage BEIR fixture, real FAISS on a few thousand synthetic
vectors. Timings are never asserted; only shapes, keys and invariants are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_tiny_beir

from engine.bench import BenchReport, add_parser, markdown, run_bench, write_report
from engine.bench_context import SECTIONS, BenchConfig, BenchContext
from engine.bench_scale import clustered_vectors, index_section, pipeline_section, recall_at
from engine.bench_speed import cross_section, encode_section, latency_section, quality_section, train_section
from engine.bench_timing import Comparison, Row, Section, Timing, compare


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_model_dir) -> BenchContext:
    from engine.dual_encoder import DualEncoder, DualEncoderConfig

    root = tmp_path_factory.mktemp("bench")
    data = write_tiny_beir(root / "data")
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir)).save(root / "dual")
    config = BenchConfig.quick_preset(
        data=str(data),
        model=str(model),
        cross_encoder=tiny_model_dir,
        output=str(root / "out"),
        repeats=1,
        encode_passages=10,
        ce_pairs=6,
        rerank_depth=3,
        quality_questions=0,
        latency_queries=2,
        train_steps=1,
        train_batch=2,
        train_repeats=1,
        index_sizes=(2_000,),
        index_queries=20,
        index_factories=("HNSW32,Flat", "IVF16,Flat"),
    )
    return BenchContext(config)


def test_compare_alternates_and_reports_ratio_of_medians():
    calls = []
    comp = compare(lambda: calls.append("a"), lambda: calls.append("b"), repeats=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then A B / B A alternating
    assert len(comp.ours.seconds) == len(comp.baseline.seconds) == 4
    c = Comparison(Timing((1.0, 2.0, 4.0)), Timing((2.0, 2.0, 12.0)))
    assert c.ratio == 1.0 and c.paired_ratio == 2.0  # ratio of medians vs median of back-to-back ratios
    t = Timing((3.0, 1.0, 2.0))
    assert (t.min, t.median) == (1.0, 2.0)
    assert t.to_dict(work=10)["per_s_median"] == 5.0


def test_encode_section_checks_identical_embeddings(ctx):
    s = encode_section(ctx)
    assert s.data["identical"] is True and s.data["max_abs_diff_vs_baseline"] < 1e-5
    for side in ("fp32", "int8"):
        assert set(s.data[side]) == {"ours", "baseline", "ratio_of_medians", "median_paired_ratio"}
        assert s.data[side]["ours"]["per_s_median"] > 0
    assert 0.8 < s.data["int8_cosine_to_fp32"]["min"] <= 1.0001
    assert [r.goal for r in s.rows] == ["≥ 1.0× and identical"] * 2 + ["≥ 1.8×"]
    # the same fp32 model in ONNX Runtime: the baseline's vectors, timed against it
    assert s.data["onnx_fp32"]["identical"] is True and s.data["onnx_fp32"]["ours"]["per_s_median"] > 0
    assert "ONNX Runtime fp32" in s.rows[1].measurement


def test_cross_section_uses_the_same_weights_as_the_baseline(ctx):
    s = cross_section(ctx)
    assert s.data["identical"] is True, s.data["max_abs_logit_diff_vs_baseline"]
    assert s.data["pairs"] == 6 and "ratio_of_medians" in s.data["fp32"]
    assert s.data["onnx_fp32"]["identical"] is True, s.data["onnx_fp32"]["max_abs_diff_vs_baseline"]


def test_quality_and_latency_sections(ctx):
    q = quality_section(ctx)
    assert {"fp32", "int8", "mrr10_loss_points", "scope"} <= set(q.data)
    assert 0 <= q.data["fp32"]["MRR@10"] <= 100
    assert "SUBSET" in q.data["scope"]  # quick mode says so
    lat = latency_section(ctx)
    for label in ("fp32", "onnx_fp32", "int8"):
        assert set(lat.data[label]["stages_p50_ms"]) == {"encode", "search", "rerank"}
        assert lat.data[label]["p95_ms"] >= lat.data[label]["p50_ms"] > 0


def test_rerank_quality_compares_fp32_and_int8_cross_encoders(ctx):
    from dataclasses import replace as dc_replace

    from engine.bench_speed import _rerank_quality

    questions, qrels = ctx.split()
    dense = {q.id: ctx.corpus.ids for q in questions}  # every passage, in corpus order
    assert _rerank_quality(ctx, dense, qrels, {}) is None  # untrained head: no re-ranking quality
    ce = ctx.cross
    ctx._cache["cross"] = type(ce)(ce.model, ce.tokenizer, dc_replace(ce.config, trained=True))
    ctx._cache.pop("cross_int8", None)
    try:
        out = _rerank_quality(ctx, dense, qrels, {})
    finally:
        ctx._cache["cross"] = ce
        ctx._cache.pop("cross_int8", None)
    assert out["questions"] == len(qrels) and out["depth"] == 3
    for label in ("dense", "fp32", "int8"):
        assert 0 <= out[label]["MRR@10"] <= 100
    assert out["mrr10_loss_points"] == round(out["fp32"]["MRR@10"] - out["int8"]["MRR@10"], 2)


def test_train_section_runs_both_trainers(ctx):
    s = train_section(ctx)
    assert s.data["questions_per_repeat"] == 2 and s.data["ours"]["per_s_median"] > 0
    assert s.rows[0].ratio == pytest.approx(s.data["ratio_of_medians"], rel=1e-2)


def test_index_section_recall_against_exact(ctx):
    s = index_section(ctx)
    (size,) = s.data["sizes"]
    assert size["vectors"] == 2_000 and size["exact"]["bytes"] >= 2_000 * 384 * 4
    factories = [a["factory"] for a in size["approximate"]]
    assert factories == ["HNSW32,Flat", "IVF16,Flat"]
    for a in size["approximate"]:
        assert all(0 <= p["recall@10"] <= 1 for p in a["sweep"])
    hnsw = size["approximate"][0]["sweep"][-1]
    assert hnsw["recall@10"] > 0.9  # efSearch 256 on 2k vectors is near exact


def test_synthetic_vectors_are_clustered_unit_vectors():
    x = clustered_vectors(500, 32, seed=1, clusters=5)
    assert x.dtype == np.float32 and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    sims = x @ x.T
    assert np.median(sims) < 0.5 < np.percentile(sims, 90)  # clusters, not uniform noise
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at(truth, truth) == 1.0 and recall_at(np.array([[1, 9, 9], [9, 9, 9]]), truth) == pytest.approx(1 / 6)


def test_pipeline_section_reads_step_times(tmp_path):
    for i, secs in enumerate((60.0, 120.0, 30.0, 90.0), 1):
        d = tmp_path / f"step{i}_x"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"seconds": {"train": secs - 10, "eval": 10.0}}))
        (d / "DONE").write_text("{}")
    s = pipeline_section(BenchContext(BenchConfig(pipeline_run=str(tmp_path))))
    assert s.data["total_s"] == 300.0 and s.rows[0].met is True
    assert pipeline_section(BenchContext(BenchConfig())).data == {
        "skipped": "no --pipeline-run DIR given (or it does not exist)"
    }


def test_report_files_and_a_failing_section_is_recorded(ctx, tmp_path, monkeypatch):
    from engine import bench

    def broken(_ctx):
        raise RuntimeError("boom")

    fake = {
        "encode": lambda c: Section("encode", {"x": 1}, [Row("m", "1 p/s", "2 p/s", 0.5, "≥ 1.0×", False)]),
        "app": broken,
    }
    monkeypatch.setattr(bench, "section_functions", lambda: fake)  # the real sections are tested above
    seen = []
    report = run_bench(BenchConfig(sections=("encode", "app")), ctx, on_section=seen.append)
    assert [len(r.sections) for r in seen] == [1, 2]
    assert report.sections[1].data == {"error": "RuntimeError: boom"}
    files = write_report(report, tmp_path)
    doc = json.loads(files["json"].read_text())
    assert {"started", "machine", "config", "rows", "sections"} <= set(doc)
    assert {"cpu", "cores", "torch_threads", "versions"} <= set(doc["machine"])
    assert doc["rows"][0] == {
        "measurement": "m",
        "ours": "1 p/s",
        "baseline": "2 p/s",
        "ratio": 0.5,
        "goal": "≥ 1.0×",
        "met": False,
    }
    md = files["md"].read_text()
    assert "| m | 1 p/s | 2 p/s | 0.50× | ≥ 1.0× | **no** |" in md and "app (FAILED)" in md
    assert files["ratios"].stat().st_size > 1000
    back = bench.load_report(files["json"])  # merging runs made in separate processes
    assert [s.name for s in back.sections] == ["encode", "app"] and back.rows == report.rows
    merged = bench.merge_reports(
        [back, BenchReport(report.config, report.machine, "later", [Section("app", {"ok": 1})])]
    )
    assert [s.data for s in merged.sections] == [{"x": 1}, {"ok": 1}]


def test_cli_registers_bench(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--quick", "--only", "index,app"])
    assert args.quick and args.only == "index,app" and args.func.__name__ == "cmd_bench"
    with pytest.raises(ValueError, match="unknown bench section"):
        args.func(parser.parse_args(["bench", "--only", "nope"]))
    assert set(SECTIONS) == {"encode", "cross", "quality", "latency", "train", "index", "app", "pipeline"}
    machine = {"cpu": "x", "cores": 2, "torch_threads": 2, "memory_gb": 1, "versions": {"torch": "t", "sentence_transformers": "s", "faiss": "f"}}  # fmt: skip
    md = markdown(BenchReport(BenchConfig(quick=True), machine, "now", []))
    assert md.startswith("Machine: x, 2 cores") and "with --quick" in md and "| measurement | ours |" in md
