"""Readers that turn the formats users already have into a `Dataset` (or a list of questions).

Supported: SQuAD v1.1/v2 JSON, DPR training JSON (plus its hard negatives as training examples,
docs/FORMATS.md "Training examples"), NQ-open / TriviaQA / DPR question files (JSONL or DPR's
tab-separated qas files), MS MARCO passage TSVs, and SQuAD-shaped Hugging Face datasets.
`load_any` picks the reader from a path or a `hf:NAME`.

Like `engine.data`, every reader is strict: malformed input raises `DataError` naming the file,
line (or JSON path such as `data[3].paragraphs[2].qas[0]`) and the problem, and nothing is returned
half-loaded. The BEIR directory reader itself lives in `engine.data`. Writing is left to
`engine.data.write_beir`: convert once, then work on the BEIR copy.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data import Corpus, DataError, Dataset, Passage, Qrels, Question, iter_jsonl, read_beir

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = (
    "a BEIR directory (corpus.jsonl, queries.jsonl, qrels/*.tsv)",
    "an MS MARCO directory (collection.tsv, queries.SPLIT.tsv, qrels.SPLIT.tsv)",
    "a SQuAD v1.1/v2 .json file (a 'data' list of articles with 'paragraphs')",
    "a DPR training .json file (a list of objects with 'positive_ctxs')",
    "hf:NAME for a SQuAD-shaped Hugging Face dataset",
)


# --- small shared helpers ------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _str_field(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}: missing or non-string field {key!r}")
    return value


def _id_field(obj: dict, keys: Sequence[str], where: str) -> str | None:
    """The first of `keys` present, as a string (ints allowed); None when none is present."""
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise DataError(f"{where}: field {key!r} must be a string or an integer, got {type(value).__name__}")
        return str(value)
    return None


def _answer_list(value: Any, where: str) -> tuple[str, ...]:
    """A list of answer strings (a bare string is one answer)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise DataError(f"{where}: answers must be a list of strings, got {value!r:.80}")
    return tuple(value)


def _split_from_name(path: Path, default: str) -> str:
    """'train' / 'dev' / 'test' when the file name says so (dev-v1.1.json -> 'dev'), else `default`."""
    tokens = re.split(r"[-_.]", path.name.lower())
    for split, aliases in (("train", ("train",)), ("dev", ("dev", "validation", "val")), ("test", ("test",))):
        if any(a in tokens for a in aliases):
            return split
    return default


# --- SQuAD ---------------------------------------------------------------------------------


def _squad_pid(title: str, n: int) -> str:
    return f"{title.replace(' ', '_')}_{n}"


def _squad_title(title: str) -> str:
    return title.replace("_", " ")


def _squad_from_obj(obj: Any, source: str, split: str) -> Dataset:
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise DataError(f"{source}: not SQuAD JSON (expected an object with a 'data' list of articles)")
    passages: list[Passage] = []
    pid_where: dict[str, str] = {}
    questions: dict[str, Question] = {}
    qrels: Qrels = {}
    for ai, article in enumerate(obj["data"]):
        where = f"{source}: data[{ai}]"
        if not isinstance(article, dict):
            raise DataError(f"{where}: expected an object, got {type(article).__name__}")
        title = _str_field(article, "title", where)
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise DataError(f"{where}: missing or non-list field 'paragraphs'")
        for pi, para in enumerate(paragraphs):
            pwhere = f"{where}.paragraphs[{pi}]"
            if not isinstance(para, dict):
                raise DataError(f"{pwhere}: expected an object, got {type(para).__name__}")
            pid = _squad_pid(title, pi)
            if pid in pid_where:
                raise DataError(f"{pwhere}: passage id {pid!r} was already made at {pid_where[pid]} (repeated title?)")
            pid_where[pid] = pwhere
            passages.append(Passage(pid, _str_field(para, "context", pwhere), _squad_title(title)))
            qas = para.get("qas", [])
            if not isinstance(qas, list):
                raise DataError(f"{pwhere}: field 'qas' must be a list")
            for qi, qa in enumerate(qas):
                qwhere = f"{pwhere}.qas[{qi}]"
                if not isinstance(qa, dict):
                    raise DataError(f"{qwhere}: expected an object, got {type(qa).__name__}")
                qid = _id_field(qa, ("id",), qwhere)
                if qid is None:
                    raise DataError(f"{qwhere}: missing field 'id'")
                text = _str_field(qa, "question", qwhere)
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise DataError(f"{qwhere}: 'is_impossible' must be true or false")
                answers = qa.get("answers", [])
                if not isinstance(answers, list):
                    raise DataError(f"{qwhere}: field 'answers' must be a list")
                texts = []
                for ni, ans in enumerate(answers):
                    if not isinstance(ans, dict) or not isinstance(ans.get("text"), str):
                        raise DataError(f"{qwhere}.answers[{ni}]: expected an object with a string 'text'")
                    texts.append(ans["text"])
                if qid in questions:
                    raise DataError(f"{qwhere}: duplicate question id {qid!r}")
                # v2 unanswerable questions: no answers (their plausible_answers are not answers), no gold passage.
                questions[qid] = Question(qid, text, () if impossible else tuple(texts))
                if not impossible:
                    qrels[qid] = {pid: 1}
    if not passages:
        raise DataError(f"{source}: no paragraphs")
    n_impossible = len(questions) - len(qrels)
    log.info(
        "read SQuAD %s: %d passages, %d questions (%d unanswerable)",
        source,
        len(passages),
        len(questions),
        n_impossible,
    )
    return Dataset(Corpus(passages), questions, {split: qrels}, name=Path(source).stem)


def read_squad(path: str | Path, split: str = "train") -> Dataset:
    """SQuAD v1.1/v2 JSON -> Dataset with one qrels split `split` (each question's own paragraph).

    Passage ids are `<Title>_<n>` (spaces -> underscores, n = paragraph index in the article),
    passage titles are the article title with underscores -> spaces. SQuAD v2 `is_impossible`
    questions are kept as questions with no answers and no qrels.
    """
    path = Path(path)
    return _squad_from_obj(_load_json(path), str(path), split)


def dataset_from_squad_rows(rows: Iterable[dict], split: str, *, source: str = "rows", name: str = "") -> Dataset:
    """Flat SQuAD rows (Hugging Face `squad` / `squad_v2` columns) -> Dataset, as `read_squad` would.

    Each row has `id`, `title`, `context`, `question` and `answers` ({"text": [...], ...} or a list
    of strings). Paragraphs are the distinct (title, context) pairs, numbered per title in order of
    first appearance: the same ids as `read_squad` gives for the JSON the rows came from, provided
    every paragraph has a question (rows cannot show empty paragraphs). A row with no answers (or
    `is_impossible` true) is an unanswerable question: no answers, no qrels.
    """
    passages: list[Passage] = []
    pid_of: dict[tuple[str, str], str] = {}
    per_title: dict[str, int] = {}
    questions: dict[str, Question] = {}
    qrels: Qrels = {}
    for i, row in enumerate(rows):
        where = f"{source}: row {i}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a mapping, got {type(row).__name__}")
        qid = _id_field(row, ("id",), where)
        if qid is None:
            raise DataError(f"{where}: missing field 'id'")
        title = _str_field(row, "title", where)
        context = _str_field(row, "context", where)
        text = _str_field(row, "question", where)
        answers = row.get("answers")
        if isinstance(answers, dict):
            answers = answers.get("text")
        answers = _answer_list(answers, f"{where}.answers")
        impossible = bool(row.get("is_impossible", False)) or not answers
        key = (title, context)
        if key not in pid_of:
            n = per_title.get(title, 0)
            per_title[title] = n + 1
            pid_of[key] = _squad_pid(title, n)
            passages.append(Passage(pid_of[key], context, _squad_title(title)))
        if qid in questions:
            raise DataError(f"{where}: duplicate question id {qid!r}")
        questions[qid] = Question(qid, text, () if impossible else answers)
        if not impossible:
            qrels[qid] = {pid_of[key]: 1}
    if not passages:
        raise DataError(f"{source}: no rows")
    try:
        corpus = Corpus(passages)
    except DataError as e:  # e.g. titles "A B" and "A_B" both give id "A_B_0"
        raise DataError(f"{source}: {e}") from None
    return Dataset(corpus, questions, {split: qrels}, name=name)


def load_hf_dataset(
    name: str = "squad",
    split: str = "validation",
    config: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    data_files: str | Sequence[str] | None = None,
) -> Dataset:
    """A SQuAD-shaped Hugging Face dataset (hub id, or e.g. name="json" with `data_files`) -> Dataset.

    The qrels split is named after `split` without any slice ("validation[:100]" -> "validation").
    The hub being unreachable raises `DataError`; set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 to use
    a dataset already in the cache without network retries.
    """
    import datasets  # lazy: importing it costs a second and most callers never need it

    try:
        rows = datasets.load_dataset(
            name,
            config,
            split=split,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            data_files=data_files,
        )
    except Exception as e:  # the hub client raises many kinds (ConnectionError, OSError, HfHubHTTPError, ...)
        raise DataError(
            f"could not load Hugging Face dataset {name!r} (config {config!r}, split {split!r}): "
            f"{type(e).__name__}: {e}. Without network, the dataset must already be in the cache "
            f"(cache_dir or HF_DATASETS_CACHE) and HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 avoid retries."
        ) from e
    missing = {"id", "title", "context", "question", "answers"} - set(rows.column_names)
    if missing:
        raise DataError(f"Hugging Face dataset {name!r} is not SQuAD-shaped: no column(s) {sorted(missing)}")
    split_name = split.split("[")[0]
    return dataset_from_squad_rows(iter(rows), split_name, source=f"hf:{name}[{split}]", name=name)


# --- DPR -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DprRecord:
    question: Question
    positives: tuple[str, ...]
    hard_negatives: tuple[str, ...]
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class _DprFile:
    passages: list[Passage]
    records: list[_DprRecord]


def _dpr_ctx_id(ctx: dict, where: str) -> str:
    pid = _id_field(ctx, ("passage_id", "psg_id", "id"), where)
    if pid is not None:
        return pid
    # No id: a content hash, so the same passage under several questions is one corpus entry.
    digest = hashlib.sha1(f"{ctx.get('title') or ''}\x00{ctx['text']}".encode()).hexdigest()[:16]
    return f"dpr-{digest}"


def _dpr_from_obj(obj: Any, source: str, stem: str) -> _DprFile:
    if not isinstance(obj, list):
        raise DataError(f"{source}: not DPR training JSON (expected a list of questions)")
    passages: dict[str, Passage] = {}
    first_seen: dict[str, str] = {}
    records: list[_DprRecord] = []
    seen_qids: set[str] = set()
    n_overlap = 0
    for i, item in enumerate(obj):
        where = f"{source}: [{i}]"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object, got {type(item).__name__}")
        if "positive_ctxs" not in item:
            raise DataError(f"{where}: missing field 'positive_ctxs'")
        qid = _id_field(item, ("id", "_id"), where) or f"{stem}-{i}"
        if qid in seen_qids:
            raise DataError(f"{where}: duplicate question id {qid!r}")
        seen_qids.add(qid)
        question = Question(
            qid, _str_field(item, "question", where), _answer_list(item.get("answers"), f"{where}.answers")
        )
        groups: dict[str, list[str]] = {}
        for key in ("positive_ctxs", "hard_negative_ctxs", "negative_ctxs"):
            ctxs = item.get(key) or []
            if not isinstance(ctxs, list):
                raise DataError(f"{where}.{key}: expected a list")
            ids: list[str] = []
            for ci, ctx in enumerate(ctxs):
                cwhere = f"{where}.{key}[{ci}]"
                if not isinstance(ctx, dict):
                    raise DataError(f"{cwhere}: expected an object, got {type(ctx).__name__}")
                text = _str_field(ctx, "text", cwhere)
                title = ctx.get("title") or ""
                if not isinstance(title, str):
                    raise DataError(f"{cwhere}: field 'title' must be a string")
                pid = _dpr_ctx_id(ctx, cwhere)
                passage = Passage(pid, text, title)
                if pid not in passages:
                    passages[pid] = passage
                    first_seen[pid] = cwhere
                elif passages[pid] != passage:
                    raise DataError(
                        f"{cwhere}: passage id {pid!r} has a different title or text than at {first_seen[pid]}"
                    )
                if pid not in ids:
                    ids.append(pid)
            groups[key] = ids
        positives = set(groups["positive_ctxs"])
        hard = [p for p in groups["hard_negative_ctxs"] if p not in positives]
        easy = [p for p in groups["negative_ctxs"] if p not in positives and p not in hard]
        n_overlap += len(groups["hard_negative_ctxs"]) - len(hard)
        records.append(_DprRecord(question, tuple(groups["positive_ctxs"]), tuple(hard), tuple(easy)))
    if not passages:
        raise DataError(f"{source}: no passages in any positive_ctxs / hard_negative_ctxs / negative_ctxs")
    if n_overlap:
        log.warning("%s: dropped %d hard negatives that are also positives of the same question", source, n_overlap)
    return _DprFile(list(passages.values()), records)


def _dpr_dataset(dpr: _DprFile, split: str, name: str) -> Dataset:
    questions = {r.question.id: r.question for r in dpr.records}
    qrels = {r.question.id: dict.fromkeys(r.positives, 1) for r in dpr.records if r.positives}
    if len(qrels) < len(questions):
        log.info(
            "%s: %d questions have no positive_ctxs (kept as questions without qrels)",
            name,
            len(questions) - len(qrels),
        )
    return Dataset(Corpus(dpr.passages), questions, {split: qrels}, name=name)


def read_dpr(path: str | Path, split: str = "train") -> Dataset:
    """DPR training JSON -> Dataset. Corpus = every positive / hard negative / negative ctx, deduped
    by `passage_id` (or `psg_id`, `id`; else a hash of title and text); qrels = the positives.

    Question ids are `id`/`_id` when present, else `<file stem>-<index in the list>` (0-based).
    The hard negatives come out through `read_dpr_examples`, with the same passage ids.
    """
    path = Path(path)
    return _dpr_dataset(_dpr_from_obj(_load_json(path), str(path), path.stem), split, path.stem)


def read_dpr_examples(path: str | Path, *, include_easy_negatives: bool = False) -> list[dict]:
    """DPR training JSON -> training examples (docs/FORMATS.md): question_id, question, positives, negatives.

    `negatives` are the `hard_negative_ctxs` (minus any that are also positives), followed by the
    `negative_ctxs` when `include_easy_negatives`. Questions without positives are skipped.
    Passage and question ids are those of `read_dpr` on the same file.
    """
    path = Path(path)
    dpr = _dpr_from_obj(_load_json(path), str(path), path.stem)
    examples = []
    for r in dpr.records:
        if not r.positives:
            continue
        negatives = list(r.hard_negatives) + (list(r.negatives) if include_easy_negatives else [])
        examples.append(
            {
                "question_id": r.question.id,
                "question": r.question.text,
                "positives": list(r.positives),
                "negatives": negatives,
            }
        )
    if len(examples) < len(dpr.records):
        log.info("%s: skipped %d questions without positives", path, len(dpr.records) - len(examples))
    return examples


# --- question files (NQ-open, TriviaQA, DPR qas) -------------------------------------------


def _iter_qas_tsv(path: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """DPR's qas files (`question<TAB>['answer1', 'answer2']`, no header; .csv or .tsv alike)."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            question, sep, answers_text = line.rpartition("\t")
            if not sep:
                raise DataError(f"{path}:{lineno}: expected 'question<TAB>[answers]', found no tab")
            try:
                answers = ast.literal_eval(answers_text.strip())
            except (ValueError, SyntaxError):
                raise DataError(f"{path}:{lineno}: answers {answers_text!r:.80} are not a list literal") from None
            yield lineno, question, _answer_list(answers, f"{path}:{lineno}")


def read_questions(path: str | Path) -> list[Question]:
    """Questions with answers and no corpus: JSONL `{"question", "answer"|"answers"}` (NQ-open,
    TriviaQA; `text` is accepted for `question`) or DPR's tab-separated qas files (.csv / .tsv).

    Ids are `id`/`_id` when present, else `<file stem>-<line number>` (1-based).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    questions: list[Question] = []
    seen: set[str] = set()

    def add(lineno: int, qid: str | None, text: str, answers: tuple[str, ...]) -> None:
        qid = qid or f"{path.stem}-{lineno}"
        if qid in seen:
            raise DataError(f"{path}:{lineno}: duplicate question id {qid!r}")
        seen.add(qid)
        questions.append(Question(qid, text, answers))

    if path.suffix.lower() in (".csv", ".tsv"):
        for lineno, text, answers in _iter_qas_tsv(path):
            add(lineno, None, text, answers)
    else:
        for lineno, obj in iter_jsonl(path):
            where = f"{path}:{lineno}"
            key = "question" if "question" in obj else "text"
            answers = obj["answers"] if "answers" in obj else obj.get("answer")
            add(lineno, _id_field(obj, ("id", "_id"), where), _str_field(obj, key, where), _answer_list(answers, where))
    if not questions:
        raise DataError(f"{path}: no questions")
    return questions


# --- MS MARCO ------------------------------------------------------------------------------


def _msmarco_kind(path: Path) -> tuple[str, str]:
    """('collection', '') / ('queries', split) / ('qrels', split) from the file name."""
    name = path.name
    if name.endswith(".tsv"):
        if name.startswith("collection"):
            return "collection", ""
        for kind in ("queries", "qrels"):
            if name.startswith(kind + ".") and len(name) > len(kind) + 5:
                return kind, name[len(kind) + 1 : -len(".tsv")]
    return "", ""


def _iter_tsv2(path: Path, what: str) -> Iterator[tuple[str, str, str]]:
    """(where, id, text) from `id<TAB>text` lines. Not csv: MS MARCO texts contain bare quotes."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, sep, text = line.partition("\t")
            if not sep or not key:
                raise DataError(f"{path}:{lineno}: expected '{what}<TAB>text', got {line!r:.80}")
            yield f"{path}:{lineno}", key, text


def _read_trec_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DataError(f"{path}:{lineno}: expected TREC qrels 'qid 0 pid relevance', got {line.strip()!r:.80}")
            qid, _, pid, rel = parts
            try:
                qrels.setdefault(qid, {})[pid] = int(rel)
            except ValueError:
                raise DataError(f"{path}:{lineno}: relevance {rel!r} is not an integer") from None
    return qrels


def read_msmarco(directory_or_files: str | Path | Iterable[str | Path]) -> Dataset:
    """MS MARCO passage TSVs -> Dataset: `collection.tsv` (pid<TAB>text), `queries.SPLIT.tsv`
    (qid<TAB>text) and `qrels.SPLIT.tsv` (TREC `qid 0 pid rel`); SPLIT comes from the file name
    (`qrels.dev.small.tsv` -> "dev.small"). A directory is searched for those names; other files
    in it (top1000, triples) are ignored. Every qrels question must have a query text.
    """
    if isinstance(directory_or_files, (str, Path)) and Path(directory_or_files).is_dir():
        d = Path(directory_or_files)
        files = sorted(p for p in d.iterdir() if _msmarco_kind(p)[0])
        name = d.name
    else:
        paths = [directory_or_files] if isinstance(directory_or_files, (str, Path)) else directory_or_files
        files = [Path(p) for p in paths]
        for p in files:
            if not _msmarco_kind(p)[0]:
                raise DataError(f"{p}: not an MS MARCO file name (collection.tsv, queries.SPLIT.tsv, qrels.SPLIT.tsv)")
        name = files[0].parent.name if files else ""
    collections = [p for p in files if _msmarco_kind(p)[0] == "collection"]
    if len(collections) != 1:
        found = ", ".join(str(p) for p in collections) or "none"
        raise DataError(f"MS MARCO: expected exactly one collection*.tsv, found {found}")

    passages = []
    for _where, pid, text in _iter_tsv2(collections[0], "pid"):
        passages.append(Passage(pid, text))
    if not passages:
        raise DataError(f"{collections[0]}: collection is empty")
    try:
        corpus = Corpus(passages)
    except DataError as e:
        raise DataError(f"{collections[0]}: {e}") from None

    questions: dict[str, Question] = {}
    qrels: dict[str, Qrels] = {}
    for path in files:
        kind, split = _msmarco_kind(path)
        if kind == "queries":
            for where, qid, text in _iter_tsv2(path, "qid"):
                if qid in questions and questions[qid].text != text:
                    raise DataError(f"{where}: query {qid!r} has a different text in another queries file")
                questions[qid] = Question(qid, text)
        elif kind == "qrels":
            if not path.is_file():
                raise DataError(f"{path}: file not found")
            qrels[split] = _read_trec_qrels(path)
    for split, judged in qrels.items():
        missing = [qid for qid in judged if qid not in questions]
        if missing:
            raise DataError(
                f"MS MARCO qrels.{split}.tsv: {len(missing)} question ids have no query text, e.g. {missing[0]!r}"
            )
    ds = Dataset(corpus, questions, qrels, name=name)
    ds.validate()
    log.info("read MS MARCO %s: %d passages, %d queries, splits %s", name, len(corpus), len(questions), sorted(qrels))
    return ds


# --- dispatch ------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and Path(text).suffix.lower() not in (".json", ".jsonl", ".tsv", ".csv")


def load_any(path_or_name: str | Path, split: str | None = None) -> Dataset:
    """Load a dataset in any supported format (see `SUPPORTED_FORMATS`), picked by sniffing.

    `split` selects one qrels split of a BEIR or MS MARCO directory, names the split of a SQuAD or
    DPR file (default: from the file name, "dev-v1.1.json" -> "dev", else "train"), and is the
    Hugging Face split (default "validation").
    """
    text = str(path_or_name)
    if text.startswith("hf:"):
        return load_hf_dataset(text[3:], split=split or "validation")
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return read_beir(path, splits=[split] if split else None)
        if (path / "collection.tsv").is_file():
            ds = read_msmarco(path)
            if split is not None:
                if split not in ds.qrels:
                    raise DataError(f"{path}: no qrels.{split}.tsv (splits: {', '.join(sorted(ds.qrels)) or 'none'})")
                ds.qrels = {split: ds.qrels[split]}
            return ds
    elif path.is_file() and path.suffix.lower() == ".json":
        obj = _load_json(path)
        split = split or _split_from_name(path, "train")
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            articles = obj["data"]
            if not articles or (isinstance(articles[0], dict) and "paragraphs" in articles[0]):
                return _squad_from_obj(obj, str(path), split)
        if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "positive_ctxs" in obj[0]:
            return _dpr_dataset(_dpr_from_obj(obj, str(path), path.stem), split, path.stem)
    elif not path.exists() and _looks_like_hub_id(text):
        log.info("%s is not a local path; trying the Hugging Face hub", text)
        try:
            return load_hf_dataset(text, split=split or "validation")
        except DataError as e:
            raise DataError(f"{text}: no such local path, and as a Hugging Face dataset: {e}") from e
    elif not path.exists():
        raise DataError(f"{path}: no such file or directory")
    formats = "\n  - ".join(SUPPORTED_FORMATS)
    raise DataError(f"{path}: unrecognised data format. Supported:\n  - {formats}")
