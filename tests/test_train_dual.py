"""Dual-encoder training: GradCache == plain step, the loss goes down, bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.data import Corpus, DataError
from engine.dual_encoder import DualEncoder, DualEncoderConfig
from engine.examples import TrainExample
from engine.loss import contrastive_loss
from engine.train_dual import DualTrainConfig, TrainResult, default_temperature, train_dual_encoder
from tests.toy_dual import contrastive_step, toy


@pytest.fixture(scope="module")
def nodrop_dir(tiny_model_dir, tmp_path_factory) -> str:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    d = tmp_path_factory.mktemp("tiny-nodrop")
    cfg = AutoConfig.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_model_dir, config=cfg).save_pretrained(d)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(d)
    return str(d)


def _step(model: DualEncoder, corpus: Corpus, chunk: int, seed: int) -> tuple[float, dict]:
    return contrastive_step(model, toy()[0], corpus, chunk, seed)


def _assert_same_grads(a: dict, b: dict, rel: float) -> None:
    assert set(a) == set(b) and len(a) > 10
    scale = max(float(g.abs().max()) for g in a.values())
    worst = max(float((a[n] - b[n]).abs().max()) for n in a)
    assert worst <= rel * scale, f"max gradient difference {worst:.3g} vs largest gradient {scale:.3g}"


@pytest.mark.parametrize("chunk", [1, 3])
def test_grad_cache_equals_plain_step(nodrop_dir, chunk):
    _, corpus = toy()
    model = DualEncoder.build(DualEncoderConfig(model=nodrop_dir))
    model.train()
    loss_plain, plain = _step(model, corpus, 0, 0)
    loss_gc, cached = _step(model, corpus, chunk, 0)
    assert loss_gc == pytest.approx(loss_plain, rel=1e-6)
    _assert_same_grads(plain, cached, 1e-5)


def test_grad_cache_replays_dropout(tiny_model_dir):
    """With dropout on, the re-encoding must see the first pass's masks: one chunk == plain step."""
    _, corpus = toy()
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    model.train()
    assert model.query_encoder.model.config.hidden_dropout_prob > 0
    loss_plain, plain = _step(model, corpus, 0, 7)
    loss_gc, cached = _step(model, corpus, 64, 7)
    assert loss_gc == pytest.approx(loss_plain, rel=1e-6)
    _assert_same_grads(plain, cached, 1e-5)
    # different dropout masks do change the gradients: the check above is not vacuous
    _, other = _step(model, corpus, 0, 8)
    with pytest.raises(AssertionError):
        _assert_same_grads(plain, other, 1e-3)


def _eval_loss(model: DualEncoder, examples: list[TrainExample], corpus: Corpus, temperature: float) -> float:
    q = torch.from_numpy(model.encode_queries([e.question for e in examples]))
    p = torch.from_numpy(model.encode_passages(list(corpus)))
    target = torch.tensor([corpus.index_of(e.positives[0]) for e in examples])
    return float(contrastive_loss(q, p, target, temperature))


def test_training_lowers_the_loss_and_round_trips(tiny_model_dir, tmp_path):
    examples, corpus = toy()
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    assert default_temperature(model) == 0.05
    before = _eval_loss(model, examples, corpus, 0.05)
    fractions = []
    cfg = DualTrainConfig(epochs=4, batch_size=4, learning_rate=2e-4, temperature=0.05, seed=1)
    result = train_dual_encoder(model, examples, corpus, cfg, progress=lambda f, m: fractions.append(f))
    after = _eval_loss(model, examples, corpus, 0.05)
    assert isinstance(result, TrainResult)
    assert result.steps == 8 and result.examples_seen == 32 and len(result.losses) == 8
    assert result.examples_per_second > 0 and result.extra["world_size"] == 1
    assert fractions == pytest.approx([i / 8 for i in range(1, 9)])
    assert after < before * 0.8, (before, after)
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4])
    # save -> load -> identical embeddings
    model.save(tmp_path / "de")
    loaded = DualEncoder.load(tmp_path / "de")
    texts = [e.question for e in examples]
    np.testing.assert_allclose(loaded.encode_queries(texts), model.encode_queries(texts), atol=1e-6)


def test_squad_sample_trains(tiny_model_dir, shared_data):
    from engine.data import read_beir
    from engine.examples import examples_from_split

    ds = read_beir(shared_data / "squad-v1.1-dev", splits=["train"])
    first_per_paragraph = {}
    for ex in examples_from_split(ds, "train"):
        first_per_paragraph.setdefault(ex.positives[0], ex)
    examples = list(first_per_paragraph.values())[:16]  # 16 questions, 16 different gold paragraphs
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir, passage_max_length=64))
    gold = Corpus([ds.corpus[pid] for pid in dict.fromkeys(e.positives[0] for e in examples)])
    before = _eval_loss(model, examples, gold, 0.05)
    cfg = DualTrainConfig(epochs=2, batch_size=8, learning_rate=2e-4, temperature=0.05, hard_negatives_per_question=0)
    result = train_dual_encoder(model, examples, ds.corpus, cfg)
    assert result.steps == 4
    assert _eval_loss(model, examples, gold, 0.05) < before


def test_max_steps_caps_training(tiny_model_dir):
    examples, corpus = toy()
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    result = train_dual_encoder(model, examples, corpus, DualTrainConfig(epochs=5, batch_size=2, max_steps=3))
    assert result.steps == 3 and result.examples_seen == 6


def test_bad_input_is_refused_clearly(tiny_model_dir):
    examples, corpus = toy()
    model = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    with pytest.raises(ValueError, match="no training examples"):
        train_dual_encoder(model, [], corpus, DualTrainConfig())
    broken = [*examples[:2], TrainExample("qx", "Where?", ("not-a-passage",))]
    with pytest.raises(DataError, match="not-a-passage"):
        train_dual_encoder(model, broken, corpus, DualTrainConfig())
    with pytest.raises(ValueError, match="temperature"):
        train_dual_encoder(model, examples, corpus, DualTrainConfig(temperature=0))


@pytest.mark.slow
def test_throughput_of_the_real_minilm(minilm_path, shared_data):
    """Benchmark (off by default; `pytest -m slow -s`): questions/s of the 6-layer MiniLM for batch 32,
    1 hard negative, question length 32, passage length 128, on this machine's CPU threads."""
    import random

    from engine.data import read_beir
    from engine.examples import examples_from_split

    ds = read_beir(shared_data / "squad-v1.1-dev", splits=["train"])
    rnd = random.Random(0)
    examples = [
        TrainExample(e.question_id, e.question, e.positives, tuple(rnd.sample(ds.corpus.ids, 2)))
        for e in examples_from_split(ds, "train")[:160]
    ]
    model = DualEncoder.build(DualEncoderConfig(model=minilm_path))
    cfg = DualTrainConfig(batch_size=32, temperature=0.05, max_steps=5, length_bucketing=False)
    result = train_dual_encoder(model, examples, ds.corpus, cfg, log_every=1)
    print(f"\n{result.examples_per_second:.2f} questions/s, {result.extra['passages_per_batch']:.1f} passages/batch")
    assert result.steps == 5
