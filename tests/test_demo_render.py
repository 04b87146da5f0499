"""HTML rendering: every data text is escaped, highlights never lose characters; configuration precedence."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from demo.config import HUB_DEFAULT_DATA, SAMPLE_DATA, load_config
from demo.render import Highlight, hit_card, item_card, notice, passage_html, split_sentences

HOSTILE = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "\"'><svg onload=alert(1)>",
    "${alert(1)} {{constructor.constructor('alert(1)')()}}",
    "a & b < c > d",
]


def tags(markup: str) -> list[tuple[str, list]]:
    """(tag, attributes) of every element a browser would build from the markup."""
    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(markup)
    return found


def strip_tags(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


@pytest.mark.parametrize("text", HOSTILE)
def test_hit_card_escapes_every_field(text):
    row = {"rank": 1, "passage_id": text, "title": text, "text": f"First. {text} Second sentence.", "dense_score": 0.5,
           "dense_rank": 1, "bm25_score": None, "ce_prob": 0.9}  # fmt: skip
    markup = hit_card(row, Highlight(1, 0.9), ce_trained=True)
    assert "<script" not in markup and "<img" not in markup and "<svg" not in markup
    assert not [(tag, name) for tag, attrs in tags(markup) for name, _ in attrs if name.startswith("on")]
    assert {tag for tag, _ in tags(markup)} <= {"div", "span", "b", "code", "mark"}
    assert text in strip_tags(markup)  # shown verbatim as text
    for other in (item_card(text, text, text, text), notice(text)):
        assert "<script" not in other and "<img" not in other and text in strip_tags(other)


def test_untrained_card_shows_no_probability():
    row = {"rank": 2, "passage_id": "p", "title": "", "text": "t", "dense_score": 0.5, "dense_rank": 2, "ce_prob": 0.7}
    assert "cross-encoder" not in hit_card(row, None, ce_trained=False)
    assert "cross-encoder p = 0.700" in hit_card(row, None, ce_trained=True)


@pytest.mark.parametrize(
    "text",
    [
        "One sentence only",
        "Bees dance. They tell direction!  Is it far? Yes, 3 km.",
        "Dr. Smith met Mr. Jones in 1822. Then they left.",
        "Trailing spaces.   ",
    ],
)
def test_highlight_keeps_every_character(text):
    sentences = split_sentences(text)
    for i in range(len(sentences)):
        markup = passage_html(text, Highlight(i, 0.8))
        assert markup.count("<mark") == 1
        assert strip_tags(markup) == text
        assert strip_tags(re.search(r"<mark[^>]*>(.*?)</mark>", markup).group(0)) == sentences[i]


def test_sentence_split():
    assert split_sentences("Bees dance. They tell direction! Is it far? Yes.") == [
        "Bees dance.", "They tell direction!", "Is it far?", "Yes.",
    ]  # fmt: skip


def test_config_precedence_and_defaults():
    c = load_config([], env={})
    assert c.resolved_data() == str(SAMPLE_DATA) and c.port == 7860 and c.host == "127.0.0.1" and not c.on_space
    env = {
        "ROCKETQA_DATA": "/env/data",
        "ROCKETQA_RUN": "/env/run",
        "GRADIO_SERVER_PORT": "9000",
        "ROCKETQA_CROSS_ENCODER": "ce",
    }
    c = load_config(["--data", "/cli/data"], env=env)
    assert (c.data, c.run, c.port, c.cross_encoder) == ("/cli/data", "/env/run", 9000, "ce")
    space = load_config([], env={"SPACE_ID": "me/app"})
    assert space.on_space and space.hub_access and space.resolved_data() == HUB_DEFAULT_DATA
    offline = load_config([], env={"SPACE_ID": "me/app", "HF_HUB_OFFLINE": "1"})
    assert offline.resolved_data() == str(SAMPLE_DATA)
    with pytest.raises(SystemExit):
        load_config([], env={"GRADIO_SERVER_PORT": "eighty"})
    assert not c.int8_cross_encoder
    assert load_config(["--int8-cross-encoder"], env={}).int8_cross_encoder
    assert load_config([], env={"ROCKETQA_INT8_CROSS_ENCODER": "1"}).int8_cross_encoder
    assert not load_config([], env={"ROCKETQA_INT8_CROSS_ENCODER": "0"}).int8_cross_encoder
    assert c.int8_backend == "auto" and load_config(["--int8-backend", "torch"], env={}).int8_backend == "torch"
    assert load_config([], env={"ROCKETQA_INT8_BACKEND": "ONNX"}).int8_backend == "onnx"
    with pytest.raises(SystemExit, match="ROCKETQA_INT8_BACKEND"):
        load_config([], env={"ROCKETQA_INT8_BACKEND": "tensorrt"})
    with pytest.raises(SystemExit, match="ROCKETQA_INT8_CROSS_ENCODER"):
        load_config([], env={"ROCKETQA_INT8_CROSS_ENCODER": "maybe"})
    assert load_config(["--onnx-cross-encoder"], env={}).onnx_cross_encoder
    assert load_config([], env={"ROCKETQA_ONNX_CROSS_ENCODER": "yes"}).onnx_cross_encoder and not c.onnx_cross_encoder
    with pytest.raises(SystemExit, match="exclude each other"):
        load_config(["--onnx-cross-encoder"], env={"ROCKETQA_INT8_CROSS_ENCODER": "1"})
    assert (c.rerank_weight, c.rerank_bm25_weight) == (0.0, 0.0)
    weights = load_config(["--rerank-weight", "5"], env={"ROCKETQA_RERANK_BM25_WEIGHT": "0.5"})
    assert (weights.rerank_weight, weights.rerank_bm25_weight) == (5.0, 0.5)
    assert load_config(["--rerank-weight", "2"], env={"ROCKETQA_RERANK_WEIGHT": "9"}).rerank_weight == 2.0
    for bad in ("-1", "nan", "inf", "five"):
        with pytest.raises(SystemExit, match="ROCKETQA_RERANK_WEIGHT .* must be a number >= 0"):
            load_config(["--rerank-weight", bad], env={})
    with pytest.raises(SystemExit, match="ROCKETQA_RERANK_BM25_WEIGHT"):
        load_config([], env={"ROCKETQA_RERANK_BM25_WEIGHT": "-0.5"})


def test_rerank_shares_come_from_an_evaluation_output(tmp_path):
    """`--rerank-shares FILE` takes both weights from an `evaluate` / `rerank-mix` output and remembers the
    models it names; a weight given as well, or a file that is not such an output, is one clear exit."""
    import json

    out = tmp_path / "eval.json"
    config = {"model": "runs/a/step4_augment/model", "reranker": "runs/a/step2_cross_encoder/model"}
    config |= {"retriever": "hybrid", "split": "test", "rerank_depth": 20, "rerank_weight": 24.43}
    out.write_text(json.dumps({"MRR@10": 90.36, "config": config | {"rerank_bm25_weight": 1.49}}))
    c = load_config(["--rerank-shares", str(out)], env={})
    assert (c.rerank_weight, c.rerank_bm25_weight) == (24.43, 1.49) and c.rerank_shares_file == str(out)
    assert dict(c.rerank_shares_models)["reranker"] == "runs/a/step2_cross_encoder/model"
    assert load_config([], env={"ROCKETQA_RERANK_SHARES": str(out)}).rerank_weight == 24.43
    with pytest.raises(SystemExit, match="drop --rerank-weight"):
        load_config(["--rerank-shares", str(out), "--rerank-weight", "5"], env={})
    with pytest.raises(SystemExit, match="drop --rerank-weight"):
        load_config([], env={"ROCKETQA_RERANK_SHARES": str(out), "ROCKETQA_RERANK_BM25_WEIGHT": "1"})
    bad = tmp_path / "bad.json"
    for text, message in (
        ("{not json", "not JSON"),
        ("[1, 2]", "not an `evaluate --output`"),
        (json.dumps({"config": {"retriever": "dense"}}), "no config.rerank_weight"),
        (json.dumps({"config": {"rerank_weight": None, "rerank_bm25_weight": None}}), "holds no dense share"),
        (json.dumps({"config": {"rerank_weight": 2, "rerank_bm25_weight": -1}}), "BM25 share must be a number >= 0"),
        (json.dumps({"config": {"rerank_weight": "2", "rerank_bm25_weight": 0}}), "dense share must be a number"),
    ):
        bad.write_text(text)
        with pytest.raises(SystemExit, match=message):
            load_config(["--rerank-shares", str(bad)], env={})
    with pytest.raises(SystemExit, match="cannot read it"):
        load_config(["--rerank-shares", str(tmp_path / "missing.json")], env={})
