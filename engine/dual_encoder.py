"""The dual-encoder retriever: a query tower and a passage tower (shared or separate).

RocketQA's retriever scores a (question, passage) pair by the inner product of two independently
computed vectors, so passages are encoded once and searched with FAISS. Surfaces:
`encode_queries` / `encode_passages` (NumPy, inference), `forward_queries` / `forward_passages`
(tensors with gradients, training), `build` / `load` / `save`.

Saved layout (`save(dir)`):
- shared towers: `dir` itself is a Hugging Face + sentence-transformers model directory;
- separate towers: `dir/query_encoder/` and `dir/passage_encoder/`, each such a directory;
plus `dir/dual_encoder.json` (this module's config). A shared model directory therefore loads
as-is in `sentence_transformers.SentenceTransformer(dir)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engine.data import Passage
from engine.encoder import TextEncoder, default_model_path, read_st_settings

log = logging.getLogger(__name__)

CONFIG_FILE = "dual_encoder.json"
PAPER_PASSAGE_MAX_LENGTH = 128  # RocketQA: max passage length (title + text)


@dataclass(frozen=True)
class DualEncoderConfig:
    model: str = ""  # Hugging Face id or local directory; "" = the packaged all-MiniLM-L6-v2
    shared: bool = True  # one tower for questions and passages (False: two towers, as ERNIE-based RocketQA)
    pooling: str | None = None  # "mean" | "cls"; None = what the model's sentence-transformers files say
    normalize: bool | None = None  # L2-normalise vectors; None = what the model's files say
    query_max_length: int = 32  # RocketQA paper: max question length 32 tokens
    # RocketQA paper: 128 tokens (title + text). None = the max length the model's own
    # sentence-transformers files declare (256 for all-MiniLM-L6-v2, which reproduces
    # sentence-transformers' embeddings exactly), else 128.
    passage_max_length: int | None = None
    passage_with_title: bool = True  # encode "title. text" (DPR/RocketQA put the title in front)

    def resolved_model(self) -> str:
        return self.model or default_model_path()


class DualEncoder(torch.nn.Module):
    def __init__(self, query: TextEncoder, passage: TextEncoder, config: DualEncoderConfig):
        super().__init__()
        self.query_encoder = query
        self.passage_encoder = passage
        self.config = config
        # set on inference copies whose weights are no longer plain tensors (engine.quantize): their
        # embedding-cache key is the source model's fingerprint plus how the copy runs
        self.derived_fingerprint: str | None = None

    # --- build / load / save -------------------------------------------------------------

    @classmethod
    def build(cls, config: DualEncoderConfig | None = None) -> DualEncoder:
        """A fresh dual-encoder initialised from `config.model` (both towers from the same weights)."""
        config = config or DualEncoderConfig()
        path = config.resolved_model()
        passage_max_length = (
            config.passage_max_length or read_st_settings(path).get("max_length") or PAPER_PASSAGE_MAX_LENGTH
        )
        config = replace(config, passage_max_length=passage_max_length)
        query = TextEncoder.from_pretrained(path, config.pooling, config.normalize, config.query_max_length)
        if config.shared:
            passage = copy.copy(query)  # same torch modules, its own max length
            passage.max_length = passage_max_length
        else:
            passage = TextEncoder.from_pretrained(path, config.pooling, config.normalize, passage_max_length)
        return cls(query, passage, config)

    @classmethod
    def load(cls, directory: str | Path, **overrides) -> DualEncoder:
        """Load a directory written by `save`, or any model directory / hub id (then as `build`)."""
        d = Path(directory)
        cfg_file = d / CONFIG_FILE
        if not cfg_file.is_file():
            return cls.build(replace(DualEncoderConfig(model=str(directory)), **overrides))
        cfg = DualEncoderConfig(**json.loads(cfg_file.read_text()))
        cfg = replace(cfg, **overrides)
        if cfg.shared:
            return cls.build(replace(cfg, model=str(d)))
        query = TextEncoder.from_pretrained(d / "query_encoder", cfg.pooling, cfg.normalize, cfg.query_max_length)
        passage = TextEncoder.from_pretrained(d / "passage_encoder", cfg.pooling, cfg.normalize, cfg.passage_max_length)
        return cls(query, passage, replace(cfg, model=str(d)))

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        if self.config.shared:
            self.passage_encoder.save(d)
        else:
            self.query_encoder.save(d / "query_encoder")
            self.passage_encoder.save(d / "passage_encoder")
        cfg = replace(
            self.config, pooling=self.query_encoder.pooling, normalize=self.query_encoder.normalize, model=str(d)
        )
        (d / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2))
        return d

    # --- encoding ------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.query_encoder.dim

    def passage_texts(self, passages: Sequence[Passage]) -> list[str]:
        return [p.full_text if self.config.passage_with_title else p.text for p in passages]

    def forward_queries(self, texts: Sequence[str]) -> torch.Tensor:
        return self.query_encoder(texts)  # (batch, dim)

    def forward_passages(self, passages: Sequence[Passage]) -> torch.Tensor:
        return self.passage_encoder(self.passage_texts(passages))  # (batch, dim)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 128, show_progress: bool = False) -> np.ndarray:
        return self.query_encoder.encode(texts, batch_size, show_progress, desc="encoding questions")

    def encode_passages(
        self, passages: Sequence[Passage], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        return self.passage_encoder.encode(
            self.passage_texts(passages), batch_size, show_progress, desc="encoding passages"
        )

    def fingerprint(self) -> str:
        """Identifies weights + encoding settings: the cache key of passage embeddings."""
        if self.derived_fingerprint:
            return self.derived_fingerprint
        q, p = self.query_encoder, self.passage_encoder
        settings = [
            q.pooling,
            q.normalize,
            q.max_length,
            p.max_length,
            self.config.passage_with_title,
            self.config.shared,
        ]
        h = hashlib.sha256(json.dumps(settings).encode())
        for name, tensor in self.passage_encoder.model.state_dict().items():
            h.update(name.encode())
            flat = tensor.detach().float().flatten()
            # a strided sample of every tensor + its sum: cheap, and changes with any training step
            h.update(flat[:: max(1, flat.numel() // 64)].cpu().numpy().tobytes())
            h.update(np.float64(flat.double().sum().item()).tobytes())
        return h.hexdigest()[:16]
