"""The int8 inference path: a quantised COPY, close to fp32, and the original left untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
from engine.data import Passage
from engine.dual_encoder import DualEncoder, DualEncoderConfig
from engine.quantize import (
    QuantizeConfig,
    linear_names,
    onnx_cross_encoder,
    onnx_dual_encoder,
    quantize_cross_encoder,
    quantize_dual_encoder,
)

TEXTS = [
    "Worker honeybees perform a waggle dance to show where flowers are.",
    "The Fresnel lens let lighthouses throw light much farther.",
    "Mount Vesuvius buried Pompeii and Herculaneum in the year 79.",
]


@pytest.fixture(scope="module")
def dual(tiny_model_dir) -> DualEncoder:
    return DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))


def _is_dynamic_int8(module: torch.nn.Module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")


def test_quantized_dual_encoder_is_a_close_copy(dual):
    before = dual.encode_queries(TEXTS)
    q = quantize_dual_encoder(dual)
    after = dual.encode_queries(TEXTS)
    np.testing.assert_array_equal(before, after)  # the original is untouched
    assert not any(_is_dynamic_int8(m) for m in dual.query_encoder.model.modules())
    assert q.passage_encoder.model is q.query_encoder.model  # shared towers stay shared
    assert (q.query_encoder.max_length, q.passage_encoder.max_length) == (32, 128)
    qv = q.encode_queries(TEXTS)
    cos = (qv * before).sum(1)
    assert cos.min() > 0.9 and not np.array_equal(qv, before)
    # retrieval order survives: each text is nearest to itself
    pv = q.encode_passages([Passage(str(i), t) for i, t in enumerate(TEXTS)])
    assert list((qv @ pv.T).argmax(1)) == [0, 1, 2]


def test_config_selects_layers(dual):
    model = dual.query_encoder.model
    all_names = linear_names(model, QuantizeConfig())
    no_ffn = linear_names(model, QuantizeConfig(skip_ffn_output=True))
    assert "encoder.layer.0.output.dense" in all_names and "encoder.layer.0.output.dense" not in no_ffn
    assert "encoder.layer.0.attention.output.dense" in no_ffn  # the attention output is not the FFN's
    assert not any(n.startswith("pooler") for n in all_names)
    q = quantize_dual_encoder(dual, QuantizeConfig(skip_ffn_output=True))
    mods = dict(q.query_encoder.model.named_modules())
    assert _is_dynamic_int8(mods["encoder.layer.0.intermediate.dense"])
    assert type(mods["encoder.layer.0.output.dense"]) is torch.nn.Linear


def test_quantized_cross_encoder_keeps_config_and_ranks_alike(tiny_model_dir):
    torch.manual_seed(0)
    ce = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, scale=2.0, bias=-1.0))
    q = quantize_cross_encoder(ce)
    assert q.config == ce.config and q.tokenizer is ce.tokenizer
    passages = [Passage(str(i), t) for i, t in enumerate(TEXTS)]
    a = ce.logits(["Which town did Vesuvius bury?"] * 3, passages)
    b = q.logits(["Which town did Vesuvius bury?"] * 3, passages)
    assert np.abs(a - b).max() < 0.25 * (np.abs(a).max() + 1e-3) + 0.05


# --- the ONNX Runtime backend ----------------------------------------------------------------

onnx_int8 = pytest.importorskip("engine.onnx_int8")
needs_onnx = pytest.mark.skipif(not onnx_int8.available(), reason="onnxruntime / onnx are not installed")


@needs_onnx
def test_onnx_fp32_export_reproduces_the_torch_model(dual):
    from engine.encoder import TextEncoder

    enc = dual.query_encoder
    module = onnx_int8.onnx_module(enc.model, enc.tokenizer, "last_hidden_state", int8=False)
    assert module.quantized_nodes == 0
    copy = TextEncoder(module, enc.tokenizer, enc.pooling, enc.normalize, enc.max_length)
    # batches of different sizes and lengths go through the dynamic axes
    for texts in (TEXTS, TEXTS[:1], [TEXTS[0] * 3, "short"]):
        np.testing.assert_allclose(copy.encode(texts), enc.encode(texts), atol=1e-5)


@needs_onnx
def test_onnx_fp32_copies_give_the_same_outputs(dual, tiny_model_dir):
    passages = [Passage(str(i), t) for i, t in enumerate(TEXTS)]
    o = onnx_dual_encoder(dual)
    assert isinstance(o.passage_encoder.model, onnx_int8.OnnxModule) and o.passage_encoder.model.quantized_nodes == 0
    np.testing.assert_allclose(o.encode_queries(TEXTS), dual.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(o.encode_passages(passages), dual.encode_passages(passages), atol=1e-5)
    assert o.fingerprint() == dual.fingerprint()  # same vectors: the embedding cache is shared with fp32
    torch.manual_seed(0)
    ce = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, scale=2.0, bias=-1.0))
    oc = onnx_cross_encoder(ce)
    assert isinstance(oc.model, onnx_int8.OnnxModule) and oc.config == ce.config
    questions = ["Which town did Vesuvius bury?", "lens", "what dance do bees do " * 4]
    np.testing.assert_allclose(oc.logits(questions, passages), ce.logits(questions, passages), atol=1e-5)


@needs_onnx
def test_onnx_int8_dual_encoder_is_a_close_copy(dual):
    before = dual.encode_queries(TEXTS)
    q = quantize_dual_encoder(dual, QuantizeConfig(backend="onnx"))
    np.testing.assert_array_equal(dual.encode_queries(TEXTS), before)  # the original is untouched
    assert isinstance(q.query_encoder.model, onnx_int8.OnnxModule)
    assert q.passage_encoder.model is q.query_encoder.model
    qv = q.encode_queries(TEXTS)
    cos = (qv * before).sum(1)
    assert cos.min() > 0.95 and not np.array_equal(qv, before)
    pv = q.encode_passages([Passage(str(i), t) for i, t in enumerate(TEXTS)])
    assert list((qv @ pv.T).argmax(1)) == [0, 1, 2]
    # the 1-layer model: query/key/value, attention output, FFN in and out = 6 weight MatMuls
    assert q.query_encoder.model.quantized_nodes == 6
    skip = quantize_dual_encoder(dual, QuantizeConfig(backend="onnx", skip_ffn_output=True))
    assert skip.query_encoder.model.quantized_nodes == 5
    # inference only: it stays in eval mode and refuses to be saved as a model directory
    q.query_encoder.train()
    assert not q.query_encoder.model.training
    with pytest.raises(RuntimeError, match="cannot be saved"):
        q.query_encoder.save("/nonexistent/never-written")


@needs_onnx
def test_onnx_int8_cross_encoder_ranks_alike(tiny_model_dir):
    torch.manual_seed(0)
    ce = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, scale=2.0, bias=-1.0))
    q = quantize_cross_encoder(ce, QuantizeConfig(backend="onnx"))
    assert isinstance(q.model, onnx_int8.OnnxModule) and q.config == ce.config
    passages = [Passage(str(i), t) for i, t in enumerate(TEXTS)]
    a = ce.logits(["Which town did Vesuvius bury?"] * 3, passages)
    b = q.logits(["Which town did Vesuvius bury?"] * 3, passages)
    assert np.abs(a - b).max() < 0.25 * (np.abs(a).max() + 1e-3) + 0.05
    np.testing.assert_allclose(q.score("Which town did Vesuvius bury?", passages), ce.probability(b), atol=1e-6)


def test_unknown_backend_is_refused(dual):
    with pytest.raises(ValueError, match="int8 backend must be one of"):
        quantize_dual_encoder(dual, QuantizeConfig(backend="tensorrt"))
    auto = QuantizeConfig(backend="auto")
    assert auto.resolved_backend("dual") == ("onnx" if onnx_int8.available() else "torch")
    # measured faster for re-ranking, and closer to fp32, once batches are capped by padded tokens
    assert auto.resolved_backend("cross") == ("onnx" if onnx_int8.available() else "torch")
    assert QuantizeConfig(backend="onnx").resolved_backend("cross") == "onnx"
    with pytest.raises(ValueError, match="model must be one of"):
        auto.resolved_backend("reader")


def test_int8_copies_have_their_own_cache_fingerprint(dual):
    # int8 weights are packed / live in an ONNX Runtime session: the key derives from the source model
    # and the quantisation, so int8 embeddings never share a cache entry with fp32 or another backend's
    torch_q = quantize_dual_encoder(dual, QuantizeConfig(backend="torch"))
    keys = {dual.fingerprint(), torch_q.fingerprint()}
    assert quantize_dual_encoder(dual, QuantizeConfig(backend="torch")).fingerprint() == torch_q.fingerprint()
    assert quantize_dual_encoder(dual, QuantizeConfig(backend="torch", skip_ffn_output=True)).fingerprint() not in keys
    if onnx_int8.available():
        assert quantize_dual_encoder(dual, QuantizeConfig(backend="onnx")).fingerprint() not in keys
