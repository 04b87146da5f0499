"""The dual-encoder reproduces sentence-transformers and round-trips through save/load."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import Passage
from engine.dual_encoder import DualEncoder, DualEncoderConfig

TEXTS = [
    "Worker honeybees perform a waggle dance to show where flowers are.",
    "The Fresnel lens let lighthouses throw their light much farther out to sea. " * 12,  # > 128 tokens: truncation
    "short",
    "Mount Vesuvius erupted in 79 and buried Pompeii.",
]


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return DualEncoder.build(DualEncoderConfig(model=minilm_path, passage_with_title=False))


@pytest.mark.parametrize("max_length", [128, 256])
def test_embeddings_equal_sentence_transformers(minilm, minilm_path, max_length):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_path, device="cpu")
    st.max_seq_length = max_length
    minilm.passage_encoder.max_length = max_length
    ours = minilm.encode_passages([Passage(str(i), t) for i, t in enumerate(TEXTS)], batch_size=2)
    theirs = st.encode(TEXTS, batch_size=3, convert_to_numpy=True)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_vectors_are_normalised_and_batching_does_not_matter(minilm):
    passages = [Passage(str(i), t) for i, t in enumerate(TEXTS)]
    one_by_one = np.concatenate([minilm.encode_passages([p]) for p in passages])
    batched = minilm.encode_passages(passages, batch_size=64)
    np.testing.assert_allclose(one_by_one, batched, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_default_lengths(minilm_path, tiny_model_dir):
    de = DualEncoder.build(DualEncoderConfig(model=minilm_path))
    # questions: the paper's 32; passages: what the sentence-transformers model declares (256)
    assert (de.query_encoder.max_length, de.passage_encoder.max_length) == (32, 256)
    assert de.query_encoder.model is de.passage_encoder.model  # shared towers
    plain = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))  # no sentence-transformers files
    assert plain.passage_encoder.max_length == 128  # the paper's value
    assert (
        DualEncoder.build(DualEncoderConfig(model=minilm_path, passage_max_length=64)).passage_encoder.max_length == 64
    )


@pytest.mark.parametrize("shared", [True, False])
def test_save_load_encode_identical(tmp_path, tiny_model_dir, shared):
    de = DualEncoder.build(
        DualEncoderConfig(model=tiny_model_dir, shared=shared, pooling="cls" if not shared else None)
    )
    passages = [Passage("a", "Bees dance.", "Bees"), Passage("b", "Lenses focus light.", "Optics")]
    before_p, before_q = de.encode_passages(passages), de.encode_queries(["why do bees dance?"])
    de.save(tmp_path / "m")
    loaded = DualEncoder.load(tmp_path / "m")
    assert loaded.config.shared == shared
    assert loaded.query_encoder.pooling == de.query_encoder.pooling
    np.testing.assert_array_equal(loaded.encode_passages(passages), before_p)
    np.testing.assert_array_equal(loaded.encode_queries(["why do bees dance?"]), before_q)
    assert loaded.fingerprint() == de.fingerprint()


def test_saved_model_loads_in_sentence_transformers(tmp_path, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    de = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir, passage_with_title=False))
    de.save(tmp_path / "m")
    st = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert st.max_seq_length == 128  # a plain Hugging Face model gets the paper's passage length
    np.testing.assert_allclose(
        st.encode(TEXTS), de.encode_passages([Passage(str(i), t) for i, t in enumerate(TEXTS)]), atol=1e-5
    )


def test_fingerprint_changes_with_weights(tiny_model_dir):
    import torch

    de = DualEncoder.build(DualEncoderConfig(model=tiny_model_dir))
    before = de.fingerprint()
    with torch.no_grad():
        next(de.passage_encoder.model.parameters()).add_(1e-3)
    assert de.fingerprint() != before


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="cannot load a transformer"):
        DualEncoder.build(DualEncoderConfig(model=str(tmp_path / "nope")))


def test_inference_batches_cap_items_and_padded_tokens():
    from engine.encoder import inference_batches

    lengths = [10, 300, 40, 40, 200, 5]
    batches = inference_batches(lengths, batch_size=3, max_tokens=400)
    assert [b.tolist() for b in batches] == [[1], [4, 2], [3, 0, 5]]  # longest first; 300 alone (> budget / 2)
    assert all(len(b) * max(lengths[i] for i in b) <= 400 for b in batches if len(b) > 1)
    assert [b.tolist() for b in inference_batches(lengths, batch_size=4)] == [[1, 4, 2, 3], [0, 5]]  # no cap
    assert inference_batches([], batch_size=4, max_tokens=100) == []
    with pytest.raises(ValueError, match="batch_size"):
        inference_batches(lengths, batch_size=0)


def test_a_token_budget_does_not_change_the_vectors(minilm, monkeypatch):
    import engine.encoder

    passages = [Passage(str(i), t) for i, t in enumerate(TEXTS)]
    monkeypatch.setattr(engine.encoder, "CPU_BATCH_TOKENS", 10**9)
    uncapped = minilm.encode_passages(passages, batch_size=64)
    monkeypatch.setattr(engine.encoder, "CPU_BATCH_TOKENS", 64)  # every text in a batch of its own but "short"
    np.testing.assert_allclose(minilm.encode_passages(passages, batch_size=64), uncapped, atol=1e-5)


class CountingTokenizer:
    """A tokenizer that counts the texts it is asked to tokenise (padding is not tokenising)."""

    def __init__(self, tokenizer):
        self.inner, self.texts = tokenizer, 0

    def __call__(self, texts, *args, **kwargs):
        self.texts += len(texts)
        return self.inner(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_encoding_tokenises_each_text_once_and_equals_the_training_forward(minilm, monkeypatch):
    import engine.encoder

    tower = minilm.passage_encoder
    texts = [t * (1 + i % 3) for i, t in enumerate(TEXTS * 3)]
    monkeypatch.setattr(engine.encoder, "LENGTH_CHUNK", 4)  # batches sorted within chunks of 4, put back in order
    monkeypatch.setattr(tower, "tokenizer", CountingTokenizer(tower.tokenizer))
    vectors = tower.encode(texts, batch_size=3)
    assert tower.tokenizer.texts == len(texts)
    was_training = tower.training
    tower.eval()  # no dropout in the one-batch reference
    try:
        np.testing.assert_allclose(vectors, tower.forward(texts).detach().numpy(), atol=1e-5)
    finally:
        tower.train(was_training)
