"""benchmarks/passage_truncation.py: where the answer ends in the tokens a dual-encoder reads."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark

from engine.data import Corpus, Passage, Question


def _script():
    return load_benchmark("passage_truncation")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_the_answer_end_is_counted_in_the_tokens_of_title_and_text(tokenizer):
    script = _script()
    p = Passage("p", "one two three four five six seven eight nine ten", "Counting")
    # [CLS] counting . one two three [SEP]: truncation to 7 tokens keeps "three", to 6 cuts it
    assert script.answer_end_token(tokenizer, p, ("three",)) == 7
    assert script.answer_end_token(tokenizer, p, ("ten", "two")) == 6  # the earliest occurrence ends first
    # the count is exactly the max length at which the tokenizer's own truncation starts to keep the answer
    for n in (6, 7, 8):
        kept = tokenizer.decode(tokenizer(p.full_text, truncation=True, max_length=n)["input_ids"])
        assert ("three" in kept) == (n >= 7), (n, kept)
    assert script.answer_end_token(tokenizer, p, ("eleven",)) is None


def test_measure_counts_answers_beyond_each_length(tokenizer):
    script = _script()
    words = " ".join(f"w{i}" for i in range(40))
    corpus = Corpus(
        [
            Passage("early", f"apple {words}"),
            Passage("late", f"{words} banana"),
            Passage("case", f"{words} Cherry"),
        ]
    )
    questions = [
        Question("q1", "which fruit first?", ("apple",)),
        Question("q2", "which fruit last?", ("banana",)),
        Question("q3", "which fruit?", ("cherry",)),  # only after normalisation (case)
        Question("q4", "no gold?", ("apple",)),
    ]
    qrels = {"q1": {"early": 1}, "q2": {"late": 1}, "q3": {"case": 1}, "q4": {}}
    late_end = script.answer_end_token(tokenizer, corpus["late"], ("banana",))
    out = script.measure(tokenizer, corpus, questions, qrels, [8, late_end])
    assert out["answer_placed"] == 2 and out["answer_only_after_normalisation"] == 1 and out["no_answer_in_gold"] == 1
    assert out["answer_ends_beyond"]["8"] == {"questions": 1, "percent": 50.0}
    assert out["answer_ends_beyond"][str(late_end)] == {"questions": 0, "percent": 0.0}  # exactly at the limit: seen
    assert out["passage_tokens"]["passages"] == 3 and out["passage_tokens"]["percent_longer_than_8"] == 100.0


def test_bad_arguments_are_refused(tmp_path, capsys):
    script = _script()
    with pytest.raises(SystemExit):
        script.main(["--data", str(tmp_path), "--lengths", "a,b"])
    assert "--lengths" in capsys.readouterr().err


def test_runs_on_squad_when_the_data_is_there(shared_data, tmp_path):
    out = tmp_path / "t.json"
    assert _script().main(["--data", str(shared_data / "squad-v1.1-dev"), "--split", "dev", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["answer_placed"] > 800 and 0 < data["answer_ends_beyond"]["128"]["percent"] < 50
    assert data["answer_ends_beyond"]["256"]["questions"] <= data["answer_ends_beyond"]["128"]["questions"]
