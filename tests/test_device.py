"""Where models run: $ROCKETQA_DEVICE, else a GPU when there is one, else the CPU.

The tests marked `gpu` need a CUDA device (`pytest -m gpu`); CI has none, so they run on a lent GPU
machine (benchmarks/gpu_check.sh) and are deselected elsewhere.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
from engine.data import Corpus
from engine.dual_encoder import DualEncoder, DualEncoderConfig
from engine.encoder import DEVICE_ENV, TextEncoder, default_device, resolve_device
from engine.train_cross import CrossTrainConfig, train_cross_encoder
from engine.train_dual import DualTrainConfig, train_dual_encoder
from tests.toy_dual import FACTS, contrastive_step, toy

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_environment_variable_picks_the_device(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert default_device() == torch.device("cpu")
    monkeypatch.delenv(DEVICE_ENV)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected


@pytest.mark.parametrize("name", ["banana", "tpu", "mps:0"])
def test_an_unknown_device_is_a_clear_error(monkeypatch, name):
    monkeypatch.setenv(DEVICE_ENV, name)
    with pytest.raises(ValueError, match="device"):
        default_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_with_the_reason(monkeypatch, tiny_model_dir):
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setenv(DEVICE_ENV, "cuda:0")
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))


def test_models_are_placed_where_asked(monkeypatch, tiny_model_dir):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    de = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    ce = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    assert de.query_encoder.device.type == de.passage_encoder.device.type == ce.device.type == "cpu"
    te = TextEncoder.from_pretrained(tiny_model_dir, device="cpu")
    assert te.device == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        TextEncoder.from_pretrained(tiny_model_dir, device="banana")


# --- on a CUDA device ----------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_gpu_encodes_and_scores_like_the_cpu(tiny_model_dir):
    _, corpus = toy(6)
    texts = [p.text for p in corpus]
    cpu = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    cpu.to("cpu")
    gpu = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    assert gpu.query_encoder.device.type == "cuda"
    a, b = cpu.encode_passages(list(corpus)), gpu.encode_passages(list(corpus))
    assert np.abs(a - b).max() < 1e-4 and np.isfinite(b).all()
    assert np.abs(cpu.encode_queries(texts) - gpu.encode_queries(texts)).max() < 1e-4
    ce_gpu = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    assert ce_gpu.device.type == "cuda"
    ce_cpu = copy.deepcopy(ce_gpu).to("cpu")  # the same (untrained, randomly initialised) head
    questions = [q for *_, q in FACTS[:6]]
    x, y = ce_cpu.logits(questions, list(corpus)), ce_gpu.logits(questions, list(corpus))
    assert np.abs(x - y).max() < 1e-3 and np.isfinite(y).all()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("mixed_precision", [False, True])
def test_dual_encoder_trains_on_the_gpu(tiny_model_dir, mixed_precision):
    examples, corpus = toy(6)
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    cfg = DualTrainConfig(
        epochs=6, batch_size=6, learning_rate=2e-4, temperature=0.05, seed=1, mixed_precision=mixed_precision
    )
    result = train_dual_encoder(model, examples, corpus, cfg)
    assert all(np.isfinite(result.losses))
    assert np.mean(result.losses[-2:]) < np.mean(result.losses[:2])
    assert all(p.device.type == "cuda" for p in model.parameters())


def _gpu_step(model: DualEncoder, corpus: Corpus, chunk: int, seed: int) -> tuple[float, dict]:
    return contrastive_step(model, toy(6)[0], corpus, chunk, seed)


def _same_step(a: tuple[float, dict], b: tuple[float, dict], rel: float) -> bool:
    (la, ga), (lb, gb) = a, b
    assert set(ga) == set(gb) and len(ga) > 10
    scale = max(float(g.abs().max()) for g in ga.values())
    return abs(la - lb) <= 1e-5 * abs(la) and max(float((ga[n] - gb[n]).abs().max()) for n in ga) <= rel * scale


@pytest.mark.gpu
@needs_cuda
def test_grad_cache_on_the_gpu_equals_the_plain_step(tiny_model_dir, tmp_path):
    """On CUDA: GradCache's second pass replays the first pass's dropout masks (one chunk == plain
    step, dropout on), and chunks give the plain step's gradients (dropout off)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    _, corpus = toy(6)
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    model.train()
    assert model.query_encoder.device.type == "cuda"
    plain = _gpu_step(model, corpus, 0, 7)
    assert _same_step(plain, _gpu_step(model, corpus, 64, 7), 1e-4)
    assert not _same_step(plain, _gpu_step(model, corpus, 0, 8), 1e-3)  # other masks: the check can fail

    cfg = AutoConfig.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_model_dir, config=cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path)
    nodrop = DualEncoder.build(DualEncoderConfig(model=str(tmp_path)))
    nodrop.train()
    assert _same_step(_gpu_step(nodrop, corpus, 0, 7), _gpu_step(nodrop, corpus, 2, 7), 1e-4)


@pytest.mark.gpu
@needs_cuda
def test_cross_encoder_trains_on_the_gpu_with_bf16(tiny_model_dir):
    examples, corpus = toy(6)
    model = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, max_length=64))
    cfg = CrossTrainConfig(
        epochs=8, batch_size=6, learning_rate=2e-4, negatives_per_positive=1, calibration_fraction=0.0,
        mixed_precision=True,
    )  # fmt: skip
    result = train_cross_encoder(model, examples, corpus, cfg)
    assert all(np.isfinite(result.losses))
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3])
    assert model.device.type == "cuda" and model.is_trained
