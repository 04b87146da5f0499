"""`python -m annotations {import,audit,export,runs}`: in-process for speed, once as a real subprocess."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from annotations import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    records = [
        {"run_id": "cli-run", "step": "augment", "question_id": f"q{i}", "question_text": f"question {i}", "passage_id": f"p{i % 3}",
         "dense_rank": 1, "dense_score": 1.0, "ce_prob": [0.95, 0.05, 0.5][i % 3], "neg_threshold": 0.1, "pos_threshold": 0.9,
         "decision": ["pseudo_positive", "pseudo_negative", "ignored"][i % 3], "is_labelled_positive": False,
         "dual_encoder": "d", "cross_encoder": "c"}
        for i in range(6)
    ]  # fmt: skip
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_text("".join(json.dumps(r) + "\n" for r in records))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"p{i}", "title": "", "text": f"passage {i}"}) + "\n" for i in range(3))
    )
    return decisions, corpus


def test_import_audit_export_in_process(tmp_path: Path, files, capsys) -> None:
    db = str(tmp_path / "cli.db")
    assert cli.main(["--db", db, "import", str(files[0]), "--corpus", str(files[1])]) == 0
    assert "6 records, 6 new, 0 already present" in capsys.readouterr().out
    assert cli.main(["--db", db, "import", str(files[0]), "--corpus", str(files[1])]) == 0
    assert "0 new, 6 already present" in capsys.readouterr().out

    assert cli.main(["--db", db, "audit", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run_id"] == "cli-run" and [r["sampled"] for r in report["precision"]] == [0, 0, 0]

    assert cli.main(["--db", db, "audit"]) == 0
    assert "Precision on the random sample" in capsys.readouterr().out

    assert cli.main(["--db", db, "runs"]) == 0
    assert "cli-run" in capsys.readouterr().out

    for fmt, name in (("qrels", "x.qrels"), ("jsonl", "x.jsonl"), ("hf", "x.parquet"), ("train", "train.jsonl")):
        assert cli.main(["--db", db, "export", fmt, str(tmp_path / name), "--run", "cli-run"]) == 0
        assert (tmp_path / name).exists()
    assert "2 questions" in capsys.readouterr().out.splitlines()[-1]  # the pseudo-positive questions


def test_errors_are_one_line_and_exit_2(tmp_path: Path, files, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"run_id": "x"}\n')
    assert cli.main(["--db", str(tmp_path / "e.db"), "import", str(bad), "--corpus", str(files[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.jsonl:1: missing key(s)" in err
    assert cli.main(["--db", str(tmp_path / "e.db"), "audit"]) == 2
    assert "no run imported yet" in capsys.readouterr().err


def test_every_command_is_documented() -> None:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in sub.choices:
        assert f"python -m annotations {name}" in cli.__doc__, f"`{name}` is missing from the cli module docstring"


def test_python_dash_m_runs_the_cli(tmp_path: Path, files) -> None:
    db = tmp_path / "m.db"
    env_cmd = [sys.executable, "-m", "annotations", "--db", str(db)]
    imported = subprocess.run(
        [*env_cmd, "import", str(files[0]), "--corpus", str(files[1])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    audited = subprocess.run([*env_cmd, "audit", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)["run_id"] == "cli-run"
