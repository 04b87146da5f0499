"""Fair timing for side-by-side benchmarks, and the result shapes every bench section returns.

`compare(ours, baseline, repeats)` warms both up once, then runs them alternately
(A B, B A, A B, ...) so that load from other processes on a shared machine hits both alike, and
returns min and median seconds of each plus the ratio of medians. Nothing here knows what is
being measured: the sections in engine/bench_speed.py and engine/bench_scale.py do.

A section returns a `Section`: a JSON-able `data` dict (the numbers, settings and checks) and
`rows` for the Markdown table (measurement, ours, baseline, ratio, goal, met).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Timing:
    seconds: tuple[float, ...]  # one entry per timed repeat

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self, work: int | None = None) -> dict:
        out = {
            "min_s": round(self.min, 4),
            "median_s": round(self.median, 4),
            "repeats_s": [round(s, 4) for s in self.seconds],
        }
        if work:
            out["per_s_median"] = round(work / self.median, 2)  # items per second at the median time
            out["per_s_best"] = round(work / self.min, 2)
        return out


@dataclass(frozen=True)
class Comparison:
    ours: Timing
    baseline: Timing

    @property
    def ratio(self) -> float:
        """Speed of ours relative to the baseline (>1 = ours faster): baseline median / ours median."""
        return self.baseline.median / self.ours.median

    @property
    def paired_ratio(self) -> float:
        """Median over repeats of baseline/ours for the two runs made back to back: robust to slow drift."""
        return statistics.median(b / a for a, b in zip(self.ours.seconds, self.baseline.seconds))

    def to_dict(self, work: int | None = None) -> dict:
        return {
            "ours": self.ours.to_dict(work),
            "baseline": self.baseline.to_dict(work),
            "ratio_of_medians": round(self.ratio, 3),
            "median_paired_ratio": round(self.paired_ratio, 3),
        }


def time_once(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(ours: Callable[[], object], baseline: Callable[[], object], repeats: int, warmup: int = 1) -> Comparison:
    """Alternate ours and the baseline (A B, B A, ...) `repeats` times each, after `warmup` runs of each."""
    for _ in range(warmup):
        ours()
        baseline()
    a, b = [], []
    for r in range(repeats):
        if r % 2 == 0:
            a.append(time_once(ours))
            b.append(time_once(baseline))
        else:
            b.append(time_once(baseline))
            a.append(time_once(ours))
    return Comparison(Timing(tuple(a)), Timing(tuple(b)))


def repeat(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        fn()
    return Timing(tuple(time_once(fn) for _ in range(repeats)))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


@dataclass(frozen=True)
class Row:
    """One line of the Markdown table."""

    measurement: str
    ours: str
    baseline: str = "—"
    ratio: float | None = None  # ours vs baseline, >1 = ours better
    goal: str = "reported"
    met: bool | None = None  # None = no pass/fail goal

    def to_dict(self) -> dict:
        return {
            "measurement": self.measurement,
            "ours": self.ours,
            "baseline": self.baseline,
            "ratio": None if self.ratio is None else round(self.ratio, 2),
            "goal": self.goal,
            "met": self.met,
        }


@dataclass(frozen=True)
class Section:
    name: str
    data: dict
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0  # wall time the section took


def emit_json(data: dict, output: str | Path | None = None) -> int:
    """Print a benchmark script's result as indented JSON, also into `output` when given; returns 0
    (the script's exit status)."""
    text = json.dumps(data, indent=2)
    if output:
        Path(output).write_text(text + "\n")
    print(text)
    return 0
