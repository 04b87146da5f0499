"""benchmarks/scoring_profile.py: where cross-encoder scoring spends its time."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


def _script():
    return load_benchmark("scoring_profile")


def test_pairs_start_with_gold_and_are_seeded(tiny_beir):
    from engine.readers import load_any

    script = _script()
    ds = load_any(str(tiny_beir))
    questions, qrels = ds.split("train")
    qs, ps = script.make_pairs(ds, "train", len(questions) + 5, seed=3)
    assert len(qs) == len(ps) == len(questions) + 5
    for q, text, p in zip(questions, qs, ps):  # the first pass: each question with its gold passage
        assert text == q.text and qrels[q.id].get(p.id, 0) > 0
    assert script.make_pairs(ds, "train", len(questions) + 5, seed=3)[1] == ps
    with pytest.raises(ValueError, match="no split"):
        script.make_pairs(ds, "nonexistent", 4, seed=3)


def test_profile_accounts_for_the_whole_call_and_matches_its_logits(tmp_path, tiny_beir, tiny_model_dir, capsys):
    script = _script()
    out = tmp_path / "profile.json"
    args = [
        "--data",
        str(tiny_beir),
        "--model",
        tiny_model_dir,
        "--pairs",
        "9",
        "--max-length",
        "48",
        "--split",
        "train",
    ]
    assert script.main([*args, "--batch-size", "4", "--threads", "1", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result == json.loads(capsys.readouterr().out)
    assert (result["pairs"], result["batches"], result["device"]) == (9, 3, "cpu")
    assert set(result["seconds"]) == {"tokenise", "pad", "model", "logits"}  # no bf16 row on a CPU
    assert result["logits_max_abs_diff"] < 1e-5  # the end-to-end call scores the same batches
    assert 0 < result["host_share_of_logits"] < 1 and 0 <= result["padding_share"] < 1
    with pytest.raises(SystemExit):
        script.main([*args, "--pairs", "0"])
    assert "--pairs" in capsys.readouterr().err
