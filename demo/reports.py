"""Handlers of the Audit and Pipeline tabs: tables from the store and the run, plots, exports.

The audit itself is `annotations.audit.audit_report`; this module only picks the run, turns the
report into display tables, and draws the two plots (threshold sweep, calibration curve) with
matplotlib. Pipeline tables come from the run directory's `metrics.json` files and its ablation
outputs; `start_pipeline` runs steps in the background through `engine.pipeline`.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from annotations import audit as store_audit  # noqa: E402
from annotations import export as store_export  # noqa: E402
from annotations.errors import AnnotationError, UnknownIdError  # noqa: E402
from demo.handlers import AppError, run_id  # noqa: E402
from demo.services import PIPELINE_JOB, Services  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditView:
    message: str
    precision: pd.DataFrame
    confusion: pd.DataFrame
    sweep: pd.DataFrame
    agreement: pd.DataFrame
    annotators: pd.DataFrame
    sweep_plot: object | None  # matplotlib Figure
    calibration_plot: object | None


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index() if frame.index.name else frame
    return frame.round(3) if not frame.empty else frame


def _sweep_figure(table: pd.DataFrame, neg: float, pos: float):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if not table.empty:
        ax.plot(table["threshold"], table["precision_below"], label="precision of 'irrelevant' (p < t)")
        ax.plot(table["threshold"], table["precision_above"], label="precision of 'relevant' (p ≥ t)")
        ax.plot(table["threshold"], table["recall_above"], "--", label="recall of relevant (p ≥ t)")
    for t, name in ((neg, "recommended neg"), (pos, "recommended pos")):
        if not math.isnan(t):
            ax.axvline(t, color="grey", linestyle=":", label=f"{name} = {t:.2f}")
    ax.set_xlabel("cross-encoder probability threshold t")
    ax.set_ylim(0, 1.02)
    ax.set_title("Threshold sweep against human labels")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _calibration_figure(table: pd.DataFrame, brier: float):
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    if not table.empty:
        used = table[table["n"] > 0]
        ax.plot(used["mean_prob"], used["frac_relevant"], "o-", label="cross-encoder")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction judged relevant")
    ax.set_title(f"Calibration (Brier {brier:.3f})" if not math.isnan(brier) else "Calibration (no labels yet)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def audit(services: Services) -> AuditView:
    empty = pd.DataFrame()
    try:
        report = store_audit.audit_report(services.store, run_id(services))
    except UnknownIdError as e:
        return AuditView(
            f"No audit yet: {e}. Import a pipeline run (--run) and judge some items.", *[empty] * 5, None, None
        )
    except AnnotationError as e:
        raise AppError(str(e)) from None
    sweep = report.sweep

    def threshold(value: float) -> str:
        return "— (not enough labels yet)" if math.isnan(value) else f"{value:.2f}"

    message = " ".join(report.notes) + (
        f" From {sweep.n_items} sampled labels, human labels recommend a negative threshold of "
        f"{threshold(sweep.recommended_neg_threshold)} and a positive threshold of "
        f"{threshold(sweep.recommended_pos_threshold)}."
    )
    table = sweep.table
    every = table[(table["threshold"] * 100).round().astype(int) % 5 == 0] if not table.empty else table
    view = AuditView(
        message,
        _rounded(report.precision),
        _rounded(report.confusion),
        _rounded(every),
        _rounded(report.agreement),
        _rounded(report.annotators),
        _sweep_figure(table, sweep.recommended_neg_threshold, sweep.recommended_pos_threshold),
        _calibration_figure(report.calibration.table, report.calibration.brier),
    )
    plt.close("all")  # the figures are kept by the view; pyplot's registry must not grow per call
    return view


def export(services: Services, kind: str) -> str:
    """Write an export of the annotations to a temporary file; returns its path."""
    out_dir = Path(tempfile.mkdtemp(prefix="rocketqa-export-"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        if kind == "qrels":
            result = store_export.export_qrels(services.store, out_dir / f"annotations-{stamp}.qrels")
        elif kind == "jsonl":
            result = store_export.export_jsonl(services.store, out_dir / f"annotations-{stamp}.jsonl")
        else:
            raise AppError(f"unknown export kind {kind!r}")
    except AnnotationError as e:
        raise AppError(str(e)) from None
    return result.path


# --- Pipeline -----------------------------------------------------------------------------


def _flatten(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
    return out


def step_table(services: Services) -> pd.DataFrame:
    """One row per pipeline step: done or not, and its metrics (nested keys flattened)."""
    if services.run is None:
        return pd.DataFrame(columns=["step", "done"])
    rows = [{**_flatten(s.metrics), "step": s.step, "done": s.done} for s in services.run.steps()]
    frame = pd.DataFrame(rows)
    keep = ["step", "done"] + [c for c in frame.columns if _headline(c) and frame[c].notna().any()]
    return frame[keep[:30]].round(3)


_HEADLINE = re.compile(r"^(dev|test)\.(MRR@10|R@1|R@5|R@20|Acc@5|Acc@20)$|^seconds|^train\.seconds$|^decisions\.")


def _headline(column: str) -> bool:
    """The metrics shown per step: retrieval quality, times, the CE's held-out quality, decision counts."""
    return bool(_HEADLINE.search(column)) or ("heldout" in column and column.endswith(("auc", "accuracy")))


def ablation_view(services: Services) -> tuple[pd.DataFrame, str | None, str]:
    """(ablation table, plot path, note) from the run directory."""
    if services.run is None:
        return pd.DataFrame(), None, "No pipeline run loaded (start the app with --run DIR)."
    data, png, markdown = services.run.ablation()
    if data is None:
        return pd.DataFrame(), None, "No ablation results in this run directory."
    rows = data.get("rows", data) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return pd.DataFrame([_flatten(data)]).round(2), (str(png) if png else None), ""
    return pd.DataFrame([_ablation_row(r) for r in rows]).round(2), (str(png) if png else None), ""


def _ablation_row(row: dict) -> dict:
    """One table row: the metrics as columns (engine.ablation nests them under "metrics"), the
    seed-to-seed spread as "± metric" columns when there is one, nested rest flattened."""
    out: dict = {}
    for key, value in row.items():
        if key == "metrics" and isinstance(value, dict):
            out.update(_flatten(value))
        elif key == "spread" and isinstance(value, dict):
            out.update({f"± {k}": v for k, v in _flatten(value).items()})
        elif isinstance(value, dict):
            out.update(_flatten(value, f"{key}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def start_pipeline(services: Services, steps: str = "1,2,3,4", preset: str = "cpu"):
    """Run pipeline steps on the loaded data into the loaded run directory (or a new one), in the background.

    When it finishes, the app switches to the run: its latest dual-encoder (index from the cache),
    its cross-encoder, and its decisions (imported into the annotation store).
    """
    from engine import pipeline
    from engine.config import PRESETS, with_base_model
    from engine.config import preset as make_preset

    if services.jobs.state(PIPELINE_JOB).running:
        return services.jobs.state(PIPELINE_JOB)
    if preset not in PRESETS:
        raise AppError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        wanted = sorted({int(s) for s in str(steps).split(",") if s.strip()})
    except ValueError:
        raise AppError(f"steps must be numbers 1-4 separated by commas, got {steps!r}") from None
    if not wanted or not set(wanted) <= {1, 2, 3, 4}:
        raise AppError(f"steps must be among 1, 2, 3, 4, got {steps!r}")
    root = Path(services.config.cache) if services.config.cache else Path(tempfile.gettempdir())
    output = (
        services.run.dir
        if services.run is not None
        else root / f"app-run-{preset}-{services.dataset.corpus.fingerprint()}"
    )

    def job(progress):
        config = make_preset(preset)
        if services.config.model and Path(services.config.model).is_dir():
            config = with_base_model(config, services.config.model)  # start from the model the app serves
        run = pipeline.open_run(services.data_source, output, config, dataset=services.dataset, progress=progress)
        return pipeline.run_pipeline(run, wanted)

    def done(_results) -> None:
        use_run(services, output)

    return services.jobs.start(PIPELINE_JOB, job, on_done=done)


def use_run(services: Services, directory: str | Path) -> None:
    """Switch the app to a (finished) run directory: models, decisions, import into the store."""
    from demo.run import RunView
    from demo.services import start_decision_import
    from engine.cross_encoder import CrossEncoder
    from engine.retriever import build_retriever

    run = RunView(directory)
    services.run = run
    if run.dual_encoder_dir() is not None:
        retriever = build_retriever(
            services.dataset.corpus,
            model=str(run.dual_encoder_dir()),
            cache_root=services.config.cache or None,
            show_progress=False,
        )
        retriever.reranker = services.cross_encoder
        services.retriever = retriever
    if run.cross_encoder_dir() is not None:
        ce = CrossEncoder.load(run.cross_encoder_dir())
        if ce.is_trained:
            services.set_cross_encoder(ce)
    if run.decision_files():
        start_decision_import(services)
