"""`python -m engine`: evaluate writes the documented JSON; bad input exits 2 with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {"R@1", "R@5", "R@20", "R@100", "MRR@10", "nDCG@10", "Acc@1", "Acc@5", "Acc@20", "Acc@100"}


def test_evaluate_bm25_writes_metrics(tiny_beir, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert (
        main(["evaluate", "--data", str(tiny_beir), "--split", "test", "--retriever", "bm25", "--output", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    assert METRIC_KEYS <= result.keys()
    assert result["num_questions"] == 2 and result["config"]["retriever"] == "bm25"
    assert result["R@1"] == 100.0 and result["MRR@10"] == 100.0  # both test questions are lexically obvious
    assert all(0 <= result[k] <= 100 for k in METRIC_KEYS)


def test_evaluate_dense_and_hybrid(tiny_beir, tmp_path, tiny_model_dir):
    for mode in ("dense", "hybrid"):
        out = tmp_path / f"{mode}.json"
        argv = [
            "evaluate",
            "--data",
            str(tiny_beir),
            "--split",
            "train",
            "--retriever",
            mode,
            "--model",
            tiny_model_dir,
        ]
        assert main([*argv, "--cache", str(tmp_path / "cache"), "--output", str(out)]) == 0
        assert json.loads(out.read_text())["R@100"] == 100.0  # 8 passages: everything is in the top 100


def test_evaluate_chooses_the_rerank_weight_on_another_split(tiny_beir, tmp_path, tiny_model_dir, capsys):
    common = ["evaluate", "--data", str(tiny_beir), "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    # saved once: loading the bare model twice would give two different random heads
    CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir)).save(tmp_path / "ce")
    rerank = ["--reranker", str(tmp_path / "ce"), "--rerank-depth", "4"]
    out = tmp_path / "m.json"
    argv = [*common, *rerank, "--split", "test", "--rerank-weight-from-dev", "train", "--output", str(out)]
    assert main(argv) == 0
    config = json.loads(out.read_text())["config"]
    choice = config["rerank_weight_choice"]
    assert choice["split"] == "train" and choice["questions"] == 2 and isinstance(choice["on_grid_edge"], bool)
    tried = {float(key.split()[3]): v for key, v in choice.items() if key.startswith("MRR@10 at weights")}
    from engine.fusion import RERANK_BM25_WEIGHTS, RERANK_WEIGHTS

    assert sorted(tried) == sorted(RERANK_WEIGHTS)
    assert all(key.endswith(", 0 (BM25)") for key in choice if key.startswith("MRR@"))  # no --rerank-bm25
    best = max(tried.values())
    assert config["rerank_weight"] == min(w for w, v in tried.items() if v == best)
    assert config["rerank_bm25_weight"] == 0.0
    onnx = tmp_path / "onnx.json"
    assert main([*argv[:-1], str(onnx), "--rerank-onnx"]) == 0  # the fp32 ONNX copy: the same logits, the same result
    assert json.loads(onnx.read_text())["config"]["rerank_weight_choice"] == choice
    capsys.readouterr()
    assert main([*common, "--split", "test", "--rerank-onnx"]) == 2 and "needs --reranker" in capsys.readouterr().err
    same = [*common, *rerank, "--split", "test", "--rerank-weight-from-dev", "test"]
    assert main(same) == 2 and "another split than the one evaluated" in capsys.readouterr().err
    assert main([*common, "--split", "test", "--rerank-weight-from-dev", "train"]) == 2
    assert "needs --reranker and --rerank-depth" in capsys.readouterr().err
    assert main([*common, *rerank, "--split", "test", "--rerank-weight-from-dev", "nope"]) == 2
    assert "no split 'nope'" in capsys.readouterr().err
    assert main([*common, *rerank, "--split", "test", "--rerank-bm25"]) == 2
    assert "add --rerank-weight-from-dev" in capsys.readouterr().err
    assert main([*argv, "--rerank-weight", "2"]) == 2 and "drop --rerank-weight" in capsys.readouterr().err
    assert main([*common, *rerank, "--rerank-bm25-weight", "-1"]) == 2
    assert "--rerank-bm25-weight must be a number >= 0" in capsys.readouterr().err
    assert main(["search", "--data", str(tiny_beir), "--rerank-weight", "nan", "bees"]) == 2
    assert "--rerank-weight must be a number >= 0" in capsys.readouterr().err

    # --rerank-bm25: the BM25 share is chosen too, on a grid of (dense, BM25) pairs; BM25 is loaded for it
    both = tmp_path / "both.json"
    assert main([*argv[:-1], str(both), "--rerank-bm25"]) == 0
    config = json.loads(both.read_text())["config"]
    pairs = {
        (float(k.split()[3].rstrip(",")), float(k.split()[5])): v
        for k, v in config["rerank_weight_choice"].items()
        if k.startswith("MRR@10 at weights")
    }
    assert set(pairs) == {(w, v) for w in RERANK_WEIGHTS for v in RERANK_BM25_WEIGHTS}
    best = max(pairs.values())
    chosen = min((p for p, m in pairs.items() if m == best), key=lambda p: (p[1], p[0]))
    assert (config["rerank_weight"], config["rerank_bm25_weight"]) == chosen
    assert config["rerank_weight_choice"]["grid_extensions"] == 0

    # --rerank-grid-extend: the fixed grid's results stay; the choice is never worse on the chosen split
    wide = tmp_path / "wide.json"
    assert main([*argv[:-1], str(wide), "--rerank-bm25", "--rerank-grid-extend", "3"]) == 0
    wide_choice = json.loads(wide.read_text())["config"]["rerank_weight_choice"]
    assert {k: v for k, v in wide_choice.items() if k in config["rerank_weight_choice"]} == config[
        "rerank_weight_choice"
    ] | {"on_grid_edge": wide_choice["on_grid_edge"], "grid_extensions": wide_choice["grid_extensions"]}
    assert 0 <= wide_choice["grid_extensions"] <= 3
    assert (wide_choice["grid_extensions"] > 0) == config["rerank_weight_choice"]["on_grid_edge"]
    # --rerank-max-length: the cross-encoder reads that many tokens at inference, and the output says so
    assert config["rerank_max_length"] == CrossEncoder.load(tmp_path / "ce").config.max_length
    short = tmp_path / "short.json"
    assert main([*argv[:-1], str(short), "--rerank-max-length", "32"]) == 0
    assert json.loads(short.read_text())["config"]["rerank_max_length"] == 32
    capsys.readouterr()
    assert main([*common, "--split", "test", "--rerank-max-length", "64"]) == 2
    assert "--rerank-max-length needs --reranker" in capsys.readouterr().err
    assert main([*argv, "--rerank-max-length", "1024"]) == 2 and "32-512" in capsys.readouterr().err
    assert main([*common, *rerank, "--split", "test", "--rerank-grid-extend", "2"]) == 2
    assert "add it" in capsys.readouterr().err
    assert main([*argv, "--rerank-grid-extend", "-1"]) == 2 and ">= 0" in capsys.readouterr().err


def test_int8_shards_index_only_with_the_int8_model(tiny_beir, tmp_path, tiny_model_dir, capsys):
    # int8 vectors differ slightly from fp32 ones: they must not be cached under the fp32 model's key
    common = ["--data", str(tiny_beir), "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    int8 = ["--int8", "--int8-backend", "torch"]
    for i in range(2):
        assert main(["encode", *common, *int8, "--shard", f"{i}/2", "--output", str(tmp_path / "shards")]) == 0
    capsys.readouterr()
    assert main(["index", *common, "--from-shards", str(tmp_path / "shards")]) == 2
    assert "pass the same --model, --passage-max-length and --int8" in capsys.readouterr().err
    assert main(["index", *common, *int8, "--from-shards", str(tmp_path / "shards")]) == 0
    int8_index = json.loads(capsys.readouterr().out)
    assert main(["index", *common]) == 0  # fp32, encoded here
    fp32_index = json.loads(capsys.readouterr().out)
    assert int8_index["passages"] == fp32_index["passages"] == 8
    assert Path(int8_index["cache"]).parent != Path(fp32_index["cache"])  # its own model key


def test_onnx_fp32_shards_index_as_the_fp32_model(tiny_beir, tmp_path, tiny_model_dir, capsys):
    pytest.importorskip("onnxruntime")
    # ONNX Runtime fp32 gives the fp32 vectors: its shards merge under the fp32 model's key
    common = ["--data", str(tiny_beir), "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    for i in range(2):
        assert main(["encode", *common, "--onnx", "--shard", f"{i}/2", "--output", str(tmp_path / "shards")]) == 0
    capsys.readouterr()
    assert main(["index", *common, "--from-shards", str(tmp_path / "shards")]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert main(["index", *common]) == 0  # fp32: served from the cache entry the shards made
    plain = json.loads(capsys.readouterr().out)
    a, b = Path(merged["cache"]), Path(plain["cache"])  # the same model-key directory (one may name its index)
    assert a == b or a in b.parents or b in a.parents, (merged, plain)
    with pytest.raises(SystemExit):
        main(["encode", *common, "--onnx", "--int8", "--output", str(tmp_path / "x")])


def test_search_prints_hits(tiny_beir, capsys):
    assert main(["search", "--data", str(tiny_beir), "--retriever", "bm25", "--k", "2", "Fresnel lens"]) == 0
    assert "[lighthouse_0]" in capsys.readouterr().out.splitlines()[0]


def test_search_with_a_bm25_share_prints_the_rerank_score(tiny_beir, tmp_path, tiny_model_dir, capsys):
    from engine.cross_encoder import CrossEncoder, CrossEncoderConfig

    CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir)).save(tmp_path / "ce")
    common = ["search", "--data", str(tiny_beir), "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    rerank = ["--reranker", str(tmp_path / "ce"), "--rerank-depth", "3", "--k", "3", "--json"]
    assert main([*common, *rerank, "--rerank-bm25-weight", "1000", "waggle dance of honeybees"]) == 0
    hits = json.loads(capsys.readouterr().out)
    # a dense first stage, BM25 loaded for the share: every hit has both scores, BM25 orders them
    assert all(h["bm25_score"] is not None and h["dense_score"] is not None for h in hits)
    assert [h["bm25_score"] for h in hits] == sorted((h["bm25_score"] for h in hits), reverse=True)
    assert hits[0]["passage"]["id"] == "bees_0"
    for h in hits:
        assert h["rerank_score"] == pytest.approx(h["ce_logit"] + 1000 * h["bm25_score"], rel=1e-6)
    assert main([*common, *rerank[:-1], "--rerank-bm25-weight", "1000", "waggle dance of honeybees"]) == 0
    assert "rerank=" in capsys.readouterr().out.splitlines()[0]
    assert main([*common, *rerank[:-1], "waggle dance of honeybees"]) == 0
    assert "rerank=" not in capsys.readouterr().out  # the cross-encoder alone: its logit is the order


def test_malformed_corpus_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n')
    assert main(["evaluate", "--data", str(tmp_path), "--retriever", "bm25"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "corpus.jsonl:2" in err


def test_unknown_split_is_reported(tiny_beir, capsys):
    assert main(["evaluate", "--data", str(tiny_beir), "--split", "nope", "--retriever", "bm25"]) == 2
    assert "no split 'nope'" in capsys.readouterr().err


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert parser.format_help().strip(), name
        assert f"python -m engine {name}" in readme, f"`python -m engine {name}` is not documented in README.md"


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "evaluate" in proc.stdout


@pytest.mark.parametrize("command", ["evaluate", "index", "encode", "search"])
def test_subcommand_help(command):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0


def test_evaluate_pairs_with_an_earlier_per_question_file(tiny_beir, tmp_path, tiny_model_dir, capsys):
    base = ["evaluate", "--data", str(tiny_beir), "--split", "train"]
    dense = [*base, "--model", tiny_model_dir, "--cache", str(tmp_path / "cache")]
    bm25_file, dense_file = tmp_path / "bm25-q.json", tmp_path / "dense-q.json"
    assert (
        main([*base, "--retriever", "bm25", "--per-question", str(bm25_file), "--output", str(tmp_path / "b.json")])
        == 0
    )
    stored = json.loads(bm25_file.read_text())
    assert stored["split"] == "train" and stored["config"]["retriever"] == "bm25"
    per_question = stored["result"]["per_question"]
    assert len(per_question) == json.loads((tmp_path / "b.json").read_text())["num_questions"] > 1
    assert all(v["first_relevant_rank"] >= 1 for v in per_question.values())
    capsys.readouterr()
    argv = [*dense, "--per-question", str(dense_file), "--paired-with", str(bm25_file)]
    assert main([*argv, "--output", str(tmp_path / "d.json")]) == 0
    out = json.loads((tmp_path / "d.json").read_text())
    paired = out["paired_with"]
    bm25_mrr = json.loads((tmp_path / "b.json").read_text())["MRR@10"]
    assert paired["MRR@10"] == pytest.approx(out["MRR@10"] - bm25_mrr, abs=0.02)  # dense minus BM25
    assert paired["questions"] == len(per_question) and paired["against"]["retriever"] == "bm25"
    assert paired["ci95"] >= 0 and paired["verdict"] in ("better", "worse", "within noise")
    # by hand: per question 1 / first relevant rank within the top 10, dense minus BM25
    mine = json.loads(dense_file.read_text())["result"]["per_question"]
    rr = {n: {q: (1 / v["first_relevant_rank"] if 0 < v["first_relevant_rank"] <= 10 else 0) for q, v in f.items()}
          for n, f in (("dense", mine), ("bm25", per_question))}  # fmt: skip
    by_hand = 100 * sum(rr["dense"][q] - rr["bm25"][q] for q in per_question) / len(per_question)
    assert paired["MRR@10"] == pytest.approx(by_hand, abs=0.01)
    # the same file twice: no difference
    assert main([*dense, "--paired-with", str(dense_file), "--output", str(tmp_path / "same.json")]) == 0
    same = json.loads((tmp_path / "same.json").read_text())["paired_with"]
    assert (same["MRR@10"], same["ci95"], same["verdict"]) == (0.0, 0.0, "within noise")


def test_evaluate_refuses_a_wrong_paired_file_before_evaluating(tiny_beir, tmp_path, capsys):
    from tests.conftest import write_tiny_beir

    base = ["evaluate", "--data", str(tiny_beir), "--retriever", "bm25"]
    good = tmp_path / "test-q.json"
    assert main([*base, "--split", "test", "--per-question", str(good)]) == 0
    other = write_tiny_beir(tmp_path / "other")
    with (other / "corpus.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "extra", "title": "Extra", "text": "one more passage"}) + "\n")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "metrics.json").write_text(json.dumps({"MRR@10": 50.0}))  # an --output file, not --per-question
    bad_rank = json.loads(good.read_text())
    bad_rank["result"]["per_question"][next(iter(bad_rank["result"]["per_question"]))] = {"first_relevant_rank": "1"}
    (tmp_path / "bad-rank.json").write_text(json.dumps(bad_rank))
    cases = [
        ([*base, "--split", "train", "--paired-with", str(good)], "evaluated split 'test', this evaluates 'train'"),
        (["evaluate", "--data", str(other), "--retriever", "bm25", "--paired-with", str(good)], "another corpus"),
        ([*base, "--paired-with", str(tmp_path / "broken.json")], "not a file written by `evaluate --per-question`"),
        ([*base, "--paired-with", str(tmp_path / "metrics.json")], "not a file written by `evaluate --per-question`"),
        ([*base, "--paired-with", str(tmp_path / "bad-rank.json")], "not a mapping of question id to ranks"),
        ([*base, "--paired-with", str(tmp_path / "missing.json")], "cannot read it"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        out = tmp_path / "never.json"
        assert main([*argv, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
        assert not out.exists()  # refused before evaluating: nothing written
