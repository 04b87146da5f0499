"""The cross-encoder: a (question, passage) pair -> relevance logit -> calibrated probability.

RocketQA's denoising and augmentation thresholds (0.1, 0.9) are probabilities, so the logit of the
classification head goes through a fitted Platt scaling, p = sigmoid(scale * logit + bias),
learnt on held-out labelled pairs after training (`calibrate`). A head that was never trained
(a base model such as the packaged MiniLM) reports `is_trained == False`, and callers must not
present its scores as meaningful.

Saved layout: a standard Hugging Face sequence-classification directory (num_labels = 1, loadable
by `transformers` and by `sentence_transformers.CrossEncoder`) plus `cross_encoder.json`
(max length, calibration, trained flag, provenance).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from engine.data import Passage
from engine.encoder import (
    batch_token_budget,
    default_device,
    default_model_path,
    resolve_device,
    tokenized_batches,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "cross_encoder.json"
MAX_CALIBRATION_SCALE = 50.0  # bound on the Platt slope, which stays in [0, 50] (a step function is not a probability)


@dataclass(frozen=True)
class CrossEncoderConfig:
    model: str = ""  # Hugging Face id or local directory; "" = the packaged all-MiniLM-L6-v2
    max_length: int = 256  # question + passage tokens (RocketQA used 384 with ERNIE-large)
    passage_with_title: bool = True
    scale: float = 1.0  # Platt scaling of the logit, fitted by `calibrate`
    bias: float = 0.0
    trained: bool = False  # True once the head has been trained (by us or upstream)
    provenance: dict = field(default_factory=dict)  # training run, data, metrics

    def resolved_model(self) -> str:
        return self.model or default_model_path()


@dataclass(frozen=True)
class ScoredPassage:
    passage: Passage
    logit: float
    prob: float
    rank: int  # 1-based rank by probability among the scored passages


class CrossEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, tokenizer, config: CrossEncoderConfig):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config

    # --- build / load / save -------------------------------------------------------------

    @classmethod
    def build(cls, config: CrossEncoderConfig | None = None, device: str | torch.device | None = None) -> CrossEncoder:
        """From `config.model`, placed on `device` (None: `engine.encoder.default_device()`)."""
        config = config or CrossEncoderConfig()
        path = config.resolved_model()
        try:
            hf_config = AutoConfig.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        except OSError as e:
            raise OSError(
                f"cannot load a cross-encoder from {path!r}: not a model directory, or the hub is unreachable ({e})"
            ) from None
        model.to(default_device() if device is None else resolve_device(device))
        upstream_head = any(a.endswith("ForSequenceClassification") for a in (hf_config.architectures or []))
        if upstream_head and hf_config.num_labels == 1 and not config.trained:
            # a published cross-encoder (e.g. an MS MARCO re-ranker): its head is trained
            config = replace(config, trained=True, provenance={"upstream": path})
        return cls(model, tokenizer, config)

    @classmethod
    def load(cls, directory: str | Path, **overrides) -> CrossEncoder:
        d = Path(directory)
        cfg_file = d / CONFIG_FILE
        if not cfg_file.is_file():
            return cls.build(replace(CrossEncoderConfig(model=str(directory)), **overrides))
        cfg = replace(CrossEncoderConfig(**json.loads(cfg_file.read_text())), model=str(d), **overrides)
        return cls.build(cfg)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(d)
        self.tokenizer.save_pretrained(d)
        (d / CONFIG_FILE).write_text(json.dumps(asdict(replace(self.config, model=str(d))), indent=2))
        return d

    @property
    def is_trained(self) -> bool:
        return self.config.trained

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- scoring -------------------------------------------------------------------------

    def passage_text(self, passage: Passage) -> str:
        return passage.full_text if self.config.passage_with_title else passage.text

    def forward(self, questions: Sequence[str], passages: Sequence[Passage]) -> torch.Tensor:
        """(batch,) raw logits with gradients, for training."""
        batch = self.tokenizer(
            list(questions),
            [self.passage_text(p) for p in passages],
            padding=True,
            truncation="only_second",
            max_length=self.config.max_length,
            return_tensors="pt",
        ).to(self.device)
        return self.model(**batch).logits.squeeze(-1)

    def probability(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        z = np.clip(np.asarray(logits, dtype=np.float64) * self.config.scale + self.config.bias, -60.0, 60.0)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    @torch.inference_mode()
    def logits(self, questions: Sequence[str], passages: Sequence[Passage], batch_size: int = 32) -> np.ndarray:
        """(n,) logits for n pairs, in batches of pairs sorted by token length so padding stays small (on a
        CPU also at most `CPU_BATCH_TOKENS` padded tokens a batch: a top-20 re-ranks in batches of ~4)."""
        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions for {len(passages)} passages")
        was_training = self.training
        self.eval()
        texts = [self.passage_text(p) for p in passages]
        batches = tokenized_batches(
            self.tokenizer,
            questions,
            texts,
            batch_size,
            batch_token_budget(self.device),
            truncation="only_second",
            max_length=self.config.max_length,
        )
        out = np.empty(len(questions), dtype=np.float32)
        for idx, batch in batches:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out[idx] = self.model(**batch).logits.squeeze(-1).float().cpu().numpy()
        self.train(was_training)
        return out

    def score(self, question: str, passages: Sequence[Passage], batch_size: int = 32) -> np.ndarray:
        """(n,) calibrated probabilities that each passage answers the question."""
        return self.probability(self.logits([question] * len(passages), passages, batch_size))

    def rank(self, question: str, passages: Sequence[Passage], batch_size: int = 32) -> list[ScoredPassage]:
        """The passages re-ordered by probability, best first."""
        logits = self.logits([question] * len(passages), passages, batch_size)
        probs = self.probability(logits)
        order = np.argsort(-logits, kind="stable")
        return [ScoredPassage(passages[i], float(logits[i]), float(probs[i]), r) for r, i in enumerate(order, 1)]

    # --- calibration ---------------------------------------------------------------------

    def calibrate(self, logits: np.ndarray, labels: np.ndarray, steps: int = 200) -> CrossEncoderConfig:
        """Fit Platt scaling (scale, bias) on held-out (logit, 0/1 label) pairs; updates and returns the config."""
        x = torch.tensor(np.asarray(logits, dtype=np.float64))
        y = torch.tensor(np.asarray(labels, dtype=np.float64))
        if len(x) == 0 or y.min() == y.max():
            raise ValueError("calibration needs held-out pairs of both classes")
        params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([params], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
            loss.backward()
            return loss

        opt.step(closure)
        scale, bias = (float(v) for v in params.detach())
        # a diverged fit (perfect separation) points the way the held-out class means do
        inverted = scale <= 0 if math.isfinite(scale) else float(x[y == 1].mean()) < float(x[y == 0].mean())
        if inverted:
            # a calibration maps logits to probabilities monotonically; it must not invert the model's
            # order (the app and re-ranking sort by logit). With no positive slope the held-out pairs show
            # no usable signal: every pair gets the held-out base rate, and steps 3/4's AUC gate refuses it.
            rate = float(y.mean())
            log.warning(
                "calibration slope %.4f <= 0: higher logits are not more relevant on held-out pairs; "
                "probabilities fall back to the base rate %.3f",
                scale,
                rate,
            )
            self.config = replace(self.config, scale=0.0, bias=math.log(rate / (1 - rate)))
            return self.config
        if not math.isfinite(scale) or not math.isfinite(bias) or scale > MAX_CALIBRATION_SCALE:
            # held-out logits that separate perfectly (or nearly) send the fit towards a step
            # function; keep the slope bounded and fit the offset alone
            scale = MAX_CALIBRATION_SCALE
            offset = torch.zeros(1, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.LBFGS([offset], max_iter=steps, line_search_fn="strong_wolfe")

            def offset_closure():
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(scale * x + offset[0], y)
                loss.backward()
                return loss

            opt.step(offset_closure)
            bias = float(offset.detach()[0])
            log.warning("calibration slope bounded to %g (held-out logits separate almost perfectly)", scale)
        self.config = replace(self.config, scale=scale, bias=bias)
        log.info("calibrated cross-encoder: p = sigmoid(%.4f * logit + %.4f)", scale, bias)
        return self.config
