"""The app's configuration: command-line arguments and environment variables -> `AppConfig`.

Precedence: a command-line flag, then its environment variable, then the default.

| flag | env | meaning |
|---|---|---|
| `--data DIR` | `ROCKETQA_DATA` | any data the engine reads (BEIR dir, SQuAD json, `hf:NAME`) |
| `--run DIR` | `ROCKETQA_RUN` | a pipeline run directory (trained models + decision files) |
| `--model M` | `ROCKETQA_MODEL` | dual-encoder directory or hub id (default: the packaged MiniLM) |
| `--cross-encoder M` | `ROCKETQA_CROSS_ENCODER` | cross-encoder directory or hub id |
| `--db PATH` | `ROCKETQA_DB` | annotation database (default: `annotations.config.resolve_db_path`) |
| `--cache DIR` | `ROCKETQA_CACHE` | embedding/index cache root |
| `--int8-cross-encoder` | `ROCKETQA_INT8_CROSS_ENCODER=1` | serve the cross-encoder as int8 (faster on CPU; measured cost in docs/BENCHMARKS.md) |
| `--onnx-cross-encoder` | `ROCKETQA_ONNX_CROSS_ENCODER=1` | serve the fp32 cross-encoder through ONNX Runtime: the same probabilities, faster on CPU (docs/BENCHMARKS.md) |
| `--rerank-weight W` | `ROCKETQA_RERANK_WEIGHT` | re-ranked order: cross-encoder logit + W x dense score (default 0: the cross-encoder alone) |
| `--rerank-bm25-weight V` | `ROCKETQA_RERANK_BM25_WEIGHT` | ... + V x BM25 score (default 0). Choose W and V for your models with `python -m engine evaluate --rerank-weight-from-dev dev --rerank-bm25` (README) |
| `--rerank-shares FILE` | `ROCKETQA_RERANK_SHARES` | take W and V from the JSON an `evaluate --output` or `rerank-mix --output` wrote (its config's `rerank_weight`, `rerank_bm25_weight`): the shares chosen or fitted on dev for those models, without copying numbers; exclusive with the two weights above; the app says so when the file names other models than it serves |
| `--int8-backend B` | `ROCKETQA_INT8_BACKEND` | how the int8 cross-encoder runs: `onnx` (ONNX Runtime), `torch` (PyTorch dynamic), `auto` (default: ONNX Runtime when installed, measured faster and closer to fp32 for re-ranking; else torch) |
| `--host`, `--port` | `GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT` | where the server listens |
| | `SPACE_ID` | set by Hugging Face Spaces: enables login and the hub default data |

With no data configured the app serves the embedded sample (`demo/sample_data`), which needs no
network. On a Space that can reach the hub (`SPACE_ID` set, `HF_HUB_OFFLINE` unset) the default
is the public SQuAD dataset (`hf:squad`) instead; if that fails to load the sample is used and
the app says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

INT8_BACKENDS = ("auto", "onnx", "torch")

SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"
HUB_DEFAULT_DATA = "hf:squad"
MAX_K = 20  # result slots in the Ask tab


@dataclass(frozen=True)
class AppConfig:
    data: str = ""  # "" = embedded sample (or the hub default on a Space)
    run: str = ""  # pipeline run directory; "" = none
    model: str = ""  # dual-encoder; "" = the run's latest model, else the packaged MiniLM
    cross_encoder: str = ""  # "" = the run's step-2 model, else the packaged MiniLM (untrained head)
    db: str = ""  # "" = annotations.config.resolve_db_path()
    cache: str = ""  # "" = engine.cache.default_cache_root()
    host: str = "127.0.0.1"
    port: int = 7860
    space_id: str = ""  # Hugging Face Space id when running on a Space
    hub_access: bool = False  # the Hugging Face hub is expected to be reachable
    default_k: int = 5
    # background cross-encoder training offered when none is trained: a short run on the train split
    ce_base_model: str = ""  # model the background training starts from; "" = the packaged MiniLM
    ce_train_steps: int = 60  # optimisation steps (batch 16): ~2 minutes on a 2-core CPU for the sample
    # the pipeline's cpu recipe (docs/PIPELINE.md): per positive one negative from the dense top-k
    # (passages holding an answer string skipped) and one random negative, lr 1e-4
    ce_train_negatives: int = 1  # negatives per question, sampled from the dense top-k
    ce_train_random_negatives: int = 1  # negatives per question drawn from the whole corpus
    ce_train_depth: int = 20  # dense top-k the negatives are sampled from
    ce_train_learning_rate: float = 1e-4
    highlight_min_prob: float = 0.5  # a sentence is highlighted as answer-bearing at or above this
    # score with an int8 copy of the cross-encoder (engine.quantize): ~1.5x the pairs/s on a 2-core
    # CPU; the trained fp32 model is what gets saved
    int8_cross_encoder: bool = False
    int8_backend: str = "auto"  # engine.quantize.QuantizeConfig.backend of the int8 cross-encoder
    # score with the fp32 cross-encoder exported to ONNX Runtime (engine.quantize.onnx_cross_encoder):
    # the same logits to float rounding, faster on CPU; exclusive with int8_cross_encoder
    onnx_cross_encoder: bool = False
    # re-ranked order: logit + rerank_weight * dense score + rerank_bm25_weight * BM25 score
    # (engine.fusion.rerank_scores); weights belong to one pair of models, chosen on dev
    rerank_weight: float = 0.0
    rerank_bm25_weight: float = 0.0
    # where the weights came from: an evaluate / rerank-mix output ("" = flags / env / default), and the
    # models and first stage it names (compared with the served ones at start-up)
    rerank_shares_file: str = ""
    rerank_shares_models: tuple[tuple[str, str], ...] = ()

    @property
    def on_space(self) -> bool:
        return bool(self.space_id)

    def resolved_data(self) -> str:
        """The data the app loads: configured, else the hub default on a Space, else the sample."""
        if self.data:
            return self.data
        if self.on_space and self.hub_access:
            return HUB_DEFAULT_DATA
        return str(SAMPLE_DATA)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="app.py", description="RocketQA workbench: ask, inspect hard negatives, annotate, audit."
    )
    p.add_argument("--data", help="data directory or file the engine reads, or hf:NAME (env ROCKETQA_DATA)")
    p.add_argument("--run", help="pipeline run directory (env ROCKETQA_RUN)")
    p.add_argument("--model", help="dual-encoder directory or hub id (env ROCKETQA_MODEL)")
    p.add_argument(
        "--cross-encoder", dest="cross_encoder", help="cross-encoder directory or hub id (env ROCKETQA_CROSS_ENCODER)"
    )
    p.add_argument("--db", help="annotation database path (env ROCKETQA_DB)")
    p.add_argument("--cache", help="embedding cache directory (env ROCKETQA_CACHE)")
    p.add_argument("--host", help="address to listen on (env GRADIO_SERVER_NAME, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (env GRADIO_SERVER_PORT, default 7860)")
    p.add_argument(
        "--int8-cross-encoder",
        dest="int8_cross_encoder",
        action="store_true",
        default=None,
        help="score with an int8 copy of the cross-encoder: faster on CPU, slightly different "
        "probabilities (env ROCKETQA_INT8_CROSS_ENCODER=1)",
    )
    p.add_argument(
        "--onnx-cross-encoder",
        dest="onnx_cross_encoder",
        action="store_true",
        default=None,
        help="score with the fp32 cross-encoder run by ONNX Runtime: the same probabilities, faster on CPU "
        "(env ROCKETQA_ONNX_CROSS_ENCODER=1)",
    )
    p.add_argument(
        "--int8-backend",
        dest="int8_backend",
        choices=INT8_BACKENDS,
        help="how the int8 cross-encoder runs: onnx (ONNX Runtime), torch (PyTorch dynamic quantisation), "
        "auto = onnx when installed, measured faster for re-ranking (env ROCKETQA_INT8_BACKEND, default auto)",
    )
    p.add_argument(
        "--rerank-weight",
        dest="rerank_weight",
        help="re-ranked order: cross-encoder logit + this x dense score (env ROCKETQA_RERANK_WEIGHT, default 0)",
    )
    p.add_argument(
        "--rerank-bm25-weight",
        dest="rerank_bm25_weight",
        help="... + this x BM25 score (env ROCKETQA_RERANK_BM25_WEIGHT, default 0)",
    )
    p.add_argument(
        "--rerank-shares",
        dest="rerank_shares",
        metavar="FILE",
        help="take both weights from an `evaluate --output` / `rerank-mix --output` JSON (the shares chosen on "
        "dev; env ROCKETQA_RERANK_SHARES); exclusive with --rerank-weight / --rerank-bm25-weight",
    )
    return p


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    """Parse `argv` (default: none) over `env` (default: os.environ)."""
    env = os.environ if env is None else env
    args = parser().parse_args(list(argv or []))

    def pick(flag: object, var: str, default: str = "") -> str:
        return str(flag) if flag not in (None, "") else env.get(var, default)

    space_id = env.get("SPACE_ID", "")
    offline = env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    port = pick(args.port, "GRADIO_SERVER_PORT", "7860")
    try:
        port_number = int(port)
    except ValueError:
        raise SystemExit(f"port must be a number, got {port!r}") from None
    int8 = bool(args.int8_cross_encoder) or _env_flag(env, "ROCKETQA_INT8_CROSS_ENCODER")
    onnx = bool(args.onnx_cross_encoder) or _env_flag(env, "ROCKETQA_ONNX_CROSS_ENCODER")
    if int8 and onnx:
        raise SystemExit(
            "--int8-cross-encoder and --onnx-cross-encoder exclude each other: int8 already runs its own way "
            "(--int8-backend onnx for ONNX Runtime int8)"
        )
    return AppConfig(
        data=pick(args.data, "ROCKETQA_DATA"),
        run=pick(args.run, "ROCKETQA_RUN"),
        model=pick(args.model, "ROCKETQA_MODEL"),
        cross_encoder=pick(args.cross_encoder, "ROCKETQA_CROSS_ENCODER"),
        db=pick(args.db, "ROCKETQA_DB"),
        cache=pick(args.cache, "ROCKETQA_CACHE"),
        host=pick(args.host, "GRADIO_SERVER_NAME", "127.0.0.1"),
        port=port_number,
        space_id=space_id,
        hub_access=bool(space_id) and not offline,
        int8_cross_encoder=int8,
        onnx_cross_encoder=onnx,
        int8_backend=_int8_backend(pick(args.int8_backend, "ROCKETQA_INT8_BACKEND", "auto")),
        **_rerank_weights(args, env, pick),
    )


def _rerank_weights(args: argparse.Namespace, env: Mapping[str, str], pick) -> dict:
    """The re-ranking weights from `--rerank-shares FILE`, else from the two weight flags / variables."""
    shares = pick(args.rerank_shares, "ROCKETQA_RERANK_SHARES")
    weight = pick(args.rerank_weight, "ROCKETQA_RERANK_WEIGHT")
    bm25_weight = pick(args.rerank_bm25_weight, "ROCKETQA_RERANK_BM25_WEIGHT")
    if not shares:
        return {
            "rerank_weight": _weight("ROCKETQA_RERANK_WEIGHT", weight or "0"),
            "rerank_bm25_weight": _weight("ROCKETQA_RERANK_BM25_WEIGHT", bm25_weight or "0"),
        }
    if weight or bm25_weight:
        raise SystemExit(
            "--rerank-shares (ROCKETQA_RERANK_SHARES) gives both re-ranking weights: drop --rerank-weight / "
            "--rerank-bm25-weight (ROCKETQA_RERANK_WEIGHT / ROCKETQA_RERANK_BM25_WEIGHT)"
        )
    return read_rerank_shares(shares)


def read_rerank_shares(path: str) -> dict:
    """The weights (and the models they were chosen for) of an `evaluate` / `rerank-mix` output file,
    as AppConfig fields; anything else is one clear SystemExit."""
    where = f"--rerank-shares {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SystemExit(f"{where}: cannot read it ({e.strerror or e})") from None
    try:
        out = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"{where}: not JSON ({e})") from None
    config = out.get("config") if isinstance(out, dict) else None
    if not isinstance(config, dict) or "rerank_weight" not in config:
        raise SystemExit(f"{where}: not an `evaluate --output` or `rerank-mix --output` file (no config.rerank_weight)")
    weights = {}
    for key, var in (("rerank_weight", "dense"), ("rerank_bm25_weight", "BM25")):
        value = config.get(key)
        if value is None:
            raise SystemExit(f"{where}: it holds no {var} share (was it written with --reranker and --rerank-depth?)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise SystemExit(f"{where}: its {var} share must be a number >= 0, got {value!r}")
        weights[key] = float(value)
    models = tuple((key, str(config[key])) for key in ("model", "reranker", "retriever") if config.get(key) is not None)
    return weights | {"rerank_shares_file": path, "rerank_shares_models": models}


def _weight(var: str, value: str) -> float:
    try:
        w = float(value)
    except ValueError:
        w = float("nan")
    if not math.isfinite(w) or w < 0:
        raise SystemExit(f"{var} (or its flag) must be a number >= 0, got {value!r}")
    return w


def _int8_backend(value: str) -> str:
    value = value.strip().lower()
    if value not in INT8_BACKENDS:
        raise SystemExit(f"ROCKETQA_INT8_BACKEND must be one of {', '.join(INT8_BACKENDS)}, got {value!r}")
    return value


def _env_flag(env: Mapping[str, str], var: str) -> bool:
    value = env.get(var, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise SystemExit(f"{var} must be 1/true/yes or 0/false/no, got {env.get(var)!r}")
