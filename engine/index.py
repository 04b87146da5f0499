"""FAISS inner-product index over passage vectors, with string ids, save/load and incremental add.

`DenseIndex` keeps the FAISS index and the list of passage ids whose position is the FAISS row
id. Exact search (`IndexFlatIP`) is the default; any FAISS factory string gives an approximate
index for large corpora ("HNSW32,Flat", "IVF4096,PQ64", ...), built with the inner-product
metric. Indexes that need training (IVF, PQ) are trained on the first `add`.

On disk (`save(dir)`): `index.faiss` (faiss.write_index), `ids.json` (list of passage ids,
row order) and `index.json` (factory, dim, count). `load` checks that the three agree and
raises `IndexLoadError` naming the directory when they do not (a truncated or foreign file).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)


class IndexLoadError(RuntimeError):
    """An index directory is missing, corrupt, or inconsistent."""


@dataclass(frozen=True)
class SearchResult:
    scores: np.ndarray  # (n_queries, k) float32, best first; -inf where fewer than k hits
    ids: list[list[str]]  # n_queries lists of up to k passage ids
    rows: np.ndarray  # (n_queries, k) int64 row numbers, -1 where missing


class DenseIndex:
    def __init__(self, dim: int, factory: str = "Flat", hnsw_ef_search: int = 128, nprobe: int = 16):
        self.dim = dim
        self.factory = factory
        self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        self.ids: list[str] = []
        self._rows: dict[str, int] | None = None  # passage id -> row, for `stored_vectors`; reset by `add`
        self.hnsw_ef_search = hnsw_ef_search
        self.nprobe = nprobe
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = self.hnsw_ef_search
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            ivf.nprobe = self.nprobe

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: list[str], factory: str = "Flat", **kwargs) -> DenseIndex:
        index = cls(vectors.shape[1], factory, **kwargs)
        index.add(vectors, ids)
        return index

    def add(self, vectors: np.ndarray, ids: list[str]) -> None:
        """Append vectors (n, dim) with their passage ids."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if not self.index.is_trained:
            log.info("training %s on %d vectors", self.factory, len(vectors))
            self.index.train(vectors)
        self.index.add(vectors)
        self.ids.extend(ids)
        self._rows = None

    def stored_vectors(self, ids: list[str]) -> np.ndarray | None:
        """The vectors (n, dim) stored for these passage ids, exactly as they were added, when the
        index keeps them whole ("Flat", "HNSW..,Flat", "IVF..,Flat"); None when it keeps only codes
        (PQ, SQ, "IVF..,PQ..") or lacks one of the ids: then the caller encodes the passages."""
        whole = self.factory == "Flat" or (self.factory.startswith(("HNSW", "IVF")) and self.factory.endswith(",Flat"))
        if not whole:
            return None
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.make_direct_map()  # row -> (list, offset), which `reconstruct` needs; 8 bytes a vector
        if self._rows is None:  # built on first use, again after an `add`
            self._rows = {pid: i for i, pid in enumerate(self.ids)}
        rows_by_id = self._rows
        rows = [rows_by_id.get(pid) for pid in ids]
        if any(r is None for r in rows):
            return None
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for j, r in enumerate(rows):
            out[j] = self.index.reconstruct(r)
        return out

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if len(self.ids) == 0:
            raise ValueError("the index is empty")
        k_eff = min(k, len(self.ids))
        scores, rows = self.index.search(queries, k_eff)
        ids = [[self.ids[r] for r in row if r >= 0] for row in rows]
        return SearchResult(scores=scores, ids=ids, rows=rows)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(d / "index.faiss.tmp"))
        (d / "ids.json.tmp").write_text(json.dumps(self.ids))
        meta = {"factory": self.factory, "dim": self.dim, "count": len(self.ids)}
        (d / "index.json.tmp").write_text(json.dumps(meta))
        for name in ("index.faiss", "ids.json", "index.json"):  # replace only when all three are written
            (d / f"{name}.tmp").replace(d / name)
        return d

    @classmethod
    def load(cls, directory: str | Path, **kwargs) -> DenseIndex:
        d = Path(directory)
        try:
            meta = json.loads((d / "index.json").read_text())
            ids = json.loads((d / "ids.json").read_text())
            raw = faiss.read_index(str(d / "index.faiss"))
        except FileNotFoundError as e:
            raise IndexLoadError(f"{d}: index incomplete ({Path(e.filename).name} missing)") from None
        except (json.JSONDecodeError, RuntimeError) as e:
            raise IndexLoadError(f"{d}: index is corrupt ({str(e).splitlines()[0][:200]})") from None
        if raw.ntotal != len(ids) or meta.get("count") != len(ids) or raw.d != meta.get("dim"):
            raise IndexLoadError(f"{d}: index is inconsistent ({raw.ntotal} vectors, {len(ids)} ids, metadata {meta})")
        index = cls.__new__(cls)
        index.dim, index.factory, index.index, index.ids = raw.d, meta["factory"], raw, ids
        index._rows = None
        index.hnsw_ef_search = kwargs.get("hnsw_ef_search", 128)
        index.nprobe = kwargs.get("nprobe", 16)
        index._apply_search_params()
        return index
