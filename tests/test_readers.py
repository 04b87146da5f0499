"""Tests for engine.readers: each format read from real files in tmp_path, expected values written out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.data import DataError, Passage, Question, read_beir, write_beir
from engine.readers import (
    dataset_from_squad_rows,
    load_any,
    load_hf_dataset,
    read_dpr,
    read_dpr_examples,
    read_msmarco,
    read_questions,
    read_squad,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ROCKETQA_SHARED_DATA", REPO.parent / "shared" / "data"))
SQUAD_DEV = SHARED / "squad-v1.1-dev"
needs_shared = pytest.mark.skipif(not SQUAD_DEV.is_dir(), reason=f"shared data not found at {SHARED}")

# A SQuAD v2 file: two articles, one unanswerable question (with plausible_answers, which are not answers).
SQUAD = {
    "version": "v2.0",
    "data": [
        {
            "title": "Super_Bowl_50",
            "paragraphs": [
                {
                    "context": "Super Bowl 50 was played at Levi's Stadium.",
                    "qas": [
                        {"id": "q1", "question": "Where?", "answers": [{"text": "Levi's Stadium", "answer_start": 28}]},
                        {
                            "id": "q2",
                            "question": "Who sang?",
                            "answers": [],
                            "is_impossible": True,
                            "plausible_answers": [{"text": "Super Bowl", "answer_start": 0}],
                        },
                    ],
                },
                {
                    "context": "The Broncos won.",
                    "qas": [
                        {
                            "id": "q3",
                            "question": "Who won?",
                            "answers": [
                                {"text": "Broncos", "answer_start": 4},
                                {"text": "The Broncos", "answer_start": 0},
                            ],
                            "is_impossible": False,
                        }
                    ],
                },
            ],
        },
        {
            "title": "Fresno, California",
            "paragraphs": [
                {
                    "context": "Fresno is a city.",
                    "qas": [{"id": 7, "question": "What is Fresno?", "answers": [{"text": "a city"}]}],
                }
            ],
        },
    ],
}
SQUAD_PASSAGES = [
    Passage("Super_Bowl_50_0", "Super Bowl 50 was played at Levi's Stadium.", "Super Bowl 50"),
    Passage("Super_Bowl_50_1", "The Broncos won.", "Super Bowl 50"),
    Passage("Fresno,_California_0", "Fresno is a city.", "Fresno, California"),
]
SQUAD_QUESTIONS = {
    "q1": Question("q1", "Where?", ("Levi's Stadium",)),
    "q2": Question("q2", "Who sang?", ()),
    "q3": Question("q3", "Who won?", ("Broncos", "The Broncos")),
    "7": Question("7", "What is Fresno?", ("a city",)),
}
SQUAD_QRELS = {"q1": {"Super_Bowl_50_0": 1}, "q3": {"Super_Bowl_50_1": 1}, "7": {"Fresno,_California_0": 1}}


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def squad_rows(squad: dict) -> list[dict]:
    """Flatten SQuAD JSON into Hugging Face `squad` rows."""
    return [
        {
            "id": str(qa["id"]),
            "title": article["title"],
            "context": para["context"],
            "question": qa["question"],
            "answers": {
                "text": [a["text"] for a in qa["answers"]],
                "answer_start": [a.get("answer_start", 0) for a in qa["answers"]],
            },
        }
        for article in squad["data"]
        for para in article["paragraphs"]
        for qa in para["qas"]
    ]


# --- SQuAD ---------------------------------------------------------------------------------


def test_read_squad_v2(tmp_path):
    ds = read_squad(write_json(tmp_path / "train-v2.0.json", SQUAD), split="train")
    assert ds.corpus.passages == SQUAD_PASSAGES
    assert ds.questions == SQUAD_QUESTIONS
    assert ds.qrels == {"train": SQUAD_QRELS}
    ds.validate()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0].pop("question"),
            "data[0].paragraphs[0].qas[0]: missing or non-string field 'question'",
        ),
        (lambda d: d["data"][1].pop("paragraphs"), "data[1]: missing or non-list field 'paragraphs'"),
        (
            lambda d: d["data"][0]["paragraphs"][1]["qas"][0]["answers"].append({"text": 3}),
            "data[0].paragraphs[1].qas[0].answers[2]",
        ),
        (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="q1"), "duplicate question id 'q1'"),
        (lambda d: d["data"].append(d["data"][1]), "passage id 'Fresno,_California_0' was already made at"),
        (lambda d: d.pop("data"), "not SQuAD JSON"),
    ],
)
def test_read_squad_errors_name_the_json_path(tmp_path, mutate, expected):
    bad = json.loads(json.dumps(SQUAD))
    mutate(bad)
    path = write_json(tmp_path / "bad.json", bad)
    with pytest.raises(DataError, match="bad.json") as e:
        read_squad(path)
    assert expected in str(e.value)


def test_read_squad_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n{"title": "A",\n]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.json:3: invalid JSON"):
        read_squad(path)


def test_squad_rows_give_the_same_dataset_as_the_json(tmp_path):
    from_json = read_squad(write_json(tmp_path / "s.json", SQUAD), split="validation")
    from_rows = dataset_from_squad_rows(squad_rows(SQUAD), "validation")
    assert from_rows.corpus.passages == from_json.corpus.passages
    assert from_rows.questions == from_json.questions
    assert from_rows.qrels == from_json.qrels


def test_squad_rows_errors():
    rows = squad_rows(SQUAD)
    del rows[2]["context"]
    with pytest.raises(DataError, match="row 2: missing or non-string field 'context'"):
        dataset_from_squad_rows(rows, "train")
    with pytest.raises(DataError, match="duplicate question id 'q1'"):
        dataset_from_squad_rows(squad_rows(SQUAD) * 2, "train")


def test_load_hf_dataset_through_the_datasets_library(tmp_path):
    # The hub is unreachable here; the packaged "json" builder runs the same load_dataset path offline.
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in squad_rows(SQUAD)), encoding="utf-8")
    ds = load_hf_dataset("json", split="train[:3]", cache_dir=tmp_path / "cache", data_files=str(rows))
    assert ds.corpus.passages == SQUAD_PASSAGES[:2]
    assert list(ds.questions) == ["q1", "q2", "q3"]
    assert ds.qrels == {"train": {"q1": {"Super_Bowl_50_0": 1}, "q3": {"Super_Bowl_50_1": 1}}}


def test_unreachable_hub_raises_a_clear_data_error(tmp_path):
    # Offline mode must be set before `datasets` is imported, hence a fresh interpreter.
    script = """
from engine.data import DataError
from engine.readers import load_any, load_hf_dataset
for call in (lambda: load_hf_dataset("squad"), lambda: load_any("hf:squad"), lambda: load_any("someone/squad-like")):
    try:
        call()
    except DataError as e:
        print("DataError:", str(e).replace("\\n", " "))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("DataError:")]
    assert len(lines) == 3, out.stdout + out.stderr
    assert all("HF_HUB_OFFLINE=1" in line for line in lines)
    assert "'squad'" in lines[0] and "'squad'" in lines[1]
    assert "someone/squad-like: no such local path" in lines[2]


@needs_shared
def test_squad_dev_json_matches_the_beir_copy():
    ds = read_squad(SQUAD_DEV / "dev-v1.1.rebuilt.json")
    beir = read_beir(SQUAD_DEV)
    assert len(ds.corpus) == 2067 and len(ds.questions) == 10570
    assert ds.corpus.passages == beir.corpus.passages  # same ids, titles, texts, order
    assert ds.questions == beir.questions
    union = {qid: rels for split in beir.qrels.values() for qid, rels in split.items()}
    assert ds.qrels["train"] == union


@needs_shared
def test_squad_dev_rows_match_the_json():
    squad = json.loads((SQUAD_DEV / "dev-v1.1.rebuilt.json").read_text(encoding="utf-8"))
    from_rows = dataset_from_squad_rows(squad_rows(squad), "train")
    assert from_rows.corpus.passages == read_squad(SQUAD_DEV / "dev-v1.1.rebuilt.json").corpus.passages


# --- DPR -----------------------------------------------------------------------------------

DPR = [
    {
        "dataset": "nq_train_psgs_w100",
        "question": "who won super bowl 50",
        "answers": ["Denver Broncos"],
        "positive_ctxs": [{"title": "Super Bowl 50", "text": "The Broncos won.", "score": 1000, "passage_id": "11"}],
        "hard_negative_ctxs": [
            {"title": "Super Bowl 49", "text": "The Patriots won.", "passage_id": "12"},
            {"title": "Super Bowl 50", "text": "The Broncos won.", "passage_id": "11"},  # also a positive
        ],
        "negative_ctxs": [{"title": "Cats", "text": "Cats purr.", "psg_id": 13}],
    },
    {
        "question": "what do cats do",
        "answers": ["purr"],
        "positive_ctxs": [
            {"title": "Cats", "text": "Cats purr.", "psg_id": 13},
            {"title": "", "text": "Purring is a sound."},
        ],
        "hard_negative_ctxs": [{"title": "Dogs", "text": "Dogs bark."}],
        "negative_ctxs": [],
    },
    {
        "id": "no-pos",
        "question": "unanswerable",
        "answers": [],
        "positive_ctxs": [],
        "hard_negative_ctxs": [{"text": "Dogs bark.", "title": "Dogs"}],
    },
]


def test_read_dpr(tmp_path):
    ds = read_dpr(write_json(tmp_path / "biencoder-nq-train.json", DPR))
    ids = ds.corpus.ids
    assert ids[:3] == ["11", "12", "13"]
    purr, dogs = ids[3], ids[4]
    assert purr.startswith("dpr-") and dogs.startswith("dpr-") and purr != dogs and len(ids) == 5
    assert ds.corpus[purr] == Passage(purr, "Purring is a sound.", "")
    assert ds.corpus["13"] == Passage("13", "Cats purr.", "Cats")
    assert ds.questions == {
        "biencoder-nq-train-0": Question("biencoder-nq-train-0", "who won super bowl 50", ("Denver Broncos",)),
        "biencoder-nq-train-1": Question("biencoder-nq-train-1", "what do cats do", ("purr",)),
        "no-pos": Question("no-pos", "unanswerable", ()),
    }
    assert ds.qrels == {"train": {"biencoder-nq-train-0": {"11": 1}, "biencoder-nq-train-1": {"13": 1, purr: 1}}}


def test_read_dpr_examples(tmp_path):
    path = write_json(tmp_path / "dpr.json", DPR)
    dogs = read_dpr(path).corpus.ids[4]
    assert read_dpr_examples(path) == [
        {"question_id": "dpr-0", "question": "who won super bowl 50", "positives": ["11"], "negatives": ["12"]},
        {
            "question_id": "dpr-1",
            "question": "what do cats do",
            "positives": ["13", read_dpr(path).corpus.ids[3]],
            "negatives": [dogs],
        },
    ]
    with_easy = read_dpr_examples(path, include_easy_negatives=True)
    assert with_easy[0]["negatives"] == ["12", "13"]


def test_read_dpr_errors(tmp_path):
    conflict = json.loads(json.dumps(DPR))
    conflict[1]["positive_ctxs"][0]["text"] = "Cats meow."
    with pytest.raises(
        DataError,
        match=r"\[1\]\.positive_ctxs\[0\]: passage id '13' has a different title or text than at .*\[0\]\.negative_ctxs\[0\]",
    ):
        read_dpr(write_json(tmp_path / "conflict.json", conflict))
    no_text = json.loads(json.dumps(DPR))
    del no_text[0]["hard_negative_ctxs"][0]["text"]
    with pytest.raises(DataError, match=r"\[0\]\.hard_negative_ctxs\[0\]: missing or non-string field 'text'"):
        read_dpr(write_json(tmp_path / "no_text.json", no_text))
    with pytest.raises(DataError, match="not DPR training JSON"):
        read_dpr(write_json(tmp_path / "squad.json", SQUAD))


# --- question files ------------------------------------------------------------------------


def test_read_questions_jsonl(tmp_path):
    path = tmp_path / "nq-open.dev.jsonl"
    path.write_text(
        '{"question": "when was the moon landing", "answer": ["1969", "July 1969"]}\n'
        "\n"
        '{"question": "what do cats do", "answers": ["purr"], "id": "cats"}\n'
        '{"_id": 5, "text": "a BEIR-style query"}\n',
        encoding="utf-8",
    )
    assert read_questions(path) == [
        Question("nq-open.dev-1", "when was the moon landing", ("1969", "July 1969")),
        Question("cats", "what do cats do", ("purr",)),
        Question("5", "a BEIR-style query", ()),
    ]


def test_read_questions_dpr_qas_tsv(tmp_path):
    path = tmp_path / "nq-test.qa.csv"
    path.write_text(
        "who got the first nobel prize in physics\t['Wilhelm Conrad Röntgen']\n"
        'what is "the" answer\t["42", "forty-two"]\n',
        encoding="utf-8",
    )
    assert read_questions(path) == [
        Question("nq-test.qa-1", "who got the first nobel prize in physics", ("Wilhelm Conrad Röntgen",)),
        Question("nq-test.qa-2", 'what is "the" answer', ("42", "forty-two")),
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("q.tsv", "ok\t['a']\nno tab here\n", r"q.tsv:2: expected 'question<TAB>\[answers\]'"),
        ("q.tsv", "ok\t['a'\n", r"q.tsv:1: answers .* are not a list literal"),
        ("q.tsv", "ok\t[1, 2]\n", r"q.tsv:1: answers must be a list of strings"),
        ("q.jsonl", '{"question": "a"}\n{"answers": ["x"]}\n', r"q.jsonl:2: missing or non-string field 'text'"),
        (
            "q.jsonl",
            '{"question": "a", "id": "x"}\n{"question": "b", "id": "x"}\n',
            r"q.jsonl:2: duplicate question id 'x'",
        ),
        ("q.jsonl", "\n\n", r"q.jsonl: no questions"),
    ],
)
def test_read_questions_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=expected):
        read_questions(path)


@needs_shared
def test_read_shared_question_files():
    nq = read_questions(SHARED / "questions" / "nq-open.dev.jsonl")
    trivia = read_questions(SHARED / "questions" / "triviaqa.dev.jsonl")
    assert (len(nq), len(trivia)) == (3610, 8837)
    assert nq[0] == Question(
        "nq-open.dev-1", "when was the last time anyone was on the moon", ("14 December 1972 UTC", "December 1972")
    )
    assert all(q.answers for q in nq)


# --- MS MARCO ------------------------------------------------------------------------------


def write_msmarco(d: Path) -> Path:
    d.mkdir()
    (d / "collection.tsv").write_text(
        '0\t"Quoted" start of a passage.\n1\tSecond passage\n2\tThird\n', encoding="utf-8"
    )
    (d / "queries.train.tsv").write_text("100\twhat is first\n101\twhat is second\n", encoding="utf-8")
    (d / "queries.dev.small.tsv").write_text("200\twhat is third\n", encoding="utf-8")
    (d / "qrels.train.tsv").write_text("100\t0\t0\t1\n101\t0\t1\t1\n101\t0\t2\t1\n", encoding="utf-8")
    (d / "qrels.dev.small.tsv").write_text("200 0 2 1\n", encoding="utf-8")
    (d / "top1000.dev.tsv").write_text("ignored\n", encoding="utf-8")
    return d


def test_read_msmarco_directory(tmp_path):
    ds = read_msmarco(write_msmarco(tmp_path / "msmarco"))
    assert ds.corpus.passages == [
        Passage("0", '"Quoted" start of a passage.'),
        Passage("1", "Second passage"),
        Passage("2", "Third"),
    ]
    assert ds.questions == {
        "100": Question("100", "what is first"),
        "101": Question("101", "what is second"),
        "200": Question("200", "what is third"),
    }
    assert ds.qrels == {"train": {"100": {"0": 1}, "101": {"1": 1, "2": 1}}, "dev.small": {"200": {"2": 1}}}


def test_read_msmarco_file_list_and_errors(tmp_path):
    d = write_msmarco(tmp_path / "m")
    ds = read_msmarco([d / "collection.tsv", d / "queries.dev.small.tsv", d / "qrels.dev.small.tsv"])
    assert list(ds.questions) == ["200"] and list(ds.qrels) == ["dev.small"]
    with pytest.raises(DataError, match=r"qrels.train.tsv: 2 question ids have no query text, e.g. '100'"):
        read_msmarco([d / "collection.tsv", d / "qrels.train.tsv"])
    with pytest.raises(DataError, match="not an MS MARCO file name"):
        read_msmarco([d / "collection.tsv", d / "top1000.dev.tsv"])
    (d / "qrels.dev.small.tsv").write_text("200 0 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"qrels.dev.small.tsv:1: expected TREC qrels"):
        read_msmarco(d)
    (d / "qrels.dev.small.tsv").write_text("200 0 9 1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"names passage '9', which is not in the corpus"):
        read_msmarco(d)


# --- dispatch ------------------------------------------------------------------------------


def test_load_any_dispatches_on_format(tmp_path):
    squad = load_any(write_json(tmp_path / "dev-v2.0.json", SQUAD))
    assert list(squad.qrels) == ["dev"] and squad.corpus.passages == SQUAD_PASSAGES
    assert list(load_any(write_json(tmp_path / "squad.json", SQUAD)).qrels) == ["train"]
    assert list(load_any(tmp_path / "squad.json", split="test").qrels) == ["test"]

    dpr = load_any(write_json(tmp_path / "biencoder-nq-dev.json", DPR))
    assert list(dpr.qrels) == ["dev"] and len(dpr.corpus) == 5

    msmarco = load_any(write_msmarco(tmp_path / "msmarco"), split="train")
    assert list(msmarco.qrels) == ["train"]
    with pytest.raises(DataError, match=r"no qrels.test.tsv \(splits: dev.small, train\)"):
        load_any(tmp_path / "msmarco", split="test")

    beir = load_any(write_beir(squad, tmp_path / "beir"))
    assert beir.corpus.passages == squad.corpus.passages and beir.qrels == squad.qrels


def test_load_any_rejects_unknown_input(tmp_path):
    with pytest.raises(DataError, match=r"(?s)unrecognised data format. Supported:.*SQuAD.*DPR.*hf:NAME"):
        load_any(write_json(tmp_path / "other.json", {"rows": []}))
    with pytest.raises(DataError, match="unrecognised data format"):
        load_any(tmp_path)
    with pytest.raises(DataError, match="no such file or directory"):
        load_any(tmp_path / "missing.json")
