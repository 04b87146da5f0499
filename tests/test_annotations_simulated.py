"""The simulated-annotator benchmark on real SQuAD data, small: the audit equals a direct computation from gold."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_benchmark as load


def load_benchmark():
    return load("simulated_annotator")


def test_normalize_is_dpr_style() -> None:
    bench = load_benchmark()
    assert bench.normalize("The  Denver Broncos!") == "denver broncos"
    assert bench.normalize("a U.S. state, an island") == "us state island"


def test_simulated_annotator_audit_matches_gold(shared_data: Path, tmp_path: Path, capsys) -> None:
    bench = load_benchmark()
    data = shared_data / "squad-v1.1-dev"
    decisions = tmp_path / "run" / "decisions.jsonl"
    assert (
        bench.main(["--data", str(data), "--make-fake-decisions", str(decisions), "--questions", "40", "--top-k", "10"])
        == 0
    )
    records = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert len(records) == 800 and {r["step"] for r in records} == {"denoise", "augment"}
    unlabeled = {line.split("\t")[0] for line in (data / "qrels" / "unlabeled.tsv").read_text().splitlines()[1:]}
    assert {r["question_id"] for r in records if r["step"] == "augment"} <= unlabeled

    assert (
        bench.main(
            ["--data", str(data), "--decisions", str(decisions), "--db", str(tmp_path / "sim.db"), "--sample", "150"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "audit == direct computation from gold" in out and "| NO" not in out
