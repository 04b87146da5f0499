"""Checks on the embedded demo dataset in `demo/sample_data/` (BEIR layout, see docs/FORMATS.md).

The demo starts offline from these files, so they must be well formed: unique ids, qrels that
point at real questions and passages, answers that really occur in the gold passage, every
split present, enough passages and topics, plain text only. Uses only the standard library.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "demo" / "sample_data"
SPLITS = ("train", "dev", "test", "unlabeled")
HTML = re.compile(r"<[a-zA-Z/!][^>]*>|&[a-zA-Z]+;|&#\d+;")


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_qrels(split: str) -> list[dict]:
    with (DATA / "qrels" / f"{split}.tsv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        assert reader.fieldnames == ["query-id", "corpus-id", "score"], reader.fieldnames
        return list(reader)


@pytest.fixture(scope="module")
def corpus() -> dict[str, dict]:
    rows = _read_jsonl(DATA / "corpus.jsonl")
    ids = [row["_id"] for row in rows]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"duplicate passage ids: {duplicates}"
    return {row["_id"]: row for row in rows}


@pytest.fixture(scope="module")
def queries() -> dict[str, dict]:
    rows = _read_jsonl(DATA / "queries.jsonl")
    ids = [row["_id"] for row in rows]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"duplicate query ids: {duplicates}"
    return {row["_id"]: row for row in rows}


@pytest.fixture(scope="module")
def qrels() -> dict[str, list[dict]]:
    return {split: _read_qrels(split) for split in SPLITS}


def test_corpus_fields_and_size(corpus):
    assert len(corpus) >= 100
    for pid, row in corpus.items():
        assert set(row) == {"_id", "title", "text"}, pid
        assert isinstance(row["title"], str) and row["title"].strip(), pid
        assert isinstance(row["text"], str), pid
        assert 50 <= len(row["text"].split()) <= 130, f"{pid}: {len(row['text'].split())} words"


def test_at_least_five_topics_of_reasonable_size(corpus):
    topics = Counter(pid.rsplit("_", 1)[0] for pid in corpus)
    assert len(topics) >= 5, topics
    assert min(topics.values()) >= 15, topics


def test_no_html_in_passages_or_questions(corpus, queries):
    for row in list(corpus.values()) + list(queries.values()):
        for key in ("title", "text"):
            if key in row:
                assert not HTML.search(row[key]), f"{row['_id']}: markup in {key}: {row[key]!r}"


def test_queries_have_text_and_answers(queries):
    assert 150 <= len(queries) <= 200
    texts = [row["text"] for row in queries.values()]
    assert len(set(texts)) == len(texts), "two questions have the same text"
    for qid, row in queries.items():
        assert row["text"].strip().endswith("?"), qid
        assert row["answers"] and all(isinstance(a, str) and a.strip() for a in row["answers"]), qid


def test_every_split_non_empty_with_valid_ids(corpus, queries, qrels):
    for split, rows in qrels.items():
        assert rows, f"{split} split is empty"
        for row in rows:
            assert row["query-id"] in queries, f"{split}: unknown query {row['query-id']}"
            assert row["corpus-id"] in corpus, f"{split}: unknown passage {row['corpus-id']}"
            assert int(row["score"]) == 1


def test_each_question_in_exactly_one_split_with_one_gold(queries, qrels):
    seen = Counter(row["query-id"] for rows in qrels.values() for row in rows)
    assert set(seen) == set(queries), "some questions are in no split"
    assert set(seen.values()) == {1}, "a question has more than one gold passage or split"
    sizes = {split: len(rows) for split, rows in qrels.items()}
    assert sizes["train"] > sizes["test"] > sizes["dev"], sizes
    assert sizes["unlabeled"] > sizes["dev"], sizes


def test_answers_occur_in_gold_passage(corpus, queries, qrels):
    missing = []
    for rows in qrels.values():
        for row in rows:
            text = corpus[row["corpus-id"]]["text"].lower()
            for answer in queries[row["query-id"]]["answers"]:
                if answer.lower() not in text:
                    missing.append((row["query-id"], row["corpus-id"], answer))
    assert not missing, f"answers not found in their gold passage: {missing}"


def test_dataset_stays_small():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 200_000, f"sample data is {total} bytes"
