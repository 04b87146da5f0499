"""What to judge next: a per-annotator queue mixing a random sample, uncertain items and disagreements.

Strata (the `QueueItem.stratum` that the app passes back to `judge`):

- `random`: for each decision class of the run, decisions in the order of their `sample_key`, a
  uniform pseudo-random permutation fixed at import. The audit's unbiased sample of a class is
  the longest prefix of that order in which every item has been judged (see
  `audit.random_sample`), so this stratum serves the first unjudged items of each prefix, the
  class with the fewest judged items first. It is the only basis for unbiased precision.
- `uncertain`: cross-encoder probability nearest the threshold(s) that decide its step.
- `disagreement`: dense rank and cross-encoder rank furthest apart (`|log2 dense - log2 ce|`).
- `overlap`: an item another annotator graded that was drawn for double annotation
  (`overlap_key < QueueConfig.overlap`), served first so agreement accrues early.

An item is offered to an annotator who has no current label for its (question, passage), that
needs more grades (1, or 2 for overlap items), and that was not handed to another annotator in
the last `lease_s` seconds (each call records what it handed out, in the same transaction, so
two annotators asking at once get different items). Items already handed to this annotator and
still unjudged come first, in their original order, so reloading the app does not reshuffle the
queue. Two annotators starting on the same item despite the lease (it expired) only produce an
extra grade for agreement; nothing is lost. Items carry only the machine's suggestion,
never another annotator's label; the app hides the suggestion in blind mode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import sqlite_utils

from .decisions import resolve_run
from .errors import InvalidInputError
from .judgments import _check_annotator
from .schema import DECISIONS
from .store import StoreLike, as_store

STRATA = ("random", "uncertain", "disagreement")


@dataclass(frozen=True)
class QueueConfig:
    random_share: float = 0.5  # of the queue, the unbiased uniform sample
    uncertain_share: float = 0.3
    disagreement_share: float = 0.2
    overlap: float = 0.1  # fraction of items that get a second annotator (for agreement)
    lease_s: float = 600.0  # an item handed to one annotator is not handed to another for this long
    decisions: tuple[str, ...] = DECISIONS  # decision classes to sample from

    def __post_init__(self) -> None:
        shares = (self.random_share, self.uncertain_share, self.disagreement_share)
        if min(shares) < 0 or sum(shares) <= 0:
            raise InvalidInputError(f"queue shares must be >= 0 and not all 0, got {shares}")
        if not 0 <= self.overlap <= 1:
            raise InvalidInputError(f"overlap must be in [0, 1], got {self.overlap}")
        unknown = set(self.decisions) - set(DECISIONS)
        if unknown:
            raise InvalidInputError(f"unknown decision classes {sorted(unknown)}")


@dataclass(frozen=True)
class QueueItem:
    decision_id: int
    run_id: str
    step: str
    stratum: str  # random | uncertain | disagreement | overlap
    question_id: str
    question_text: str
    passage_id: str
    passage_title: str
    passage_text: str
    # The machine's suggestion: hide these in blind mode.
    decision: str
    dense_rank: int | None
    dense_score: float | None
    ce_prob: float | None
    neg_threshold: float
    pos_threshold: float


_CANDIDATE_COLUMNS = "id, question_id, passage_id, overlap_key"


class _Eligibility:
    """Who may be offered what, read once per call inside the queue's transaction."""

    def __init__(self, db: sqlite_utils.Database, annotator: str, config: QueueConfig) -> None:
        self.overlap = config.overlap
        self.graded: dict[tuple[str, str], int] = {}
        self.mine: set[tuple[str, str]] = set()
        for qid, pid, who, action in db.execute(
            "SELECT question_id, passage_id, annotator_id, action FROM current_judgments"
        ):
            if who == annotator:
                self.mine.add((qid, pid))
            if action == "grade":
                self.graded[(qid, pid)] = self.graded.get((qid, pid), 0) + 1
        cutoff = time.time() - config.lease_s
        self.leased = {
            (q, p)
            for q, p in db.execute(
                "SELECT d.question_id, d.passage_id FROM served s JOIN decisions d ON d.id = s.decision_id"
                " WHERE s.served_at > ? AND s.annotator_id != ?",
                [cutoff, annotator],
            )
        }
        self.taken: set[tuple[str, str]] = set()

    def ok(self, qid: str, pid: str, overlap_key: float, second_only: bool = False) -> bool:
        pair = (qid, pid)
        if pair in self.mine or pair in self.taken or pair in self.leased:
            return False
        needed = 2 if overlap_key < self.overlap else 1
        have = self.graded.get(pair, 0)
        return have == 1 and needed == 2 if second_only else have < needed


def _first(db: sqlite_utils.Database, sql: str, params: list, elig: _Eligibility, k: int, **kw) -> list[int]:
    found: list[int] = []
    for did, qid, pid, okey in db.execute(sql, params):
        if len(found) == k:
            break
        if elig.ok(qid, pid, okey, **kw):
            found.append(did)
            elig.taken.add((qid, pid))
    return found


def _second_opinions(db, run_id, config, elig, k) -> list[int]:
    """Overlap items graded by exactly one other annotator, in sample order (looked up by pair, not by scan)."""
    if config.overlap <= 0 or k <= 0:
        return []
    pairs = [p for p, count in elig.graded.items() if count == 1 and p not in elig.mine and p not in elig.leased]
    rows = []
    for start in range(0, len(pairs), 200):
        chunk = pairs[start : start + 200]
        values = ",".join("(?, ?)" for _ in chunk)
        rows += db.execute(
            f"SELECT {_CANDIDATE_COLUMNS}, decision, sample_key FROM decisions WHERE run_id = ?"
            f" AND (question_id, passage_id) IN (VALUES {values})",
            [run_id, *(x for pair in chunk for x in pair)],
        ).fetchall()
    rows = sorted((r for r in rows if r[4] in config.decisions), key=lambda r: (r[5], r[0]))
    found: list[int] = []
    for did, qid, pid, okey, _, _ in rows:
        if len(found) < k and elig.ok(qid, pid, okey, second_only=True):
            found.append(did)
            elig.taken.add((qid, pid))
    return found


def _random_stratum(db, run_id, config, elig, k) -> list[int]:
    """Up to k items from the fronts of each class's sample_key order, the class with the shortest
    judged prefix (= current audit sample) first, so every class's sample grows evenly."""
    fronts: dict[str, list] = {}  # decision -> [cursor, prefix length so far, next candidate or None]
    for decision in config.decisions:
        cursor = db.execute(
            f"SELECT {_CANDIDATE_COLUMNS} FROM decisions WHERE run_id = ? AND decision = ? ORDER BY sample_key, id",
            [run_id, decision],
        )
        fronts[decision] = [cursor, 0, None]
        _advance(fronts[decision], elig)
    chosen: list[int] = []
    while len(chosen) < k:
        live = [d for d in fronts if fronts[d][2] is not None]
        if not live:
            break
        decision = min(live, key=lambda d: (fronts[d][1], config.decisions.index(d)))
        front = fronts[decision]
        did, qid, pid, _ = front[2]
        chosen.append(did)
        elig.taken.add((qid, pid))
        front[1] += 1
        _advance(front, elig)
    return chosen


def _advance(front: list, elig: _Eligibility) -> None:
    """Move a class's front to its next offerable item, counting judged or in-progress items on the way."""
    front[2] = None
    for row in front[0]:
        if elig.ok(row[1], row[2], row[3]):
            front[2] = row
            return
        front[1] += 1


def next_items(
    store: StoreLike, annotator: str, run_id: str | None = None, n: int = 10, config: QueueConfig | None = None
) -> list[QueueItem]:
    """The next `n` items for `annotator` (fewer when the run is exhausted), and lease them."""
    annotator = _check_annotator(annotator)
    config = config or QueueConfig()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")

    def tx(db: sqlite_utils.Database) -> list[QueueItem]:
        run = resolve_run(db, run_id)
        elig = _Eligibility(db, annotator, config)
        base = f"SELECT {_CANDIDATE_COLUMNS} FROM decisions WHERE run_id = ?"
        if set(config.decisions) != set(DECISIONS):
            base += " AND decision IN (" + ",".join(f"'{d}'" for d in config.decisions) + ")"
        held = _still_held(db, run, annotator, config, elig, n)
        second = _second_opinions(db, run, config, elig, min(math.ceil(n / 2), n - len(held)))
        rest = n - len(held) - len(second)
        shares = {
            "random": config.random_share,
            "uncertain": config.uncertain_share,
            "disagreement": config.disagreement_share,
        }
        pools = {
            "random": _random_stratum(db, run, config, elig, rest) if shares["random"] > 0 else [],
            "uncertain": _first(db, base + " AND uncertainty IS NOT NULL ORDER BY uncertainty, sample_key", [run], elig, rest)
            if shares["uncertain"] > 0 else [],
            "disagreement": _first(db, base + " AND disagreement > 0 ORDER BY disagreement DESC, sample_key", [run], elig, rest)
            if shares["disagreement"] > 0 else [],
        }  # fmt: skip
        fresh = [(did, "overlap") for did in second] + _interleave(pools, shares, rest)
        now = time.time()
        db.conn.executemany(
            "INSERT INTO served (annotator_id, decision_id, stratum, served_at) VALUES (?, ?, ?, ?)",
            [(annotator, did, stratum, now) for did, stratum in fresh],
        )
        order = held + fresh
        return [_item(db, did, stratum) for did, stratum in order]

    return as_store(store).write(tx)


def _still_held(db, run_id, annotator, config, elig, n) -> list[tuple[int, str]]:
    """Items handed to this annotator within the lease and not judged yet: shown again first, in the same
    order and stratum, so reloading the page does not reshuffle the queue (their lease is not renewed)."""
    held: list[tuple[int, str]] = []
    cutoff = time.time() - config.lease_s
    for did, stratum, qid, pid, okey in db.execute(
        "SELECT s.decision_id, s.stratum, d.question_id, d.passage_id, d.overlap_key FROM served s"
        " JOIN decisions d ON d.id = s.decision_id WHERE s.annotator_id = ? AND s.served_at > ? AND d.run_id = ?"
        " ORDER BY s.id",
        [annotator, cutoff, run_id],
    ):
        if len(held) == n:
            break
        if elig.ok(qid, pid, okey):
            held.append((did, stratum))
            elig.taken.add((qid, pid))
    return held


def _interleave(pools: dict[str, list[int]], shares: dict[str, float], n: int) -> list[tuple[int, str]]:
    """Mix the pools in proportion to their shares (largest deficit first); a short pool's slots go to the others."""
    total = sum(shares.values())
    taken = dict.fromkeys(pools, 0)
    out: list[tuple[int, str]] = []
    while len(out) < n:
        live = [s for s in pools if taken[s] < len(pools[s])]
        if not live:
            break
        position = len(out) + 1
        stratum = max(live, key=lambda s: (shares[s] / total * position - taken[s], shares[s]))
        out.append((pools[stratum][taken[stratum]], stratum))
        taken[stratum] += 1
    # A later pool can hold an item an earlier pool also found only if both looked before `taken` was
    # updated; _Eligibility.taken prevents that, so ids are unique here.
    return out


def _item(db: sqlite_utils.Database, decision_id: int, stratum: str) -> QueueItem:
    row = db.execute(
        "SELECT d.id, d.run_id, d.step, q.id, q.text, p.id, p.title, p.text, d.decision, d.dense_rank,"
        " d.dense_score, d.ce_prob, d.neg_threshold, d.pos_threshold FROM decisions d"
        " JOIN questions q ON q.id = d.question_id JOIN passages p ON p.id = d.passage_id WHERE d.id = ?",
        [decision_id],
    ).fetchone()
    return QueueItem(row[0], row[1], row[2], stratum, *row[3:])
