"""Optional int8 inference path: dynamic quantisation of the Linear layers of a copy of a model.

`quantize_dual_encoder(model)` / `quantize_cross_encoder(model)` return a NEW model whose
`nn.Linear` layers run as int8 matrix products (PyTorch's dynamic quantisation: weights quantised
once, activations quantised per batch at run time; fbgemm kernels on x86). The original model is
left untouched. The copy is for inference only: it cannot be trained or saved as a Hugging Face
directory (save the fp32 model instead and quantise after loading).

Measured by `python -m engine bench` (docs/BENCHMARKS.md), not assumed: on the pipeline's trained
M_D2 (2-core AVX-512 Xeon, SQuAD test split) this PyTorch path gives 1.44x the passages/s of fp32
for a 0.79-point MRR@10 loss (cosine to fp32 >= 0.964), and the trained cross-encoder 1.43x the
pairs/s with no re-ranking loss (-0.09 points). Per-tensor scales are noticeably worse (cosine down
to ~0.88) because the FFN output projection (after GELU) has outlier channels;
`QuantizeConfig.skip_ffn_output=True` keeps those six layers in fp32 (closer, slower).

`onnx_dual_encoder` / `onnx_cross_encoder` run the fp32 model itself through ONNX Runtime (same outputs,
faster on CPU; no quantisation). `QuantizeConfig(backend="onnx")` exports the model to ONNX and runs it with ONNX Runtime, its MatMul
weights in int8 (`engine.onnx_int8`); `backend="auto"` picks per model what measured best
(`AUTO_BACKEND`: ONNX Runtime for both today).
Not covered: static quantisation, GPUs (use bf16 there).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from dataclasses import dataclass

import torch

from engine.cross_encoder import CrossEncoder
from engine.dual_encoder import DualEncoder
from engine.encoder import TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeConfig:
    per_channel: bool = True  # one scale per output channel of each weight (much closer to fp32)
    skip_ffn_output: bool = False  # keep the FFN output projections (after GELU, outlier-prone) in fp32
    skip_pooler: bool = True  # BERT's pooler is unused by mean pooling; leave it alone
    # "torch": PyTorch dynamic quantisation (fbgemm); "onnx": the model exported to ONNX and run by
    # ONNX Runtime with its MatMul weights in int8 (engine.onnx_int8); "auto": per model, AUTO_BACKEND
    backend: str = "torch"

    def resolved_backend(self, model: str) -> str:
        """The backend this config runs `model` ("dual" or "cross") with."""
        if self.backend not in BACKENDS:
            raise ValueError(f"int8 backend must be one of {BACKENDS}, got {self.backend!r}")
        if model not in AUTO_BACKEND:
            raise ValueError(f"model must be one of {sorted(AUTO_BACKEND)}, got {model!r}")
        if self.backend != "auto":
            return self.backend
        from engine.onnx_int8 import available

        return AUTO_BACKEND[model] if available() else "torch"


BACKENDS = ("torch", "onnx", "auto")
# what "auto" picks, from `python -m engine bench --int8-backend torch|onnx` on the trained models (2 cores,
# docs/BENCHMARKS.md). Dual-encoder (Intel Xeon run): ONNX Runtime 1.90x fp32 for a 0.20-point MRR@10 loss,
# PyTorch 1.44x for 0.79. Cross-encoder (AMD EPYC run, batches capped at 1,024 padded tokens): ONNX Runtime
# 4.31x the pairs/s of fp32 sentence-transformers, rank correlation to fp32 0.975, query latency p50 135 ms
# and re-ranking MRR@10 +0.46; PyTorch 3.66x, 0.912, 166 ms, -0.28. (With one padded batch of 20 pairs
# PyTorch re-ranked faster on the Xeon: 363 vs 468 ms.) Without onnxruntime, "auto" is PyTorch.
AUTO_BACKEND = {"dual": "onnx", "cross": "onnx"}


def linear_names(model: torch.nn.Module, config: QuantizeConfig) -> list[str]:
    """Names of the nn.Linear modules that `config` quantises."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if config.skip_pooler and name.split(".")[0] == "pooler":
            continue
        is_ffn_out = name.endswith("output.dense") and ".attention." not in name
        if config.skip_ffn_output and is_ffn_out:
            continue
        names.append(name)
    return names


def quantize_module(model: torch.nn.Module, config: QuantizeConfig | None = None) -> torch.nn.Module:
    """A deep copy of `model` with the selected Linear layers as dynamic int8 (eval mode)."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    config = config or QuantizeConfig()
    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    names = linear_names(model, config)
    if not names:
        raise ValueError("the model has no Linear layer to quantise")
    if "fbgemm" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "fbgemm"
    clone = copy.deepcopy(model).cpu().eval()  # torch's dynamic int8 kernels run on the CPU only
    with warnings.catch_warnings():  # torch.ao's deprecation notice (the API still works in 2.x)
        warnings.simplefilter("ignore")
        out = quantize_dynamic(clone, {n: qconfig for n in names}, dtype=torch.qint8)
    log.info(
        "quantised %d Linear layers to int8 (%s scales)",
        len(names),
        "per-channel" if config.per_channel else "per-tensor",
    )
    return out


def _with_model(encoder: TextEncoder, model: torch.nn.Module) -> TextEncoder:
    # a new TextEncoder (never copy.copy an nn.Module and reassign a child: the copies share `_modules`)
    return TextEncoder(model, encoder.tokenizer, encoder.pooling, encoder.normalize, encoder.max_length)


def _int8_module(module: torch.nn.Module, tokenizer, output: str, config: QuantizeConfig | None) -> torch.nn.Module:
    config = config or QuantizeConfig()
    if config.resolved_backend("dual" if output == "last_hidden_state" else "cross") == "torch":
        return quantize_module(module, config)
    from engine.onnx_int8 import onnx_module

    return onnx_module(
        module, tokenizer, output, int8=True, skip_ffn_output=config.skip_ffn_output, per_channel=config.per_channel
    )


def _dual_copy(model: DualEncoder, make) -> DualEncoder:
    """A DualEncoder whose tower models are `make(model, tokenizer)` of the source's (shared towers stay shared)."""
    q, p = model.query_encoder, model.passage_encoder
    q_model = make(q.model, q.tokenizer)
    p_model = q_model if p.model is q.model else make(p.model, p.tokenizer)
    return DualEncoder(_with_model(q, q_model), _with_model(p, p_model), model.config)


def onnx_dual_encoder(model: DualEncoder) -> DualEncoder:
    """A copy of a dual-encoder run by ONNX Runtime in fp32 (CPU, inference only).

    Its vectors equal the PyTorch model's to float rounding (tested to 1e-5), so it keeps the source's
    embedding-cache fingerprint. Measured by `python -m engine bench`, not assumed: see docs/BENCHMARKS.md.
    """
    from engine.onnx_int8 import onnx_module

    out = _dual_copy(model, lambda m, tok: onnx_module(m, tok, "last_hidden_state", int8=False))
    out.derived_fingerprint = model.fingerprint()
    return out


def onnx_cross_encoder(model: CrossEncoder) -> CrossEncoder:
    """A copy of a cross-encoder run by ONNX Runtime in fp32: the same logits to float rounding (CPU, inference only)."""
    from engine.onnx_int8 import onnx_module

    return CrossEncoder(onnx_module(model.model, model.tokenizer, "logits", int8=False), model.tokenizer, model.config)


def quantize_dual_encoder(model: DualEncoder, config: QuantizeConfig | None = None) -> DualEncoder:
    """An int8 copy of a dual-encoder (shared towers stay shared), with its own embedding-cache fingerprint."""
    config = config or QuantizeConfig()
    out = _dual_copy(model, lambda m, tok: _int8_module(m, tok, "last_hidden_state", config))
    variant = json.dumps(
        [config.resolved_backend("dual"), config.per_channel, config.skip_ffn_output, config.skip_pooler]
    )
    out.derived_fingerprint = hashlib.sha256(f"{model.fingerprint()} int8 {variant}".encode()).hexdigest()[:16]
    return out


def quantize_cross_encoder(model: CrossEncoder, config: QuantizeConfig | None = None) -> CrossEncoder:
    """An int8 copy of a cross-encoder (same tokenizer, calibration and trained flag)."""
    return CrossEncoder(_int8_module(model.model, model.tokenizer, "logits", config), model.tokenizer, model.config)
