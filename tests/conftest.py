"""Shared fixtures: small real models and small real data directories.

- `minilm_path`: the packaged all-MiniLM-L6-v2 directory (real weights, 6 layers).
- `tiny_model_dir`: a copy of it truncated to 1 transformer layer (fast, still a real model).
- `shared_data`: ../shared/data (or $ROCKETQA_SHARED_DATA); tests that need it skip when absent.
- `tiny_beir`: a hand-written BEIR directory of 8 passages and 4 questions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """benchmarks/<name>.py imported as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from engine.encoder import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path) -> str:
    from transformers import AutoModel, AutoTokenizer

    d = tmp_path_factory.mktemp("minilm-1layer")
    model = AutoModel.from_pretrained(minilm_path)
    model.encoder.layer = model.encoder.layer[:1]
    model.config.num_hidden_layers = 1
    model.save_pretrained(d)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = Path(os.environ.get("ROCKETQA_SHARED_DATA") or ROOT.parent / "shared" / "data")
    if not (d / "squad-v1.1-dev" / "corpus.jsonl").is_file():
        pytest.skip(f"shared data not found at {d} (set ROCKETQA_SHARED_DATA)")
    return d


TINY_PASSAGES = [
    (
        "bees_0",
        "Honeybee",
        "Worker honeybees perform a waggle dance to tell nest mates the direction and distance of flowers.",
    ),
    (
        "bees_1",
        "Honeybee",
        "A honeybee colony has one queen, thousands of female workers and, in summer, a few hundred drones.",
    ),
    ("bees_2", "Beekeeping", "Beekeepers use smoke to calm bees before opening a hive to inspect the frames of comb."),
    (
        "lighthouse_0",
        "Lighthouse",
        "The Fresnel lens, invented by Augustin-Jean Fresnel in 1822, let lighthouses throw light much farther.",
    ),
    (
        "lighthouse_1",
        "Lighthouse",
        "Each lighthouse flashes in its own pattern, its characteristic, so sailors can tell one from another.",
    ),
    (
        "volcano_0",
        "Volcano",
        "Mount Vesuvius erupted in the year 79 and buried the Roman towns of Pompeii and Herculaneum.",
    ),
    ("volcano_1", "Volcano", "Basaltic lava is runny and forms broad shield volcanoes such as Mauna Loa in Hawaii."),
    (
        "coffee_0",
        "Coffee",
        "Arabica coffee grows best at high altitude in the tropics, between about 1,000 and 2,000 metres.",
    ),
]
TINY_QUESTIONS = [
    ("q1", "How do bees tell other bees where flowers are?", ["waggle dance"], "bees_0", "train"),
    ("q2", "Who invented the lens used in lighthouses?", ["Augustin-Jean Fresnel"], "lighthouse_0", "train"),
    ("q3", "Which towns did Vesuvius bury?", ["Pompeii"], "volcano_0", "test"),
    ("q4", "At what altitude does arabica coffee grow?", ["1,000 and 2,000 metres"], "coffee_0", "test"),
]


def write_tiny_beir(d: Path) -> Path:
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    with (d / "corpus.jsonl").open("w") as f:
        for pid, title, text in TINY_PASSAGES:
            f.write(json.dumps({"_id": pid, "title": title, "text": text}) + "\n")
    with (d / "queries.jsonl").open("w") as f:
        for qid, text, answers, _, _ in TINY_QUESTIONS:
            f.write(json.dumps({"_id": qid, "text": text, "answers": answers}) + "\n")
    for split in ("train", "test"):
        with (d / "qrels" / f"{split}.tsv").open("w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, _, _, pid, s in TINY_QUESTIONS:
                if s == split:
                    f.write(f"{qid}\t{pid}\t1\n")
    return d


@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    return write_tiny_beir(tmp_path / "tiny")
