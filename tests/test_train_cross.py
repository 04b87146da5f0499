"""Cross-encoder training: loss goes down, calibration is fitted, trained flag and round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.cross_encoder import CrossEncoder, CrossEncoderConfig
from engine.data import Corpus, DataError, Passage
from engine.examples import TrainExample
from engine.train_cross import (
    CrossTrainConfig,
    Pair,
    classifier_metrics,
    listwise_loss,
    pair_groups,
    roc_auc,
    sample_pairs,
    split_heldout,
    train_cross_encoder,
)

TOPICS = {
    "bees": ("Worker honeybees perform a waggle dance to show nest mates where flowers are.", "How do bees show where flowers are?"),
    "lens": ("The Fresnel lens, invented by Augustin-Jean Fresnel, let lighthouses shine farther.", "Who invented the lighthouse lens?"),
    "vesuvius": ("Mount Vesuvius erupted in the year 79 and buried Pompeii.", "Which town did Vesuvius bury?"),
    "coffee": ("Arabica coffee grows best at high altitude in the tropics.", "Where does arabica coffee grow best?"),
    "glacier": ("Glaciers carve U-shaped valleys as they flow downhill.", "What shape of valley do glaciers carve?"),
    "violin": ("Antonio Stradivari built violins in Cremona.", "Where did Stradivari build violins?"),
    "comet": ("A comet's tail points away from the Sun because of the solar wind.", "Why does a comet's tail point away from the Sun?"),
    "tide": ("Tides are caused mainly by the gravitational pull of the Moon.", "What mainly causes the tides?"),
    "saturn": ("Saturn's rings are made mostly of ice particles with some rock.", "What are Saturn's rings made of?"),
    "penguin": ("Emperor penguins breed during the Antarctic winter on sea ice.", "When do emperor penguins breed?"),
    "silk": ("Silk is produced by the larvae of the mulberry silkworm.", "Which animal produces silk?"),
    "nile": ("The Nile flows north through Egypt into the Mediterranean Sea.", "Into which sea does the Nile flow?"),
}  # fmt: skip


def toy() -> tuple[list[TrainExample], Corpus]:
    names = list(TOPICS)
    corpus = Corpus([Passage(n, text, n.capitalize()) for n, (text, _) in TOPICS.items()])
    examples = [
        TrainExample(f"q{i}", q, (n,), (names[(i + 1) % len(names)], names[(i + 5) % len(names)]))
        for i, (n, (_, q)) in enumerate(TOPICS.items())
    ]
    return examples, corpus


def test_metrics_match_hand_computation():
    probs, labels = np.array([0.9, 0.4, 0.6, 0.1]), np.array([1.0, 1.0, 0.0, 0.0])
    m = classifier_metrics(probs, labels)
    assert m.accuracy == 0.5  # 0.9 right, 0.4 wrong, 0.6 wrong, 0.1 right
    assert m.auc == pytest.approx(3 / 4)  # pairs (pos, neg): 0.9>0.6, 0.9>0.1, 0.4<0.6, 0.4>0.1
    assert m.brier == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == 0.5
    assert np.isnan(roc_auc(np.array([0.5]), np.array([1.0])))


def test_rank_auc_equals_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores, labels = rng.integers(0, 4, size=15).astype(float), rng.integers(0, 2, size=15).astype(float)
        pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
        if len(pos) and len(neg):
            brute = ((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg))
            assert roc_auc(scores, labels) == pytest.approx(brute, abs=1e-12)


def test_pairs_take_negatives_then_fill_randomly_never_with_a_positive():
    examples, corpus = toy()
    rng = np.random.default_rng(0)
    pairs = sample_pairs([examples[0]], corpus, 4, rng)
    assert [p.label for p in pairs] == [1.0, 0.0, 0.0, 0.0, 0.0]
    negatives = [p.passage_id for p in pairs if p.label == 0]
    assert set(examples[0].negatives) <= set(negatives) and len(set(negatives)) == 4
    assert examples[0].positives[0] not in negatives
    bare = TrainExample("qb", "question?", ("bees", "lens"))  # no negatives at all
    pairs = sample_pairs([bare], corpus, 2, rng)
    assert sum(p.label for p in pairs) == 2 and len(pairs) == 6
    assert not {p.passage_id for p in pairs if p.label == 0} & {"bees", "lens"}


def test_heldout_split_is_seeded_and_disjoint():
    examples, _ = toy()
    train, held = split_heldout(examples, 0.25, 13)
    assert len(held) == 3 and len(train) == 9
    assert not {e.question_id for e in train} & {e.question_id for e in held}
    assert split_heldout(examples, 0.25, 13) == (train, held)
    assert len(split_heldout(examples, 0.0, 13)[1]) == 0
    assert len(split_heldout(examples[:2], 0.01, 13)[1]) == 1  # at least one question when asked


def test_training_lowers_loss_calibrates_and_round_trips(tiny_model_dir, tmp_path):
    examples, corpus = toy()
    model = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, max_length=64))
    assert not model.is_trained
    fractions = []
    cfg = CrossTrainConfig(
        epochs=4, batch_size=8, learning_rate=1e-4, negatives_per_positive=2, calibration_fraction=0.25
    )
    result = train_cross_encoder(model, examples, corpus, cfg, progress=lambda f, m: fractions.append(f))
    # 9 training questions x 3 pairs = 27 pairs -> 4 batches an epoch
    assert result.steps == 16 and result.examples_seen == 4 * 27 and fractions[-1] == pytest.approx(1.0)
    assert np.mean(result.losses[-4:]) < np.mean(result.losses[:4])
    assert model.is_trained
    held = result.extra["heldout"]
    assert held["after_calibration"]["pairs"] == 9 and held["after_calibration"]["positives"] == 3
    assert held["after_calibration"]["brier"] <= held["before_calibration"]["brier"] + 1e-9
    prov = model.config.provenance
    assert prov["train_questions"] == 9 and prov["heldout_questions"] == 3 and prov["heldout"] == held
    assert (model.config.scale, model.config.bias) != (1.0, 0.0)
    probs = model.score(examples[0].question, list(corpus))
    assert probs.shape == (len(corpus),) and np.all((probs >= 0) & (probs <= 1))
    # save -> load: same config (trained, calibration) and identical logits
    model.save(tmp_path / "ce")
    loaded = CrossEncoder.load(tmp_path / "ce")
    assert loaded.is_trained and loaded.config.scale == model.config.scale and loaded.config.bias == model.config.bias
    qs, ps = [e.question for e in examples], [corpus[e.positives[0]] for e in examples]
    np.testing.assert_allclose(loaded.logits(qs, ps), model.logits(qs, ps), atol=1e-6)


def test_listwise_groups_and_loss_hand_computed():
    pairs = [
        Pair("q1", "a", 1.0), Pair("q1", "b", 0.0), Pair("q1", "c", 0.0),
        Pair("q2", "d", 1.0), Pair("q2", "e", 1.0), Pair("q2", "f", 0.0), Pair("q2", "g", 0.0),
    ]  # fmt: skip
    groups = pair_groups(pairs)
    assert [[p.passage_id for p in g] for g in groups] == [["a", "b", "c"], ["d", "f"], ["e", "g"]]
    with pytest.raises(ValueError, match="no positive"):
        pair_groups([Pair("q3", "x", 0.0)])
    logits = torch.tensor([2.0, 0.0, 0.0, 1.0, 1.0])
    expected = ((math.log(math.exp(2) + 2) - 2) + math.log(2)) / 2  # group 2: positive ties its negative
    assert listwise_loss(logits, [3, 2]).item() == pytest.approx(expected, rel=1e-6)


def test_listwise_training_ranks_positives_first_and_calibrates(tiny_model_dir):
    examples, corpus = toy()
    model = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, max_length=64))
    cfg = CrossTrainConfig(
        epochs=4, batch_size=8, learning_rate=1e-4, negatives_per_positive=2, calibration_fraction=0.25, loss="listwise"
    )
    result = train_cross_encoder(model, examples, corpus, cfg)
    # 9 training questions -> 9 groups of 3; a batch of 8 pairs holds 2 whole groups -> 5 batches an epoch
    assert result.steps == 20 and result.examples_seen == 4 * 27
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert model.is_trained and result.extra["heldout"]["after_calibration"]["pairs"] == 9
    with pytest.raises(ValueError, match="unknown cross-encoder loss"):
        train_cross_encoder(model, examples, corpus, CrossTrainConfig(loss="pairwise"))


def test_without_calibration_questions_the_model_is_trained_but_uncalibrated(tiny_model_dir):
    examples, corpus = toy()
    model = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, max_length=32))
    cfg = CrossTrainConfig(batch_size=8, calibration_fraction=0.0, max_steps=1)
    result = train_cross_encoder(model, examples[:4], corpus, cfg)
    assert result.steps == 1 and result.extra["heldout"] is None
    assert model.is_trained and (model.config.scale, model.config.bias) == (1.0, 0.0)


def test_bad_input_is_refused_clearly(tiny_model_dir):
    examples, corpus = toy()
    model = CrossEncoder.build(CrossEncoderConfig(model=tiny_model_dir, max_length=32))
    with pytest.raises(ValueError, match="no training examples"):
        train_cross_encoder(model, [], corpus, CrossTrainConfig())
    with pytest.raises(DataError, match="ghost"):
        train_cross_encoder(
            model, [*examples, TrainExample("qg", "?", ("bees",), ("ghost",))], corpus, CrossTrainConfig()
        )
    assert not model.is_trained
