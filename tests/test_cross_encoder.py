"""Cross-encoder: trained flag, calibration maths, save/load round trip, sentence-transformers compatibility."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
from engine.data import Passage

PASSAGES = [
    Passage("a", "Bees perform a waggle dance.", "Bees"),
    Passage("b", "Lighthouses use Fresnel lenses.", "Lights"),
]


@pytest.fixture(scope="module")
def ce(tiny_model_dir):
    return CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))


def test_a_base_model_head_is_untrained(ce):
    assert ce.is_trained is False


def test_scores_are_probabilities_and_rank_is_sorted(ce):
    probs = ce.score("how do bees communicate?", PASSAGES)
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))
    ranked = ce.rank("how do bees communicate?", PASSAGES)
    assert [r.rank for r in ranked] == [1, 2] and ranked[0].logit >= ranked[1].logit


def test_platt_calibration_recovers_a_known_mapping(ce):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-(2.0 * logits - 1.0)))).astype(float)
    cfg = ce.calibrate(logits, labels)
    assert cfg.scale == pytest.approx(2.0, abs=0.2) and cfg.bias == pytest.approx(-1.0, abs=0.2)
    assert ce.probability(np.array([0.5]))[0] == pytest.approx(
        1 / (1 + np.exp(-(cfg.scale * 0.5 + cfg.bias))), rel=1e-5
    )


def test_separable_logits_get_a_bounded_slope(ce):
    from engine.cross_encoder import MAX_CALIBRATION_SCALE

    # a head at chance: logits a thousandth apart, but perfectly separated at 0 -> the free fit's slope runs off
    logits = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]) * 1e-3
    cfg = ce.calibrate(logits, np.array([0.0, 0, 0, 1, 1, 1]))
    assert cfg.scale == MAX_CALIBRATION_SCALE and abs(cfg.bias) < 1e-3
    probs = ce.probability(logits)
    assert np.all(probs[:3] < 0.5) and np.all(probs[3:] > 0.5) and np.all(np.abs(probs - 0.5) < 0.1)


def test_inverted_logits_never_invert_the_order(ce):
    # held-out pairs where higher logits are LESS relevant (an untrained head): a negative Platt slope would
    # turn the logit order (what the app and re-ranking sort by) upside down in probability
    for scale in (1e-3, 1.0):  # separable (the free fit runs off) and not
        logits = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 0.5, -0.5]) * scale
        labels = np.array([1.0, 1, 1, 0, 0, 0, 1, 0])
        cfg = ce.calibrate(logits, labels)
        assert cfg.scale == 0.0 and cfg.bias == pytest.approx(0.0, abs=1e-9)  # base rate 4/8
        assert np.allclose(ce.probability(logits), 0.5)


def test_calibration_needs_both_classes(ce):
    with pytest.raises(ValueError, match="both classes"):
        ce.calibrate(np.array([1.0, 2.0]), np.array([1.0, 1.0]))


def test_save_load_round_trip_and_sentence_transformers(tmp_path, tiny_model_dir):
    from dataclasses import replace

    model = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir))
    model.config = replace(model.config, trained=True, scale=1.5, bias=-0.25)
    before = model.logits(["q1", "q2"], PASSAGES)
    model.save(tmp_path / "ce")
    loaded = CrossEncoder.load(tmp_path / "ce")
    assert loaded.is_trained and (loaded.config.scale, loaded.config.bias) == (1.5, -0.25)
    np.testing.assert_allclose(loaded.logits(["q1", "q2"], PASSAGES), before, atol=1e-6)

    from sentence_transformers import CrossEncoder as STCrossEncoder

    st = STCrossEncoder(str(tmp_path / "ce"), device="cpu", max_length=256)
    theirs = st.predict([("q1", PASSAGES[0].full_text), ("q2", PASSAGES[1].full_text)])  # sigmoid of the raw logit
    np.testing.assert_allclose(np.asarray(theirs).ravel(), 1 / (1 + np.exp(-before)), atol=1e-5)


def test_pair_count_mismatch(ce):
    with pytest.raises(ValueError, match="1 questions for 2 passages"):
        ce.logits(["q"], PASSAGES)


def test_a_token_budget_does_not_change_the_logits(ce, monkeypatch):
    import engine.encoder

    questions = ["how do bees communicate?", "what lens do lighthouses use " * 5, "q"]
    passages = [PASSAGES[0], Passage("c", "A long passage about optics. " * 40, "Optics"), PASSAGES[1]]
    monkeypatch.setattr(engine.encoder, "CPU_BATCH_TOKENS", 10**9)
    one_batch = ce.logits(questions, passages)
    one_by_one = np.concatenate([ce.logits([q], [p]) for q, p in zip(questions, passages)])
    monkeypatch.setattr(engine.encoder, "CPU_BATCH_TOKENS", 32)
    np.testing.assert_allclose(ce.logits(questions, passages), one_batch, atol=1e-5)
    np.testing.assert_allclose(one_by_one, one_batch, atol=1e-5)


def test_scoring_tokenises_each_pair_once_and_equals_the_training_forward(ce, monkeypatch):
    from test_encoder import CountingTokenizer

    import engine.encoder

    questions = [f"question {i} about {'bees ' * i}" for i in range(7)]
    passages = [PASSAGES[i % 2] for i in range(7)]
    monkeypatch.setattr(engine.encoder, "LENGTH_CHUNK", 3)
    monkeypatch.setattr(ce, "tokenizer", CountingTokenizer(ce.tokenizer))
    logits = ce.logits(questions, passages, batch_size=2)
    assert ce.tokenizer.texts == len(questions)
    was_training = ce.training
    ce.eval()  # no dropout in the one-batch reference
    try:
        np.testing.assert_allclose(logits, ce.forward(questions, passages).detach().numpy(), atol=1e-5)
    finally:
        ce.train(was_training)
