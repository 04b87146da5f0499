"""`python -m engine bench [--quick]`: speed, memory and scale, each side by side with its baseline.

Runs the sections of engine/bench_speed.py (passage encoding, cross-encoder scoring, int8
quality, query latency, training) and engine/bench_scale.py (index search at 10k-1M vectors,
the app through its API, the pipeline's wall time) in one process run, and writes to `--output`
(default bench-out/):

- `bench.json`  machine, settings, every number of every section (min/median of repeats, ratios);
- `bench.md`    one Markdown table (measurement | ours | baseline | ratio | goal | met) + machine;
- `*.png`       plots (ratios against the 1.0x / 1.8x goals, index speed and recall vs size,
                query latency by stage).

Timings on a shared machine are noisy: each side is repeated alternately with its baseline and
the ratio of medians is reported, never a single run. `--quick` uses small sizes (minutes, not
an hour) and says so in every row it shrinks. Documented in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from engine.bench_context import SECTIONS, BenchConfig, BenchContext, machine_info
from engine.bench_timing import Row, Section

log = logging.getLogger(__name__)


def section_functions() -> dict:
    from engine import bench_scale, bench_speed

    return {
        "encode": bench_speed.encode_section,
        "cross": bench_speed.cross_section,
        "quality": bench_speed.quality_section,
        "latency": bench_speed.latency_section,
        "train": bench_speed.train_section,
        "index": bench_scale.index_section,
        "app": bench_scale.app_section,
        "pipeline": bench_scale.pipeline_section,
    }


@dataclass(frozen=True)
class BenchReport:
    config: BenchConfig
    machine: dict
    started: str
    sections: list[Section]

    @property
    def rows(self) -> list[Row]:
        return [r for s in self.sections for r in s.rows]

    def to_dict(self) -> dict:
        return {
            "started": self.started,
            "machine": self.machine,
            "config": asdict(self.config),
            "rows": [r.to_dict() for r in self.rows],
            "row_sections": [{"section": s.name, **r.to_dict()} for s in self.sections for r in s.rows],
            "sections": {s.name: {**s.data, "section_seconds": round(s.seconds, 1)} for s in self.sections},
        }


def load_report(path: str | Path) -> BenchReport:
    """A report read back from a bench.json (to merge runs made in separate processes)."""
    doc = json.loads(Path(path).read_text())
    config = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["config"].items()})
    by_section: dict[str, list[Row]] = {}
    for r in doc.get("row_sections", []):
        by_section.setdefault(r["section"], []).append(Row(**{k: v for k, v in r.items() if k != "section"}))
    sections = [
        Section(
            name,
            {k: v for k, v in data.items() if k != "section_seconds"},
            by_section.get(name, []),
            data.get("section_seconds", 0.0),
        )
        for name, data in doc["sections"].items()
    ]
    return BenchReport(config, doc["machine"], doc["started"], sections)


def merge_reports(reports: list[BenchReport]) -> BenchReport:
    """Sections of several reports in order; a later section of the same name replaces an earlier one."""
    by_name: dict[str, Section] = {}
    for rep in reports:
        for s in rep.sections:
            by_name[s.name] = s
    first = reports[0]
    return BenchReport(first.config, first.machine, first.started, list(by_name.values()))


def run_bench(
    config: BenchConfig, context: BenchContext | None = None, on_section: Callable[[BenchReport], None] | None = None
) -> BenchReport:
    """Run the configured sections in order; a failing section is recorded, not fatal.

    `on_section(partial_report)` is called after each section (the CLI writes the outputs then,
    so a long run that is interrupted keeps what it measured)."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    ctx = context or BenchContext(config)
    functions = section_functions()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = machine_info()
    sections = []
    for name in config.sections:
        log.info("bench section %s ...", name)
        t0 = time.perf_counter()
        try:
            section = functions[name](ctx)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others' numbers
            log.exception("bench section %s failed", name)
            section = Section(name, {"error": f"{type(e).__name__}: {e}"}, [Row(f"{name} (FAILED)", str(e)[:200])])
        sections.append(replace(section, seconds=time.perf_counter() - t0))
        log.info("bench section %s done in %.1f s", name, sections[-1].seconds)
        if on_section is not None:
            on_section(BenchReport(config, machine, started, list(sections)))
    return BenchReport(config, machine, started, sections)


# --- outputs -------------------------------------------------------------------------------


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: BenchReport) -> str:
    m = report.machine
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}, {m['memory_gb']} GB RAM; "
        f"torch {m['versions']['torch']}, sentence-transformers {m['versions']['sentence_transformers']}, "
        f"faiss {m['versions']['faiss']}. Run {report.started}"
        + (" with --quick (small sizes)." if report.config.quick else "."),
        "",
        "| measurement | ours | baseline (same run) | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:,.2f}×"
        met = {True: "yes", False: "**no**", None: "—"}[r.met]
        lines.append(
            f"| {_cell(r.measurement)} | {_cell(r.ours)} | {_cell(r.baseline)} | {ratio} | {_cell(r.goal)} | {met} |"
        )
    lines.append("")
    lines.append("Ratio = baseline median time / ours median time over alternated repeats (> 1 = ours faster).")
    return "\n".join(lines) + "\n"


def plots(report: BenchReport, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rated = [r for r in report.rows if r.ratio is not None and "latency" not in r.measurement]
    if rated:
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.5 * len(rated)))
        ax.barh(
            [r.measurement[:60] for r in rated],
            [r.ratio for r in rated],
            color=["tab:green" if r.met else "tab:red" for r in rated],
        )
        for x in (1.0, 1.8, 10.0):
            ax.axvline(x, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("speed ratio vs baseline (log; dashed: 1.0×, 1.8×, 10× goals)")
        ax.invert_yaxis()
        fig.tight_layout()
        written.append(out / "ratios.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    sec = {s.name: s.data for s in report.sections}
    if "sizes" in sec.get("index", {}):
        sizes = sec["index"]["sizes"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        ns = [s["vectors"] for s in sizes]
        a1.plot(ns, [s["exact"]["ms_per_query"] for s in sizes], "o-", label="Flat (exact)")
        factories = sorted({a["factory"] for s in sizes for a in s["approximate"]})
        for f in factories:
            pts = [(s["vectors"], a) for s in sizes for a in s["approximate"] if a["factory"] == f and a["sweep"]]
            best = [(n, a["best_at_recall_0.95"] or max(a["sweep"], key=lambda x: x["recall@10"])) for n, a in pts]
            a1.plot(
                [n for n, _ in best], [b["ms_per_query"] for _, b in best], "o-", label=f"{f} (best at recall ≥ 0.95)"
            )
            a2.plot([n for n, _ in best], [b["recall@10"] for _, b in best], "o-", label=f)
        a1.set(xscale="log", yscale="log", xlabel="vectors", ylabel="ms / query (batched)", title="search time")
        a2.set(xscale="log", xlabel="vectors", ylabel="recall@10 vs exact", title="recall")
        a2.axhline(0.95, color="grey", ls="--", lw=0.8)
        a1.legend(fontsize=7)
        a2.legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "index.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    lat = sec.get("latency", {})
    if "fp32" in lat:
        fig, ax = plt.subplots(figsize=(6, 3))
        labels = [k for k in ("fp32", "onnx_fp32", "int8") if k in lat]
        left = [0.0] * len(labels)
        for stage in ("encode", "search", "rerank"):
            vals = [lat[k]["stages_p50_ms"][stage] for k in labels]
            ax.barh(labels, vals, left=left, label=stage)
            left = [a + b for a, b in zip(left, vals)]
        ax.axvline(150, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("ms per query (p50 per stage; dashed: 150 ms goal)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "latency.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def write_report(report: BenchReport, output: str | Path) -> dict[str, Path]:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "bench.json", "md": out / "bench.md"}
    files["json"].write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    text = markdown(report)
    if report.config.ablation:
        abl = sorted(Path(report.config.ablation).glob("*.md"))
        if abl:
            text += "\n## Quality (from the ablation, " + str(abl[0]) + ")\n\n" + abl[0].read_text()
    files["md"].write_text(text)
    for p in plots(report, out):
        files[p.stem] = p
    return files


# --- command line ----------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    overrides = {
        k: v
        for k, v in {
            "data": args.data,
            "model": args.model,
            "cross_encoder": args.cross_encoder,
            "output": args.output,
            "threads": args.threads,
            "repeats": args.repeats,
            "pipeline_run": args.pipeline_run,
            "ablation": args.ablation,
            "int8_backend": args.int8_backend,
            "sections": tuple(args.only.split(",")) if args.only else None,
        }.items()
        if v is not None
    }
    unknown = set(overrides.get("sections", ())) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.skip:
        overrides["sections"] = tuple(s for s in overrides.get("sections", SECTIONS) if s not in args.skip.split(","))
    config = BenchConfig.quick_preset(**overrides) if args.quick else BenchConfig(**overrides)
    earlier = [load_report(p) for p in args.merge.split(",")] if args.merge else []

    def combined(partial: BenchReport) -> BenchReport:
        return merge_reports([*earlier, partial]) if earlier else partial

    report = combined(run_bench(config, on_section=lambda partial: write_report(combined(partial), config.output)))
    files = write_report(report, config.output)
    print(markdown(report))
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="speed, memory and scale benchmarks side by side with baselines (JSON + Markdown + PNG)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes); results say so")
    p.add_argument("--output", default=None, help="output directory (default bench-out/)")
    p.add_argument(
        "--data", default=None, help="BEIR directory (default: ../shared/data/squad-v1.1-dev, else the demo sample)"
    )
    p.add_argument("--model", default=None, help="dual-encoder directory (default: packaged all-MiniLM-L6-v2)")
    p.add_argument(
        "--cross-encoder", default=None, help="cross-encoder directory (default: MiniLM with a fresh head, speed only)"
    )
    p.add_argument("--only", default=None, help=f"comma-separated sections to run ({','.join(SECTIONS)})")
    p.add_argument("--skip", default=None, help="comma-separated sections to skip")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side")
    p.add_argument("--pipeline-run", default=None, help="finished pipeline run directory: report its per-step times")
    p.add_argument("--ablation", default=None, help="ablation output directory: append its quality table")
    p.add_argument(
        "--int8-backend",
        choices=["auto", "onnx", "torch"],
        default=None,
        help="how the int8 models run: onnx (ONNX Runtime), torch (PyTorch dynamic), "
        "auto = what measured best per model (engine.quantize.AUTO_BACKEND: ONNX Runtime for both)",
    )
    p.add_argument(
        "--merge",
        default=None,
        metavar="JSON[,JSON]",
        help="bench.json files of earlier runs (e.g. the index section run in another process) to merge; "
        "sections run now replace theirs",
    )
    p.set_defaults(func=cmd_bench)
