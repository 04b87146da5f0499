"""Pipeline configuration: one frozen dataclass per stage, composed into `PipelineConfig`, and presets.

Every constant of the four RocketQA steps is a named field (thresholds, depths, numbers of
negatives, lengths, learning rates, batch sizes, epochs, seeds). The paper's values (Qu et al.,
NAACL 2021, sections 4.2 and 5.1, and the released code) are in the `paper` preset:

| what | paper | field |
|---|---|---|
| dual-encoder lr / epochs | 3e-5, 40 epochs (MS MARCO) / 30 epochs (NQ) | `step1.learning_rate`, `step1.epochs` |
| batch | 512 questions per GPU x 8 GPUs, cross-batch -> 4,096 x 2 passages | `step1.batch_size` (global) |
| max lengths | question 32, passage 128 (dual); 384 (cross-encoder, ERNIE-large) | `dual.*_max_length`, `cross.max_length` |
| cross-encoder training | negatives sampled from M_D0's top-k: 1:1 from top-100 (NQ), 1:4 from top-1000 (MARCO); lr 1e-5 | `ce_sampling`, `step2` |
| denoising | top-50 of M_D0, CE prob < 0.1 -> hard negative, 4 hard negatives per question | `denoise` |
| augmentation | CE prob > 0.9 -> pseudo-positive, < 0.1 -> pseudo-negative | `augment` |

Presets: `tiny` (tests: a few steps, k small), `cpu` (a 2-core laptop; cheap levers and subsets
chosen so the four steps fit a CPU budget; every cut is a field, so it is visible in config.json),
`gpu` (one GPU: the paper's recipe scaled to a small training set), `paper` (the settings above, for
eight GPUs).

Thresholds are fixed to the paper's values *before* looking at any test result; the dev split is
the only place to tune them (`engine.ablation` reports a dev-only threshold check, and
`AugmentConfig.pos_precision_target` makes step 4 choose its positive threshold on dev).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, replace

from engine.augment import AugmentConfig
from engine.cross_encoder import CrossEncoderConfig
from engine.denoise import DenoiseConfig
from engine.dual_encoder import DualEncoderConfig
from engine.inverse_cloze import InverseClozeConfig
from engine.train_cross import CrossTrainConfig
from engine.train_dual import DualTrainConfig


@dataclass(frozen=True)
class CrossSamplingConfig:
    """Step 2: which pairs the cross-encoder trains on."""

    top_k: int = 100  # negatives sampled at random from M_D0's top-k (paper: 100 for NQ, 1000 for MS MARCO)
    negatives_per_positive: int = 1  # paper: 1:1 (NQ), 1:4 (MS MARCO)
    # extra negatives drawn uniformly from the whole corpus (not in the paper): with few training
    # questions they give the classifier an easy contrast to start from (cpu preset: 1)
    random_negatives_per_positive: int = 0
    # drop top-k negatives whose text contains one of the question's answer strings (not in the
    # paper): on SQuAD other paragraphs of the same article often hold the answer (noisy 0-labels);
    # see docs/PIPELINE.md for what made the CPU cross-encoder learn
    exclude_answer_negatives: bool = False
    max_questions: int = 0  # >0: train the CE on a seeded subset of the training questions (CPU budget)
    seed: int = 13
    # inverse-cloze pseudo-queries per passage added to the CE's training questions (not in the paper;
    # 0 = none), made with `PipelineConfig.inverse_cloze`'s other settings; their negatives are drawn
    # like the questions' (from M_D0's top-k, then random); never held out for calibration
    inverse_cloze: int = 0
    # negatives drawn at random from BM25's top-k (the same k), per positive, on top of the others
    # (not in the paper, 0 = none): re-ranking scores a hybrid head of dense and BM25 candidates, and
    # without them the cross-encoder never trains on BM25's lexical near-misses; answer-bearing
    # passages are skipped as for the dense ones
    bm25_negatives_per_positive: int = 0

    def __post_init__(self) -> None:
        if self.inverse_cloze < 0:
            raise ValueError(f"ce_sampling.inverse_cloze must be >= 0, got {self.inverse_cloze}")
        if self.bm25_negatives_per_positive < 0:
            raise ValueError(
                f"ce_sampling.bm25_negatives_per_positive must be >= 0, got {self.bm25_negatives_per_positive}"
            )


@dataclass(frozen=True)
class PipelineConfig:
    preset: str = "paper"
    dual: DualEncoderConfig = field(default_factory=DualEncoderConfig)  # base model + lengths of every dual-encoder
    cross: CrossEncoderConfig = field(default_factory=CrossEncoderConfig)  # base model + length of M_C
    step1: DualTrainConfig = field(default_factory=DualTrainConfig)  # M_D0: in-batch / cross-batch negatives only
    # step 1 also trains on inverse-cloze pseudo-queries made from passage text (not in the paper; off)
    inverse_cloze: InverseClozeConfig = field(default_factory=InverseClozeConfig)
    ce_sampling: CrossSamplingConfig = field(default_factory=CrossSamplingConfig)
    step2: CrossTrainConfig = field(default_factory=CrossTrainConfig)  # M_C
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    step3: DualTrainConfig = field(default_factory=DualTrainConfig)  # M_D1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    step4: DualTrainConfig = field(default_factory=DualTrainConfig)  # M_D2
    # where M_D1 / M_D2 start: "base" = the base model (RocketQA re-initialises from the pre-trained
    # model), "previous" = continue from the previous step's dual-encoder (cheaper on a CPU)
    init_step3: str = "base"
    init_step4: str = "base"
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "test"
    unlabeled_split: str = "unlabeled"
    extra_unlabeled: tuple[str, ...] = ()  # question files (NQ-open, TriviaQA: engine.readers.read_questions)
    eval_k: int = 100  # depth of the per-step evaluation (R@100)
    num_threads: int = 0  # torch.set_num_threads; 0 = leave as is
    ce_batch_size: int = 64  # cross-encoder inference batch (scoring only)
    # steps 3 and 4 refuse a cross-encoder whose held-out ROC AUC (step 2) is below this: its
    # probabilities would drop or keep passages at random (0 = no check)
    min_ce_auc: float = 0.75
    # CPU lever: do not train the 30k x 384 word-embedding matrix (half of MiniLM's weights; its
    # dense AdamW update dominates a small CPU step). Position / type embeddings and layers still train.
    freeze_word_embeddings: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PipelineConfig:
        return _from_dict(cls, data)


def _from_dict(cls, data: dict):
    """Rebuild a (nested) frozen dataclass from `asdict` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _from_dict(hint, value)
        elif typing.get_origin(hint) is tuple or (isinstance(hint, types.GenericAlias) and hint.__origin__ is tuple):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def paper_preset() -> PipelineConfig:
    """RocketQA's settings (NQ column) for GPUs; batch is global (512 per GPU x 8 GPUs in the paper)."""
    dual_train = DualTrainConfig(
        epochs=30,
        batch_size=4096,
        learning_rate=3e-5,
        hard_negatives_per_question=0,
        mixed_precision=True,
        temperature=0.05,
    )
    return PipelineConfig(
        preset="paper",
        dual=DualEncoderConfig(query_max_length=32, passage_max_length=128),
        cross=CrossEncoderConfig(max_length=384),
        step1=dual_train,
        ce_sampling=CrossSamplingConfig(top_k=100, negatives_per_positive=1),
        step2=CrossTrainConfig(
            epochs=2, batch_size=64, learning_rate=1e-5, negatives_per_positive=1, mixed_precision=True
        ),
        denoise=DenoiseConfig(top_k=50, neg_threshold=0.1, num_negatives=4, fill_depth=200),
        step3=replace(dual_train, batch_size=512 * 8, hard_negatives_per_question=4),
        augment=AugmentConfig(top_k=50, pos_threshold=0.9, neg_threshold=0.1, max_negatives=4),
        step4=replace(dual_train, batch_size=512 * 8, hard_negatives_per_question=4),
        init_step3="base",
        init_step4="base",
    )


def cpu_preset() -> PipelineConfig:
    """A 2-core CPU: one epoch per model, batch 32, short cross-encoder inputs, small scoring depths.

    Cuts against the paper, each a field: the CE trains one epoch on every training question with
    one negative from M_D0's top-20 (answer-bearing paragraphs excluded) and one random negative
    at lr 1e-4 (docs/PIPELINE.md: why), denoising scores M_D0's top-3 and augmentation M_D1's top-3
    (the rest of a shortfall is random fill from ranks 4-30), 1 hard negative per question in
    training, M_D1 / M_D2 continue from the previous dual-encoder.
    """
    dual_train = DualTrainConfig(
        epochs=1, batch_size=32, learning_rate=3e-5, hard_negatives_per_question=0, temperature=0.05, num_threads=2
    )
    return PipelineConfig(
        preset="cpu",
        dual=DualEncoderConfig(query_max_length=32, passage_max_length=128),
        cross=CrossEncoderConfig(max_length=160),
        step1=dual_train,
        ce_sampling=CrossSamplingConfig(
            top_k=20, negatives_per_positive=1, random_negatives_per_positive=1, exclude_answer_negatives=True
        ),
        step2=CrossTrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, negatives_per_positive=2, num_threads=2),
        denoise=DenoiseConfig(top_k=3, neg_threshold=0.1, num_negatives=2, fill_depth=30),
        step3=replace(dual_train, hard_negatives_per_question=1),
        augment=AugmentConfig(top_k=3, pos_threshold=0.9, neg_threshold=0.1, max_negatives=2),
        step4=replace(dual_train, hard_negatives_per_question=1),
        init_step3="previous",
        init_step4="previous",
        num_threads=2,
        freeze_word_embeddings=True,
    )


def gpu_preset() -> PipelineConfig:
    """One GPU, the paper's recipe at the scale of a small training set (SQuAD's 3,472 questions).

    Against the paper: batch 128 (the paper's 4,096 would be one optimiser step per epoch here) for
    5 epochs per dual-encoder, passages up to 256 tokens (SQuAD paragraphs are often longer than
    128), and the cross-encoder recipe that learned on the CPU (one negative from M_D0's top-100 with
    answer-bearing paragraphs excluded plus one random negative, lr 1e-4; docs/PIPELINE.md), for two
    epochs at the paper's 384 tokens. Denoising and augmentation score the top-50 as in the paper,
    with 4 hard negatives per question; M_D1 and M_D2 restart from the base model. bf16 autocast.
    """
    dual_train = DualTrainConfig(
        epochs=5,
        batch_size=128,
        learning_rate=3e-5,
        hard_negatives_per_question=0,
        mixed_precision=True,
        temperature=0.05,
    )
    return PipelineConfig(
        preset="gpu",
        dual=DualEncoderConfig(query_max_length=32, passage_max_length=256),
        cross=CrossEncoderConfig(max_length=384),
        step1=dual_train,
        ce_sampling=CrossSamplingConfig(
            top_k=100, negatives_per_positive=1, random_negatives_per_positive=1, exclude_answer_negatives=True
        ),
        step2=CrossTrainConfig(
            epochs=2, batch_size=32, learning_rate=1e-4, negatives_per_positive=2, mixed_precision=True
        ),
        denoise=DenoiseConfig(top_k=50, neg_threshold=0.1, num_negatives=4, fill_depth=200),
        step3=replace(dual_train, hard_negatives_per_question=4),
        augment=AugmentConfig(top_k=50, pos_threshold=0.9, neg_threshold=0.1, max_negatives=4),
        step4=replace(dual_train, hard_negatives_per_question=4),
        init_step3="base",
        init_step4="base",
        ce_batch_size=256,
    )


def tiny_preset() -> PipelineConfig:
    """Tests: a handful of optimisation steps, shallow depths, short inputs."""
    dual_train = DualTrainConfig(
        epochs=1, batch_size=8, learning_rate=1e-4, hard_negatives_per_question=0, temperature=0.05, max_steps=8
    )
    return PipelineConfig(
        preset="tiny",
        dual=DualEncoderConfig(query_max_length=16, passage_max_length=48),
        cross=CrossEncoderConfig(max_length=64),
        step1=dual_train,
        ce_sampling=CrossSamplingConfig(top_k=5, negatives_per_positive=1),
        step2=CrossTrainConfig(
            epochs=1, batch_size=8, learning_rate=1e-4, negatives_per_positive=1, calibration_fraction=0.25, max_steps=8
        ),
        denoise=DenoiseConfig(top_k=4, num_negatives=2, fill_depth=10),
        step3=replace(dual_train, hard_negatives_per_question=1, max_steps=4),
        augment=AugmentConfig(top_k=4, max_negatives=2),
        step4=replace(dual_train, hard_negatives_per_question=1, max_steps=4),
        init_step3="previous",
        init_step4="previous",
        eval_k=20,
        ce_batch_size=16,
        freeze_word_embeddings=True,
        min_ce_auc=0.0,  # 8 steps of a truncated model cannot reach a meaningful AUC; tests set it when they check it
    )


PRESETS = {"tiny": tiny_preset, "cpu": cpu_preset, "gpu": gpu_preset, "paper": paper_preset}


def preset(name: str, **overrides) -> PipelineConfig:
    """A preset by name, with top-level fields replaced (e.g. `extra_unlabeled=(...)`)."""
    try:
        config = PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
    return replace(config, **overrides)


def with_base_model(config: PipelineConfig, model: str) -> PipelineConfig:
    """Both towers and the cross-encoder start from `model` (a directory or hub id)."""
    return replace(config, dual=replace(config.dual, model=model), cross=replace(config.cross, model=model))


def with_step_overrides(
    config: PipelineConfig,
    cross_max_length: int = 0,
    pos_threshold: float | None = None,
    pos_precision_target: float = 0.0,
    cross_loss: str = "",
    pos_threshold_grid: tuple[float, ...] = (),
    inverse_cloze: int = 0,
    inverse_cloze_scope: str = "",
    cross_inverse_cloze: int = 0,
    passage_max_length: int = 0,
    cross_bm25_negatives: int = 0,
) -> PipelineConfig:
    """The command-line overrides `pipeline run` and `ablation` share (0 / None / "" = keep the
    preset's): the cross-encoder's tokens per pair, step 4's positive threshold, the dev precision
    that chooses that threshold instead (`AugmentConfig.pos_precision_target`), step 2's loss
    (`CrossTrainConfig.loss`), the thresholds that choice may pick from (`pos_threshold_grid`) and
    step 1's inverse-cloze pseudo-queries per passage and their scope (`InverseClozeConfig`), and
    step 2's (`CrossSamplingConfig.inverse_cloze`, the same scope), the dual-encoders' passage
    tokens (`DualEncoderConfig.passage_max_length`) and step 2's BM25 negatives per positive
    (`CrossSamplingConfig.bm25_negatives_per_positive`)."""
    if cross_loss:
        config = replace(config, step2=replace(config.step2, loss=cross_loss))
    if cross_max_length:
        config = replace(config, cross=replace(config.cross, max_length=cross_max_length))
    if pos_threshold is not None:
        config = replace(config, augment=replace(config.augment, pos_threshold=pos_threshold))
    if pos_precision_target:
        config = replace(config, augment=replace(config.augment, pos_precision_target=pos_precision_target))
    if pos_threshold_grid:
        config = replace(config, augment=replace(config.augment, pos_threshold_grid=tuple(pos_threshold_grid)))
    if inverse_cloze:
        config = replace(config, inverse_cloze=replace(config.inverse_cloze, per_passage=inverse_cloze))
    if inverse_cloze_scope:
        config = replace(config, inverse_cloze=replace(config.inverse_cloze, scope=inverse_cloze_scope))
    if cross_inverse_cloze:
        config = replace(config, ce_sampling=replace(config.ce_sampling, inverse_cloze=cross_inverse_cloze))
    if passage_max_length:
        config = replace(config, dual=replace(config.dual, passage_max_length=passage_max_length))
    if cross_bm25_negatives:
        config = replace(
            config, ce_sampling=replace(config.ce_sampling, bm25_negatives_per_positive=cross_bm25_negatives)
        )
    return config
