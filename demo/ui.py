"""The Gradio app: `build_app(services) -> gr.Blocks` with five tabs, and `launch(app)`.

Tabs: Ask, Hard negatives, Annotate, Audit, Pipeline. The functions wired here only adapt
between Gradio components and the plain handlers in `demo.handlers`, `demo.negatives` and
`demo.reports` (which hold the logic and are unit-tested without a server); they load no model.

Scriptable endpoints (gradio_client, `api_name`): `ask` (question, k, mode -> hits with dense and
cross-encoder scores), `judge` (annotator, question_id, passage_id, grade -> judgment id),
`next_item`, `annotate`, `undo`, `hard_negatives`, `decision_counts`, `audit`, `export`,
`pipeline_status`, `train_cross_encoder`, `status`. Per-slot buttons of the Ask tab are private.

Keyboard: 0-3 grade, s skips, u undoes, in the Annotate tab (the current item) and in the Ask
tab (the selected passage); keys typed into a text field are left alone (`KEYBOARD_JS`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gradio as gr

from demo import handlers, negatives, reports
from demo.config import MAX_K
from demo.handlers import AppError
from demo.jobs import JobState
from demo.render import CSS, esc, hit_card, item_card, notice, progress_bar
from demo.services import CE_JOB, IMPORT_JOB, PIPELINE_JOB, Services, estimate_ce_minutes, start_cross_encoder_training

log = logging.getLogger(__name__)

GUIDELINES = """**Guidelines** — does the passage answer the question?
**3** perfectly relevant: it states the answer. **2** highly relevant: the answer follows from it with little effort.
**1** related: on the topic, but no answer. **0** irrelevant. **s** skip when you cannot tell (never counted as 0).
Judge the passage alone, not the machine's suggestion. Keys: **0 1 2 3**, **s** skip, **u** undo."""

KEYBOARD_JS = """
() => {
  if (window.__rqaKeys) { return; }
  window.__rqaKeys = true;
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    const t = e.target;
    const tag = ((t && t.tagName) || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) { return; }
    const k = (e.key || '').toLowerCase();
    if (!['0', '1', '2', '3', 's', 'u'].includes(k)) { return; }
    for (const prefix of ['ann-key-', 'ask-key-']) {
      const b = document.getElementById(prefix + k);
      if (b && b.offsetParent !== null) { e.preventDefault(); b.click(); return; }
    }
  });
}
"""


def _fail(e: Exception) -> gr.Error:
    return gr.Error(str(e), print_exception=False)


def _identity(services: Services, name: str | None, profile: Any) -> str:
    """The annotator: the Hugging Face user on a Space, the typed name locally; '' when none."""
    if services.config.on_space:
        return getattr(profile, "username", "") or ""
    return (name or "").strip()


def _job_html(state: JobState, what: str) -> str:
    if state.status == "running":
        eta = ""
        if state.fraction >= 0.05:
            eta = f", about {state.elapsed * (1 - state.fraction) / state.fraction / 60:.1f} min left"
        return progress_bar(state.fraction, f"{what}: {state.message} ({state.elapsed:.0f} s{eta})")
    if state.status == "failed":
        return notice(f"{what} failed: {state.error}", "error")
    if state.status == "done":
        return notice(f"{what} finished in {state.elapsed:.0f} s.")
    return ""


def ce_status_html(services: Services) -> str:
    state = services.jobs.state(CE_JOB)
    if services.ce_trained:
        prov = services.cross_encoder.config.provenance or {}
        where = prov.get("upstream") or services.cross_encoder.config.model
        kind = f", served as {services.int8_backend} int8" if services.config.int8_cross_encoder else ""
        kind = ", served by ONNX Runtime in fp32" if services.config.onnx_cross_encoder else kind
        html = notice(f"Cross-encoder: trained ({where}{kind}). Probabilities and re-ranking are shown.")
        check = prov.get("app_check") or {}
        if check:
            weak = check["reranked_mrr"] < check["dense_mrr"]
            text = (
                f"Checked on {check['questions']} {check['split']} questions: MRR@{check['k']} of the dense "
                f"top-{check['k']} {check['dense_mrr']:.3f}, re-ranked by this cross-encoder {check['reranked_mrr']:.3f}."
            )
            if weak:
                text += (
                    " It re-ranks WORSE than the retriever alone: a weak model (little data, few steps); "
                    "read its probabilities with caution."
                )
            html += notice(text, "warn" if weak else "info")
        return html + _job_html(state, "Training")
    if state.running:
        return notice(
            "No trained cross-encoder yet — training one now; it is used as soon as it is done.", "warn"
        ) + _job_html(state, "Training")
    minutes = estimate_ce_minutes(services.config)
    return notice(
        f"No trained cross-encoder yet — train one (≈{minutes:.0f} min on this CPU). Until then no cross-encoder "
        "probabilities are shown: an untrained head's scores mean nothing.",
        "warn",
    ) + _job_html(state, "Training")


def header_html(services: Services) -> str:
    ds = services.dataset
    parts = [
        f"<b>Data</b>: {len(ds.corpus):,} passages, {len(ds.questions):,} questions from <code>{esc(services.data_source)}</code>"
        + (f" · <b>run</b> <code>{esc(services.run.run_id)}</code>" if services.run else "")
        + f" · started in {services.timings.get('total_s', 0):.1f} s",
    ]
    html = "<div class='header'>" + " ".join(parts) + "</div>"
    html += notice(services.db.notice, "warn" if services.db.ephemeral else "info")
    html += "".join(notice(n, "warn") for n in services.notices if n != services.db.notice)
    return html


# --- tabs ---------------------------------------------------------------------------------


def _ask_tab(services: Services, annotator: gr.Textbox) -> None:
    ce_status = gr.HTML(ce_status_html(services), elem_id="ce-status")
    train = gr.Button("Train a cross-encoder", visible=not services.ce_trained, elem_id="train-ce")
    with gr.Row():
        question = gr.Textbox(
            label="Question", placeholder="Ask something about the corpus…", elem_id="ask-question", scale=4
        )
        k = gr.Slider(1, MAX_K, value=services.config.default_k, step=1, label="k", elem_id="ask-k", scale=1)
        mode = gr.Radio(
            services.retriever.modes, value=services.retriever.modes[0], label="Retrieval", elem_id="ask-mode", scale=1
        )
    go = gr.Button("Ask", variant="primary", elem_id="ask-button")
    summary = gr.HTML(elem_id="ask-summary")
    hits_state = gr.State([])
    qid_state = gr.State("")
    qtext_state = gr.State("")  # the cleaned question of the shown hits (for the highlight step)
    with gr.Row():
        selected = gr.Radio([], label="Judge the selected passage (keys 0-3, s)", elem_id="ask-select", scale=3)
        key_buttons = {
            g: gr.Button(str(g), size="sm", elem_id=f"ask-key-{g}", min_width=40, scale=0)
            for g in ("0", "1", "2", "3", "s")
        }
    judged = gr.HTML(elem_id="ask-judged")
    groups, cards, slot_buttons = [], [], []
    for i in range(MAX_K):
        with gr.Group(visible=False) as group:
            card = gr.HTML(elem_id=f"hit-{i}")
            with gr.Row():
                buttons = [
                    gr.Button(f"{g}: {handlers.GRADE_NAMES[g][2:]}", size="sm", elem_id=f"hit-{i}-grade-{g}")
                    for g in range(4)
                ]
        groups.append(group)
        cards.append(card)
        slot_buttons.append(buttons)

    def show(question_text: str, k_value: float, mode_value: str):
        # the ranking first; the answer-bearing sentences follow in `highlight` (as costly again)
        try:
            result = handlers.ask(services, question_text, k_value, mode_value, highlight=False)
        except AppError as e:
            raise _fail(e) from None
        n = len(result.hits)
        order = handlers.order_label(services, mode_value, result.reranked)
        head = f"<div>{n} passages in {order}, {result.seconds * 1000:.0f} ms. Question id <code>{esc(result.question_id)}</code></div>"
        head += notice(result.notice, "warn") if result.notice else ""
        updates: list = [head, result.hits, result.question_id, result.question]
        choices = [(f"#{h['rank']} {h['passage_id']}", h["passage_id"]) for h in result.hits]
        updates.append(gr.update(choices=choices, value=choices[0][1] if choices else None))
        for i in range(MAX_K):
            updates.append(gr.update(visible=i < n))
        for i in range(MAX_K):
            updates.append(
                hit_card(result.hits[i], handlers.row_highlight(result.hits[i]), result.reranked) if i < n else ""
            )
        return updates

    def highlight(question_text: str, hits: list):
        if not hits or not question_text or not hits[0].get("ce_rank"):
            return [gr.skip()] * (1 + MAX_K)  # nothing to mark without a trained cross-encoder
        rows = handlers.add_highlights(services, question_text, [dict(h) for h in hits])
        cards_html = [hit_card(r, handlers.row_highlight(r), True) for r in rows]
        return [rows, *cards_html, *[gr.skip()] * (MAX_K - len(rows))]

    outputs = [summary, hits_state, qid_state, qtext_state, selected, *groups, *cards]
    for trigger in (go.click, question.submit):
        trigger(show, [question, k, mode], outputs, api_visibility="private").then(
            highlight, [qtext_state, hits_state], [hits_state, *cards], api_visibility="private"
        )

    def store_grade(name, profile, qid, pid, grade) -> str:
        try:
            jid = handlers.judge(services, _identity(services, name, profile), qid, pid, grade)
        except AppError as e:
            raise _fail(e) from None
        label = "skipped" if grade == "s" else f"grade {grade}"
        message = f"Stored judgment #{jid}: {label} for passage {pid} (question {qid})."
        gr.Info(message)  # a toast: visible wherever on the page the button was
        return notice(message)

    def slot_handler(i: int, grade: int):
        def judge_slot(name: str, hits: list, qid: str, profile: gr.OAuthProfile | None) -> str:
            if i >= len(hits):
                raise gr.Error("that result is no longer shown; ask again")
            return store_grade(name, profile, qid, hits[i]["passage_id"], grade)

        return judge_slot

    for i, buttons in enumerate(slot_buttons):
        for g, button in enumerate(buttons):
            button.click(slot_handler(i, g), [annotator, hits_state, qid_state], judged, api_visibility="private")

    def key_handler(grade: str):
        def judge_selected(name: str, qid: str, pid: str | None, profile: gr.OAuthProfile | None) -> str:
            if not pid:
                raise gr.Error("ask a question and select a passage first")
            return store_grade(name, profile, qid, pid, grade)

        return judge_selected

    for g, button in key_buttons.items():
        button.click(key_handler(g), [annotator, qid_state, selected], judged, api_visibility="private")

    def start_training():
        try:
            start_cross_encoder_training(services)
        except (ImportError, ValueError) as e:
            raise _fail(e) from None
        return ce_status_html(services), gr.update(visible=False)

    train.click(start_training, None, [ce_status, train], api_name="train_cross_encoder")
    timer = gr.Timer(2.0)
    timer.tick(
        lambda: (
            ce_status_html(services),
            gr.update(visible=not services.ce_trained and not services.jobs.state(CE_JOB).running),
        ),
        None,
        [ce_status, train],
        api_visibility="private",
        show_progress="hidden",
    )


def _negatives_tab(services: Services) -> tuple:
    gr.Markdown(
        "A training question, its gold passage, and what the pipeline decided for each passage of its dense top-k. "
        "Move the thresholds to see which decisions would change."
    )
    with gr.Row():
        search = gr.Textbox(label="Search questions", elem_id="neg-search", scale=2)
        choices = negatives.training_questions(services)
        pick = gr.Dropdown(
            choices,
            value=choices[0][1] if choices else None,
            label="Training question",
            elem_id="neg-question",
            scale=3,
        )
    with gr.Row():
        k = gr.Slider(5, 50, value=20, step=1, label="top-k (preview)")
        neg = gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="negative threshold (paper 0.1)", elem_id="neg-threshold")
        pos = gr.Slider(0.0, 1.0, value=0.9, step=0.01, label="positive threshold (paper 0.9)", elem_id="pos-threshold")
    head = gr.HTML(elem_id="neg-head")
    table = gr.Dataframe(label="Candidates", interactive=False, wrap=True, elem_id="neg-table")
    counts = gr.Dataframe(label="Decisions over the whole run", interactive=False, elem_id="neg-counts")

    def filter_questions(text: str):
        found = negatives.training_questions(services, text)
        return gr.update(choices=found, value=found[0][1] if found else None)

    def view(qid: str, k_value: float, neg_t: float, pos_t: float):
        try:
            return negatives.question_view(services, qid, int(k_value), neg_t, pos_t)
        except AppError as e:
            raise _fail(e) from None

    search.submit(filter_questions, search, pick, api_visibility="private")
    for trigger in (pick.change, k.release, neg.release, pos.release):
        trigger(view, [pick, k, neg, pos], [head, table], api_visibility="private")
    for trigger in (neg.release, pos.release):
        trigger(lambda a, b: negatives.decision_counts(services, a, b), [neg, pos], counts, api_visibility="private")

    def hard_negatives_api(question_id: str, neg_threshold: float = 0.1, pos_threshold: float = 0.9) -> list[dict]:
        """Candidates of a training question with recorded decisions and the decisions at these thresholds."""
        return _records(view(question_id, 20, neg_threshold, pos_threshold)[1])

    gr.api(hard_negatives_api, api_name="hard_negatives")
    return pick, k, neg, pos, head, table, counts, view


def _records(frame) -> list[dict]:
    return [{k: (None if v != v else v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _annotate_tab(services: Services, annotator: gr.Textbox) -> tuple:
    gr.Markdown(GUIDELINES, elem_id="guidelines")
    with gr.Row():
        blind = gr.Checkbox(value=True, label="Blind mode (hide the machine's suggestion)", elem_id="blind")
        load = gr.Button("Next item", elem_id="ann-next")
    item_html = gr.HTML(elem_id="ann-item")
    item_state = gr.State({})
    started = gr.State(0.0)
    with gr.Row():
        keys = {g: gr.Button(label, elem_id=f"ann-key-{g}") for g, label in (
            ("0", "0 irrelevant"), ("1", "1 related"), ("2", "2 highly relevant"), ("3", "3 perfectly relevant"),
            ("s", "skip (s)"), ("u", "undo (u)"),
        )}  # fmt: skip
    status = gr.HTML(elem_id="ann-status")

    def render_item(name: str, blind_mode: bool, profile: gr.OAuthProfile | None, message: str = ""):
        who = _identity(services, name, profile)
        if not who:
            return (
                notice("Enter your name above (or log in) to annotate: no identity, no write.", "warn"),
                {},
                0.0,
                message,
            )
        try:
            item, why = handlers.next_item(services, who)
        except AppError as e:
            raise _fail(e) from None
        mine, total = handlers.progress(services, who)
        progress = f"{message} {who}: {mine} of {total} (question, passage) pairs of the run judged."
        bar = progress_bar(mine / total, "your progress") if total else ""
        if item is None:
            return notice(why, "info"), {}, 0.0, notice(progress.strip()) + bar
        suggestion = (
            ""
            if blind_mode
            else f"{item.decision} (cross-encoder p = {item.ce_prob if item.ce_prob is not None else '–'}, dense rank {item.dense_rank})"
        )
        card = item_card(item.question_text, item.passage_title, item.passage_text, suggestion)
        return (
            card + f"<div class='stratum'>queue stratum: {esc(item.stratum)}</div>",
            item.__dict__,
            time.time(),
            notice(progress.strip()) + bar,
        )

    def grade_handler(grade: str):
        def grade_item(name: str, blind_mode: bool, item: dict, t0: float, profile: gr.OAuthProfile | None):
            who = _identity(services, name, profile)
            try:
                if grade == "u":
                    jid = handlers.undo(services, who)
                    message = f"Undid judgment #{jid}." if jid else "Nothing to undo."
                else:
                    seconds = max(0.0, time.time() - t0) if t0 else None
                    jid = handlers.judge_item(services, who, item, grade, seconds, blind_mode)
                    message = f"Stored judgment #{jid}."
            except AppError as e:
                raise _fail(e) from None
            return render_item(name, blind_mode, profile, message)

        return grade_item

    outputs = [item_html, item_state, started, status]
    load.click(render_item, [annotator, blind], outputs, api_name="next_item")
    for g, button in keys.items():
        button.click(grade_handler(g), [annotator, blind, item_state, started], outputs, api_visibility="private")
    return load, render_item, outputs, blind


def _audit_tab(services: Services) -> tuple:
    refresh = gr.Button("Refresh audit", elem_id="audit-refresh")
    message = gr.Markdown(elem_id="audit-message")
    precision = gr.Dataframe(label="Precision per machine decision (random sample, Wilson interval)", interactive=False)
    confusion = gr.Dataframe(label="Machine decision × human grade", interactive=False)
    with gr.Row():
        sweep_plot = gr.Plot(label="Threshold sweep")
        calibration_plot = gr.Plot(label="Calibration")
    sweep = gr.Dataframe(label="Threshold sweep", interactive=False)
    agreement = gr.Dataframe(label="Agreement (Cohen's kappa)", interactive=False)
    annotators = gr.Dataframe(label="Annotators: counts, speed, progress", interactive=False)
    with gr.Row():
        qrels = gr.Button("Export TREC qrels", elem_id="export-qrels")
        jsonl = gr.Button("Export JSONL", elem_id="export-jsonl")
    file = gr.File(label="Export", elem_id="export-file")

    def show():
        try:
            v = reports.audit(services)
        except AppError as e:
            raise _fail(e) from None
        return v.message, v.precision, v.confusion, v.sweep_plot, v.calibration_plot, v.sweep, v.agreement, v.annotators

    outputs = [message, precision, confusion, sweep_plot, calibration_plot, sweep, agreement, annotators]
    refresh.click(show, None, outputs, api_name="audit")

    def export(kind: str) -> str:
        try:
            return reports.export(services, kind)
        except AppError as e:
            raise _fail(e) from None

    qrels.click(lambda: export("qrels"), None, file, api_visibility="private")
    jsonl.click(lambda: export("jsonl"), None, file, api_visibility="private")
    gr.api(export, api_name="export")
    return refresh, show, outputs


def pipeline_status_html(services: Services) -> str:
    return _job_html(services.jobs.state(PIPELINE_JOB), "Pipeline") + _job_html(
        services.jobs.state(IMPORT_JOB), "Decision import"
    )


def _pipeline_tab(services: Services) -> None:
    note = "" if services.run else "No pipeline run loaded: start the app with `--run DIR` to see a run's metrics."
    gr.Markdown("Per-step metrics of the run, its ablation, and a background runner. " + note)
    steps = gr.Dataframe(
        reports.step_table(services), label="Steps (metrics.json)", interactive=False, elem_id="pipeline-steps"
    )
    table, png, ablation_note = reports.ablation_view(services)
    gr.Dataframe(table, label="Ablation", interactive=False)
    gr.Image(png, label="Ablation plot", visible=png is not None)
    if ablation_note:
        gr.Markdown(ablation_note)
    with gr.Row():
        which = gr.CheckboxGroup(["1", "2", "3", "4"], value=["1", "2", "3", "4"], label="Steps to run")
        preset = gr.Dropdown(["tiny", "cpu", "gpu", "paper"], value="cpu", label="Preset")
        start = gr.Button("Start in the background", elem_id="pipeline-start")
    status = gr.HTML(pipeline_status_html(services), elem_id="pipeline-status")

    def run(selected: list[str], preset_name: str):
        try:
            reports.start_pipeline(services, ",".join(selected), preset_name)
        except (AppError, ImportError, ValueError, TypeError) as e:
            raise _fail(e) from None
        return pipeline_status_html(services)

    start.click(run, [which, preset], status, api_name="start_pipeline")
    timer = gr.Timer(2.0)
    timer.tick(
        lambda: (pipeline_status_html(services), reports.step_table(services)),
        None,
        [status, steps],
        api_visibility="private",
        show_progress="hidden",
    )

    def pipeline_status_api() -> str:
        return pipeline_status_html(services)

    gr.api(pipeline_status_api, api_name="pipeline_status")


# --- the app ------------------------------------------------------------------------------


def build_app(services: Services) -> gr.Blocks:
    """The app over already-loaded services (this loads no model)."""
    with gr.Blocks(title="RocketQA workbench", analytics_enabled=False) as app:
        gr.Markdown("## RocketQA workbench — dense retrieval, denoised hard negatives, human audit")
        gr.HTML(header_html(services), elem_id="header")
        with gr.Row():
            annotator = gr.Textbox(
                label="Annotator (your name; needed to judge)",
                elem_id="annotator",
                visible=not services.config.on_space,
                scale=3,
            )
            if services.config.on_space:
                gr.LoginButton()
        with gr.Tabs():
            with gr.Tab("Ask", id="ask", elem_id="tab-ask"):
                _ask_tab(services, annotator)
            with gr.Tab("Hard negatives", id="negatives", elem_id="tab-negatives") as neg_tab:
                pick, k, neg, pos, head, table, counts, view = _negatives_tab(services)
            with gr.Tab("Annotate", id="annotate", elem_id="tab-annotate") as ann_tab:
                _load, render_item, ann_outputs, blind = _annotate_tab(services, annotator)
            with gr.Tab("Audit", id="audit", elem_id="tab-audit") as audit_tab:
                _refresh, show_audit, audit_outputs = _audit_tab(services)
            with gr.Tab("Pipeline", id="pipeline", elem_id="tab-pipeline"):
                _pipeline_tab(services)
        neg_tab.select(view, [pick, k, neg, pos], [head, table], api_visibility="private")
        neg_tab.select(
            lambda a, b: negatives.decision_counts(services, a, b), [neg, pos], counts, api_visibility="private"
        )
        ann_tab.select(render_item, [annotator, blind], ann_outputs, api_visibility="private")
        audit_tab.select(show_audit, None, audit_outputs, api_visibility="private")

        def ask_api(question: str, k: int = 5, mode: str = "dense", highlight: bool = True) -> dict:
            """Ranked hits for a question: dense score and rank, cross-encoder probability and rank, and
            (highlight=True) the sentence of each hit the cross-encoder finds most answer-bearing."""
            try:
                r = handlers.ask(services, question, k, mode, highlight=bool(highlight))
            except AppError as e:
                raise _fail(e) from None
            hits = r.hits
            return {"question_id": r.question_id, "question": r.question, "mode": r.mode, "reranked": r.reranked,
                    "order": handlers.order_label(services, r.mode, r.reranked),
                    "cross_encoder_trained": services.ce_trained, "notice": r.notice, "hits": hits}  # fmt: skip

        def judge_api(
            annotator: str, question_id: str, passage_id: str, grade: str, profile: gr.OAuthProfile | None = None
        ) -> int:
            """Store a judgment (grade 0-3 or 'skip'); returns the judgment id. On a Space the logged-in user is the annotator."""
            try:
                return handlers.judge(services, _identity(services, annotator, profile), question_id, passage_id, grade)
            except AppError as e:
                raise _fail(e) from None

        def status_api() -> dict:
            return {
                "data": services.data_source,
                "passages": len(services.dataset.corpus),
                "cross_encoder_trained": services.ce_trained,
                "cross_encoder_int8": services.config.int8_cross_encoder,
                "cross_encoder_int8_backend": services.int8_backend if services.config.int8_cross_encoder else None,
                "cross_encoder_onnx_fp32": services.config.onnx_cross_encoder,
                "training": services.jobs.state(CE_JOB).__dict__,
                "storage": services.db.notice,
                "ephemeral_storage": services.db.ephemeral,
                "timings": services.timings,
            }

        gr.api(ask_api, api_name="ask")
        gr.api(judge_api, api_name="judge", concurrency_limit=None)
        gr.api(status_api, api_name="status")
    app.queue(default_concurrency_limit=4)
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any):
    """Start the server with the app's CSS and keyboard shortcuts (Gradio 6 takes them in launch)."""
    return app.launch(server_name=host, server_port=port, css=CSS, js=KEYBOARD_JS, show_error=True, **kwargs)
