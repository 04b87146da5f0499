"""Inverse-cloze pseudo-queries: spans of a passage's own sentences, seeded, within their scope."""

from __future__ import annotations

import random

import pytest

from engine.data import Corpus, Passage
from engine.examples import TrainExample
from engine.inverse_cloze import InverseClozeConfig, inverse_cloze_examples, pseudo_query, scope_passages, sentences

CORPUS = Corpus(
    [
        Passage("bees_0", "Honey bees dance in the hive to show the others where flowers are. Short one.", "Bees"),
        Passage("bees_1", "A queen lays up to two thousand eggs on a single summer day. Drones never sting.", "Bees"),
        Passage("fresnel_0", "Augustin Fresnel designed a lens that made lighthouse beams reach far.", "Lighthouse"),
        Passage("vesuvius_0", "Mount Vesuvius buried Pompeii and Herculaneum under ash in the year 79.", "Volcano"),
        Passage("untitled_0", "A passage without any title still has sentences of several words."),
    ]
)
EXAMPLES = [TrainExample("q1", "How do bees show where flowers are?", ("bees_0",))]


def _norm(word: str) -> str:
    return word.strip(" ,.;:")


def _is_subsequence(words: list[str], of: list[str]) -> bool:
    it = iter(_norm(w) for w in of)
    return all(any(w == o for o in it) for w in words)


def test_sentences_split_after_end_marks_and_keep_only_long_ones():
    assert sentences("One two three four five six. Too short! Seven eight nine ten eleven twelve?", 6) == [
        "One two three four five six.",
        "Seven eight nine ten eleven twelve?",
    ]
    assert sentences("no end mark here at all", 3) == ["no end mark here at all"]
    assert sentences("", 1) == []


def test_a_pseudo_query_without_dropping_is_the_span_itself():
    sentence = "Honey bees dance in the hive to show the others where flowers are."
    n = len(sentence.split())
    config = InverseClozeConfig(per_passage=1, min_words=n, max_words=n, word_drop=0.0)
    assert pseudo_query(sentence, random.Random(0), config) == sentence.rstrip(".")
    config = InverseClozeConfig(per_passage=1, min_words=3, max_words=3, word_drop=0.0)
    query = pseudo_query(sentence, random.Random(0), config)
    assert len(query.split()) == 3 and query in sentence


def test_pseudo_queries_are_word_spans_of_one_sentence_of_their_own_passage():
    config = InverseClozeConfig(per_passage=2, min_words=4, max_words=8, scope="corpus", seed=5)
    examples = inverse_cloze_examples(CORPUS, EXAMPLES, config)
    # "Short one." and "Drones never sting." are under 4 words: every passage has one sentence to use
    assert [e.question_id for e in examples] == [f"ict:{pid}:0" for pid in CORPUS.ids]
    for ex in examples:
        (pid,) = ex.positives
        words = ex.question.split()
        assert 1 <= len(words) <= 8 and ex.negatives == ()
        pool = sentences(CORPUS[pid].text, config.min_words)
        assert any(_is_subsequence(words, s.split()) for s in pool), (ex.question, pid)


def test_each_pseudo_query_of_a_passage_comes_from_another_sentence():
    text = "Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu. Nu xi omicron pi."
    corpus = Corpus([Passage("p", text, "T")])
    config = InverseClozeConfig(per_passage=3, min_words=4, max_words=4, word_drop=0.0, scope="corpus")
    queries = [e.question for e in inverse_cloze_examples(corpus, [], config)]
    assert len(queries) == 3 and len({q.split()[0] for q in queries}) == 3
    assert all(q in text for q in queries)
    # more pseudo-queries asked for than the passage has sentences: one per sentence
    assert len(inverse_cloze_examples(corpus, [], InverseClozeConfig(per_passage=9, min_words=4, scope="corpus"))) == 4


def test_pseudo_queries_are_seeded():
    config = InverseClozeConfig(per_passage=1, scope="corpus")
    first = inverse_cloze_examples(CORPUS, EXAMPLES, config)
    assert first == inverse_cloze_examples(CORPUS, EXAMPLES, config)
    other = inverse_cloze_examples(CORPUS, EXAMPLES, InverseClozeConfig(per_passage=1, scope="corpus", seed=14))
    assert [e.question for e in other] != [e.question for e in first]
    assert inverse_cloze_examples(CORPUS, EXAMPLES, InverseClozeConfig()) == []  # per_passage 0: off


def test_scope_is_the_training_articles_the_positives_or_the_corpus():
    assert scope_passages(CORPUS, EXAMPLES, "positives") == ["bees_0"]
    assert scope_passages(CORPUS, EXAMPLES, "train-titles") == ["bees_0", "bees_1"]
    assert scope_passages(CORPUS, EXAMPLES, "corpus") == CORPUS.ids
    untitled = [TrainExample("q2", "a question", ("untitled_0",))]
    assert scope_passages(CORPUS, untitled, "train-titles") == ["untitled_0"]  # no title: the positive alone
    assert scope_passages(CORPUS, [], "train-titles") == []
    with pytest.raises(ValueError, match="unknown scope"):
        scope_passages(CORPUS, EXAMPLES, "test")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"per_passage": -1}, "per_passage"),
        ({"min_words": 0}, "min_words"),
        ({"min_words": 9, "max_words": 8}, "min_words"),
        ({"word_drop": 1.0}, "word_drop"),
        ({"scope": "everything"}, "unknown scope"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InverseClozeConfig(**kwargs)
