"""Eight one-sentence facts with one question each, and one contrastive step over them: shared by the
dual-encoder tests on the CPU (test_train_dual.py) and on a GPU (test_device.py)."""

from __future__ import annotations

import torch

from engine.batching import make_batch
from engine.data import Corpus, Passage
from engine.dual_encoder import DualEncoder
from engine.examples import TrainExample
from engine.gradcache import Tower, grad_cache_backward, plain_backward
from engine.loss import contrastive_loss
from engine.train_dual import _encoders

FACTS = [
    ("bees", "Worker honeybees perform a waggle dance to tell nest mates where flowers are.", "How do bees show where flowers are?"),
    ("lens", "The Fresnel lens, invented by Augustin-Jean Fresnel, let lighthouses shine farther.", "Who invented the lighthouse lens?"),
    ("vesuvius", "Mount Vesuvius erupted in the year 79 and buried Pompeii and Herculaneum.", "Which towns did Vesuvius bury?"),
    ("coffee", "Arabica coffee grows best at high altitude in the tropics.", "Where does arabica coffee grow best?"),
    ("glacier", "Glaciers carve U-shaped valleys as they slowly flow downhill under their own weight.", "What shape of valley do glaciers carve?"),
    ("violin", "Antonio Stradivari built violins in Cremona in the seventeenth and eighteenth centuries.", "Where did Stradivari build violins?"),
    ("comet", "A comet's tail always points away from the Sun because of the solar wind.", "Why does a comet's tail point away from the Sun?"),
    ("tide", "Tides are caused mainly by the gravitational pull of the Moon on the oceans.", "What mainly causes the tides?"),
]  # fmt: skip


def toy(n: int = len(FACTS)) -> tuple[list[TrainExample], Corpus]:
    """The first n facts as a corpus and one example per fact, its negative the next fact (cyclically)."""
    facts = FACTS[:n]
    corpus = Corpus([Passage(pid, text, pid.capitalize()) for pid, text, _ in facts])
    examples = [
        TrainExample(f"q{i}", q, (pid,), (facts[(i + 1) % len(facts)][0],)) for i, (pid, _, q) in enumerate(facts)
    ]
    return examples, corpus


def contrastive_step(
    model: DualEncoder, examples: list[TrainExample], corpus: Corpus, chunk: int, seed: int
) -> tuple[float, dict[str, torch.Tensor]]:
    """One in-batch contrastive step over `examples` (GradCache with `chunk` questions a sub-batch, or
    the plain step when 0) after `torch.manual_seed(seed)`: the loss and every gradient, on the CPU."""
    batch = make_batch(
        [e.question_id for e in examples], [e.question for e in examples], [e.positives[0] for e in examples],
        [e.negatives for e in examples],
    )  # fmt: skip
    encode_q, encode_p = _encoders(model, corpus, mixed_precision=False)
    towers = [Tower(encode_q, list(batch.questions)), Tower(encode_p, list(batch.passage_ids))]

    def loss_fn(q, p):
        return contrastive_loss(q, p, batch.target_tensor(), 0.05)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = grad_cache_backward(towers, loss_fn, chunk) if chunk else plain_backward(towers, loss_fn)
    return float(loss), {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
