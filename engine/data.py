"""In-memory retrieval data: passages, questions, qrels, and the BEIR directory format.

A `Dataset` is a corpus plus questions plus relevance judgments (qrels) per split. It is the
one representation every stage works on; readers for other formats (SQuAD, DPR, NQ-open,
MS MARCO, Hugging Face datasets) live in `engine.readers` and all return a `Dataset`.

The canonical on-disk format is a BEIR directory (see docs/FORMATS.md). Loading is strict:
a malformed line raises `DataError` naming the file, line and problem, and nothing is returned
half-loaded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """Title and text as one string, the way encoders and BM25 see a passage."""
        return f"{self.title}. {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: tuple[str, ...] = ()


Qrels = dict[str, dict[str, int]]  # question id -> passage id -> grade (> 0 relevant)


@dataclass
class Corpus:
    """Passages in a fixed order; row i of any embedding matrix is `passages[i]`."""

    passages: list[Passage]
    _by_id: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {}
        for i, p in enumerate(self.passages):
            if p.id in self._by_id:
                raise DataError(f"duplicate passage id {p.id!r}")
            self._by_id[p.id] = i

    def __len__(self) -> int:
        return len(self.passages)

    def __iter__(self) -> Iterator[Passage]:
        return iter(self.passages)

    def __contains__(self, pid: object) -> bool:
        return pid in self._by_id

    def __getitem__(self, pid: str) -> Passage:
        try:
            return self.passages[self._by_id[pid]]
        except KeyError:
            raise KeyError(f"unknown passage id {pid!r}") from None

    def index_of(self, pid: str) -> int:
        try:
            return self._by_id[pid]
        except KeyError:
            raise KeyError(f"unknown passage id {pid!r}") from None

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.passages]

    def fingerprint(self) -> str:
        """Content hash of ids, titles and texts in order: the cache key of embeddings."""
        h = hashlib.sha256()
        for p in self.passages:
            for part in (p.id, p.title, p.text):
                h.update(part.encode("utf-8"))
                h.update(b"\x00")
        return h.hexdigest()[:16]


@dataclass
class Dataset:
    """A corpus, its questions and qrels per split (e.g. "train", "dev", "test")."""

    corpus: Corpus
    questions: dict[str, Question]
    qrels: dict[str, Qrels] = field(default_factory=dict)
    name: str = ""

    def split(self, name: str) -> tuple[list[Question], Qrels]:
        """Questions of a split (in qrels order) and its qrels. Unknown split -> DataError."""
        if name not in self.qrels:
            known = ", ".join(sorted(self.qrels)) or "none"
            raise DataError(f"{self.name or 'dataset'} has no split {name!r} (known: {known})")
        qrels = self.qrels[name]
        missing = [qid for qid in qrels if qid not in self.questions]
        if missing:
            raise DataError(f"split {name!r}: {len(missing)} qrels question ids have no question, e.g. {missing[0]!r}")
        return [self.questions[qid] for qid in qrels], qrels

    def validate(self) -> None:
        """Every qrels passage id must exist in the corpus."""
        for split, qrels in self.qrels.items():
            for qid, rels in qrels.items():
                for pid in rels:
                    if pid not in self.corpus:
                        raise DataError(
                            f"split {split!r}: question {qid!r} names passage {pid!r}, which is not in the corpus"
                        )


# --- BEIR directories --------------------------------------------------------------------


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; malformed JSON -> DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _require_str(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "_id":
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: missing or non-string field {key!r}")
    return value


def read_beir_corpus(path: Path) -> Corpus:
    passages = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        pid = _require_str(obj, "_id", where)
        text = _require_str(obj, "text", where)
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise DataError(f"{where}: field 'title' must be a string")
        passages.append(Passage(pid, text, title))
    if not passages:
        raise DataError(f"{path}: corpus is empty")
    try:
        return Corpus(passages)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def read_beir_queries(path: Path) -> dict[str, Question]:
    questions: dict[str, Question] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = _require_str(obj, "_id", where)
        text = _require_str(obj, "text", where)
        answers = obj.get("answers") or obj.get("metadata", {}).get("answer") or []
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError(f"{where}: 'answers' must be a list of strings")
        if qid in questions:
            raise DataError(f"{where}: duplicate question id {qid!r}")
        questions[qid] = Question(qid, text, tuple(answers))
    return questions


def read_qrels_tsv(path: Path) -> Qrels:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and row[0] in ("query-id", "query_id", "qid"):
                continue
            if len(row) < 2:
                raise DataError(f"{path}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', got {row!r}")
            qid, pid = row[0], row[1]
            try:
                grade = int(float(row[2])) if len(row) > 2 else 1
            except ValueError:
                raise DataError(f"{path}:{lineno}: score {row[2]!r} is not a number") from None
            qrels.setdefault(qid, {})[pid] = grade
    return qrels


def read_beir(directory: str | Path, splits: Iterable[str] | None = None) -> Dataset:
    """Load a BEIR directory. All `qrels/*.tsv` splits unless `splits` names some."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"{d}: not a directory")
    corpus = read_beir_corpus(d / "corpus.jsonl")
    questions = read_beir_queries(d / "queries.jsonl") if (d / "queries.jsonl").exists() else {}
    qrels_dir = d / "qrels"
    available = sorted(p.stem for p in qrels_dir.glob("*.tsv"))
    names = list(splits) if splits is not None else available
    for name in names:
        if name not in available:
            raise DataError(f"{d}: no split {name!r} (no qrels/{name}.tsv; splits: {', '.join(available) or 'none'})")
    qrels = {name: read_qrels_tsv(qrels_dir / f"{name}.tsv") for name in names}
    ds = Dataset(corpus, questions, qrels, name=d.name)
    ds.validate()
    log.info("loaded %s: %d passages, %d questions, splits %s", d, len(corpus), len(questions), names)
    return ds


def write_beir(ds: Dataset, directory: str | Path) -> Path:
    """Write a Dataset as a BEIR directory (inverse of `read_beir`)."""
    d = Path(directory)
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    with (d / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for p in ds.corpus:
            f.write(json.dumps({"_id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n")
    with (d / "queries.jsonl").open("w", encoding="utf-8") as f:
        for q in ds.questions.values():
            f.write(json.dumps({"_id": q.id, "text": q.text, "answers": list(q.answers)}, ensure_ascii=False) + "\n")
    for split, qrels in ds.qrels.items():
        with (d / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, rels in qrels.items():
                for pid, grade in rels.items():
                    f.write(f"{qid}\t{pid}\t{grade}\n")
    return d
