"""A read-only view of a pipeline run directory (layout: engine/pipeline.py, docs/PIPELINE.md).

```
RUN/config.json                       the pipeline config (+ data path, corpus fingerprint)
RUN/corpus.jsonl                      the corpus the decisions refer to (optional)
RUN/step1_dual_encoder/model/         M_D0          RUN/step2_cross_encoder/model/   M_C
RUN/step3_denoise/{decisions.jsonl, model/}  M_D1   RUN/step4_augment/{decisions.jsonl, model/}  M_D2
RUN/stepN_*/metrics.json, DONE        per-step metrics; DONE once the step finished
RUN/ablation*.{json,md,png}           ablation outputs, when the ablation wrote them here
```
Decision records (docs/FORMATS.md) are read lazily, once, into a pandas DataFrame.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

STEPS = ("step1_dual_encoder", "step2_cross_encoder", "step3_denoise", "step4_augment")
DECISION_STEPS = ("step3_denoise", "step4_augment")
DECISIONS = (
    "positive", "hard_negative", "dropped_false_negative", "random_fill", "pseudo_positive", "pseudo_negative", "ignored",
)  # fmt: skip
DECISION_COLUMNS = [
    "run_id", "step", "question_id", "question_text", "passage_id", "dense_rank", "dense_score", "ce_prob",
    "neg_threshold", "pos_threshold", "decision", "is_labelled_positive", "dual_encoder", "cross_encoder",
]  # fmt: skip


class RunError(ValueError):
    """The run directory is missing or unreadable; the message says which file."""


@dataclass(frozen=True)
class StepStatus:
    step: str
    done: bool
    metrics: dict


class RunView:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise RunError(f"{self.dir}: run directory not found")
        self._decisions: pd.DataFrame | None = None
        self._lock = threading.Lock()

    @property
    def run_id(self) -> str:
        return self.dir.name

    def config(self) -> dict:
        path = self.dir / "config.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RunError(f"{path}: invalid JSON ({e.msg})") from None

    def data_path(self) -> str:
        """The data directory the run was made from, if its config names one."""
        cfg = self.config()
        for key in ("data", "data_dir", "data_path"):
            if isinstance(cfg.get(key), str):
                return cfg[key]
        return ""

    def corpus_path(self) -> Path | None:
        path = self.dir / "corpus.jsonl"
        return path if path.is_file() else None

    def dual_encoder_dir(self) -> Path | None:
        """The latest trained dual-encoder: M_D2, else M_D1, else M_D0."""
        for step in ("step4_augment", "step3_denoise", "step1_dual_encoder"):
            d = self.dir / step / "model"
            if d.is_dir() and (self.dir / step / "DONE").exists():
                return d
        return None

    def cross_encoder_dir(self) -> Path | None:
        d = self.dir / "step2_cross_encoder" / "model"
        return d if d.is_dir() else None

    def steps(self) -> list[StepStatus]:
        out = []
        for step in STEPS:
            d = self.dir / step
            metrics = {}
            if (d / "metrics.json").is_file():
                try:
                    metrics = json.loads((d / "metrics.json").read_text())
                except json.JSONDecodeError:
                    metrics = {"error": f"{d / 'metrics.json'} is not valid JSON"}
            out.append(StepStatus(step, (d / "DONE").exists(), metrics))
        return out

    def decision_files(self) -> list[Path]:
        return [
            self.dir / s / "decisions.jsonl" for s in DECISION_STEPS if (self.dir / s / "decisions.jsonl").is_file()
        ]

    def decisions(self) -> pd.DataFrame:
        """All decision records of steps 3 and 4 (empty frame with the documented columns if none)."""
        with self._lock:
            if self._decisions is None:
                frames = []
                for path in self.decision_files():
                    try:
                        frames.append(pd.read_json(path, lines=True, dtype={"question_id": str, "passage_id": str}))
                    except ValueError as e:
                        raise RunError(f"{path}: not a decision file ({e})") from None
                frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DECISION_COLUMNS)
                for col in DECISION_COLUMNS:
                    if col not in frame:
                        frame[col] = None
                frame["question_id"] = frame["question_id"].astype(str)
                frame["passage_id"] = frame["passage_id"].astype(str)
                self._decisions = frame
            return self._decisions

    def ablation(self) -> tuple[dict | list | None, Path | None, str]:
        """(ablation JSON, plot path, markdown) found in the run directory or its `ablation/` folder."""
        for d in (self.dir, self.dir / "ablation"):
            js = sorted(d.glob("ablation*.json"))
            if js:
                try:
                    data = json.loads(js[0].read_text())
                except json.JSONDecodeError:
                    data = None
                pngs = sorted(d.glob("ablation*.png"))
                mds = sorted(d.glob("ablation*.md"))
                return data, (pngs[0] if pngs else None), (mds[0].read_text() if mds else "")
        return None, None, ""
