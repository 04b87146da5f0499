"""On-disk cache of passage embeddings and indexes, keyed by model and corpus fingerprints.

A restart does not re-encode: `cached_index(encoder, corpus)` looks in
`<cache root>/<model fingerprint>-<corpus fingerprint>/` for `embeddings.npy` and the
saved index, and only encodes what is missing. The cache root is `$ROCKETQA_CACHE`, else
`~/.cache/rocketqa-workbench`.

Sharded encoding lets many processes (or machines sharing a disk) encode one corpus:
process i of n runs `encode_shard(encoder, corpus, i, n, dir)` over a contiguous slice;
`merge_shards(dir, n)` concatenates the shards in corpus order, checking that none is missing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data import Corpus
from engine.dual_encoder import DualEncoder
from engine.index import DenseIndex, IndexLoadError

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    return Path(os.environ.get("ROCKETQA_CACHE") or Path.home() / ".cache" / "rocketqa-workbench")


def cache_dir(encoder: DualEncoder, corpus: Corpus, root: str | Path | None = None) -> Path:
    return Path(root or default_cache_root()) / f"{encoder.fingerprint()}-{corpus.fingerprint()}"


def cached_embeddings(
    encoder: DualEncoder, corpus: Corpus, root: str | Path | None = None, show_progress: bool = True
) -> np.ndarray:
    """(n_passages, dim) passage vectors, read from the cache or encoded and written to it."""
    d = cache_dir(encoder, corpus, root)
    path = d / "embeddings.npy"
    if path.is_file():
        try:
            vectors = np.load(path)
            if vectors.shape == (len(corpus), encoder.dim):
                log.info("passage embeddings read from %s", path)
                return vectors
            log.warning("%s has shape %s, expected %s: re-encoding", path, vectors.shape, (len(corpus), encoder.dim))
        except (ValueError, OSError) as e:
            log.warning("%s is unreadable (%s): re-encoding", path, e)
    vectors = encoder.encode_passages(corpus.passages, show_progress=show_progress)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "embeddings.tmp.npy"
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def cached_index(
    encoder: DualEncoder,
    corpus: Corpus,
    factory: str = "Flat",
    root: str | Path | None = None,
    show_progress: bool = True,
) -> DenseIndex:
    """The corpus index for this encoder, loaded from the cache or built (and saved)."""
    d = cache_dir(encoder, corpus, root) / f"index-{factory.replace(',', '_')}"
    if d.is_dir():
        try:
            index = DenseIndex.load(d)
            if index.ids == corpus.ids:
                return index
            log.warning("cached index %s does not match the corpus: rebuilding", d)
        except IndexLoadError as e:
            log.warning("%s: rebuilding", e)
    vectors = cached_embeddings(encoder, corpus, root, show_progress)
    index = DenseIndex.build(vectors, corpus.ids, factory)
    index.save(d)
    return index


# --- sharded encoding ---------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """'i/n' with 0 <= i < n."""
        try:
            i, n = (int(x) for x in spec.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like 'i/n' (e.g. 0/4), got {spec!r}") from None
        if not 0 <= i < n:
            raise ValueError(f"shard {spec!r}: need 0 <= i < n")
        return cls(i, n)

    def bounds(self, total: int) -> tuple[int, int]:
        per = -(-total // self.count)
        return min(self.index * per, total), min((self.index + 1) * per, total)


def encode_shard(
    encoder: DualEncoder, corpus: Corpus, shard: Shard, out_dir: str | Path, show_progress: bool = True
) -> Path:
    lo, hi = shard.bounds(len(corpus))
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    vectors = encoder.encode_passages(corpus.passages[lo:hi], show_progress=show_progress)
    stem = f"shard-{shard.index:04d}-of-{shard.count:04d}"
    np.save(d / f"{stem}.npy", vectors)
    meta = {"lo": lo, "hi": hi, "corpus": corpus.fingerprint(), "model": encoder.fingerprint()}
    (d / f"{stem}.json").write_text(json.dumps(meta))
    return d / f"{stem}.npy"


def merge_shards(out_dir: str | Path, count: int, corpus: Corpus, model: str | None = None) -> np.ndarray:
    """Concatenate shards 0..count-1 in corpus order; a missing or foreign shard is an error.

    `model`: the fingerprint the shards must have been encoded with (the index is cached under it)."""
    d = Path(out_dir)
    parts, expected_lo, models = [], 0, set()
    for i in range(count):
        stem = d / f"shard-{i:04d}-of-{count:04d}"
        if not stem.with_suffix(".json").is_file():
            raise FileNotFoundError(f"{stem}.json missing: run shard {i}/{count} first")
        meta = json.loads(stem.with_suffix(".json").read_text())
        if meta["corpus"] != corpus.fingerprint():
            raise ValueError(f"{stem}.json was encoded from a different corpus")
        if meta["lo"] != expected_lo:
            raise ValueError(f"{stem}.json starts at {meta['lo']}, expected {expected_lo}")
        models.add(meta["model"])
        parts.append(np.load(stem.with_suffix(".npy")))
        expected_lo = meta["hi"]
    if expected_lo != len(corpus):
        raise ValueError(f"shards cover {expected_lo} of {len(corpus)} passages")
    if len(models) > 1:
        raise ValueError(f"shards were encoded by different models: {sorted(models)}")
    if model is not None and models != {model}:
        raise ValueError(
            f"shards were encoded by model {sorted(models)[0]}, not by this command's model {model} "
            "(pass the same --model, --passage-max-length and --int8 as `encode`)"
        )
    return np.concatenate(parts)
