#!/usr/bin/env bash
# The `gpu` preset on one GPU, in one call: the CUDA tests, the four steps with denoised and with
# undenoised hard negatives side by side (two processes sharing the GPU), then M_D2 on the test split
# alone, paired (denoised vs undenoised), and re-ranked by the run's cross-encoder (dense and
# hybrid heads, shares chosen on dev). Each stage has its own time limit, so a slow stage still
# leaves the earlier ones' results.
#
#   benchmarks/gpu_run.sh DATA OUT [PIPELINE_SECONDS]
#
# OUT gets three files: summary.json (every metric read back from the runs), summary.md and
# logs.tar.gz (logs, each step's metrics.json and config.json, per-question files). The runs
# themselves (models, caches) stay in WORK (default /tmp/gpu-run). PYTHON picks the interpreter
# (default python3), PRESET the preset (default gpu; tiny for a dry run on a CPU), STEPS the steps
# (default 1,2,3,4; 1,2,3 compares M_D1 alone: the undenoised run then skips step 2). The last
# finished step of each run is evaluated and paired; re-ranking needs step 4. MODES=denoised runs
# the denoised pipeline alone (on the H200, two pipelines side by side did not reach step 4 in 400 s).
# One denoised pipeline takes about 32 + 75 + 222 + 270 s on an H200 (README, "Measured: one H200"):
# more than one device call's 10 minutes. Run STEPS=1,2,3 first, then, while the machine is warm, again
# with STEPS=1,2,3,4 EARLY_RERANK=0: the run in WORK resumes at step 4. Packages and data: gpu_bundle.sh.
# First, alone on the device, benchmarks/scoring_profile.py times cross-encoder scoring's parts
# (PROFILE=0 skips it; PROFILE_PAIRS sets its pairs, default 8192).
# As soon as the first pipeline's step 2 is done, M_D0's hybrid top-20 is re-ranked by its cross-encoder
# while step 3 runs (EARLY_RERANK=0 skips it), so a re-ranking number comes back even when step 4 does not
# finish. Every re-ranking chooses its shares on dev (grid extended 3 times), saves its heads for
# `python -m engine rerank-mix` (OUT/features-*.jsonl.gz) and, with PAIR_WITH=FILE (a `--per-question`
# file of the test split, e.g. from a CPU run), is paired with it. DEADLINE=S ends the final
# evaluations S seconds after the start, leaving time to collect (default: their own limits).
set -u
DATA=${1:?usage: gpu_run.sh DATA OUT [PIPELINE_SECONDS]}
OUT=${2:?usage: gpu_run.sh DATA OUT [PIPELINE_SECONDS]}
BUDGET=${3:-420}
PY=${PYTHON:-python3}
PRESET=${PRESET:-gpu}
STEPS=${STEPS:-1,2,3,4}
MODES=${MODES:-denoised undenoised}
WORK=${WORK:-/tmp/gpu-run}
RUNS=$WORK/runs
LOGS=$WORK/logs
mkdir -p "$RUNS" "$LOGS" "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$LOGS/gpu.txt" 2>&1
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'gpu', torch.cuda.get_device_name(0))" >>"$LOGS/gpu.txt" 2>&1
cat "$LOGS/gpu.txt"

if [ "${PROFILE:-1}" = 1 ]; then
    # alone on the device, before the pipelines: where cross-encoder scoring spends its time
    stamp "scoring profile (PROFILE=0 skips it)"
    timeout 120 $PY benchmarks/scoring_profile.py --data "$DATA" --pairs "${PROFILE_PAIRS:-8192}" --max-length 384 --batch-size 256 \
        --output "$LOGS/scoring-profile.json" >"$LOGS/scoring-profile.log" 2>&1
    tail -n 25 "$LOGS/scoring-profile.json" 2>/dev/null || tail -n 5 "$LOGS/scoring-profile.log"
fi

# re-rank: NAME RUN FIRST_STAGE_MODEL RETRIEVER SECONDS (RUN's cross-encoder)
#   -> eval-rerank-NAME.json, features-NAME.jsonl, pq-NAME.json
rerank() {
    local bm25="" paired=""
    [ "$4" = hybrid ] && bm25="--rerank-bm25"
    [ -n "${PAIR_WITH:-}" ] && paired="--paired-with $PAIR_WITH"
    timeout "$5" $PY -m engine evaluate --data "$DATA" --split test --retriever "$4" --model "$3" \
        --reranker "$2/step2_cross_encoder/model" --rerank-depth 20 --rerank-weight-from-dev dev $bm25 \
        --rerank-grid-extend 3 --rerank-features "$LOGS/features-$1.jsonl" --per-question "$LOGS/pq-$1.json" \
        $paired >"$LOGS/eval-rerank-$1.json" 2>"$LOGS/eval-rerank-$1.log"
}
FIRST=${MODES%% *}

stamp "pipelines start (limit ${BUDGET} s each)"
for mode in $MODES; do
    flag=""
    [ "$mode" = undenoised ] && flag="--undenoised"
    timeout "$BUDGET" $PY -m engine pipeline run --data "$DATA" --output "$RUNS/$mode" \
        --preset "$PRESET" --eval-test --steps "$STEPS" $flag >"$LOGS/pipeline-$mode.log" 2>&1 &
    [ "$mode" = "$FIRST" ] && first_pid=$!
done
if [ "${EARLY_RERANK:-1}" = 1 ]; then
    (
        while [ ! -f "$RUNS/$FIRST/step2_cross_encoder/DONE" ] && kill -0 "$first_pid" 2>/dev/null; do sleep 3; done
        if [ -f "$RUNS/$FIRST/step2_cross_encoder/DONE" ]; then
            stamp "M_D0 hybrid top-20 re-ranked (beside step 3)"
            rerank md0-hybrid "$RUNS/$FIRST" "$RUNS/$FIRST/step1_dual_encoder/model" hybrid "${EARLY_SECONDS:-240}"
            stamp "M_D0 re-ranking done"
        fi
    ) &
fi

stamp "CUDA tests"
timeout 150 $PY -m pytest -p no:cacheprovider -m gpu tests/test_device.py -q -rs >"$LOGS/pytest-gpu.log" 2>&1
tail -3 "$LOGS/pytest-gpu.log"
wait
stamp "pipelines done"
tail -n 3 "$LOGS"/pipeline-*.log

D=$RUNS/denoised
U=$RUNS/undenoised
last() { for s in step4_augment step3_denoise; do [ -f "$1/$s/DONE" ] && { echo "$s"; return; }; done; }
LD=$(last "$D")
LU=$(last "$U")
if [ -n "$LD" ] && [ "$LU" = "$LD" ]; then
    stamp "$LD on test, paired"
    timeout 60 $PY -m engine evaluate --data "$DATA" --split test --model "$D/$LD/model" \
        --per-question "$LOGS/denoised.json" >"$LOGS/eval-denoised-$LD.json" 2>"$LOGS/eval-denoised-$LD.log"
    timeout 60 $PY -m engine evaluate --data "$DATA" --split test --model "$U/$LU/model" \
        --paired-with "$LOGS/denoised.json" >"$LOGS/eval-undenoised-$LU.json" 2>"$LOGS/eval-undenoised-$LU.log"
fi
if [ "$LD" = step4_augment ]; then
    limit=120
    [ -n "${DEADLINE:-}" ] && limit=$((DEADLINE - ($(date +%s) - t0)))
    if [ "$limit" -gt 10 ]; then
        stamp "M_D2 dense and hybrid top-20 re-ranked, side by side (limit $limit s)"
        for head in dense hybrid; do
            rerank "md2-$head" "$D" "$D/step4_augment/model" "$head" "$limit" &
        done
    fi
fi
wait
stamp "collecting"

$PY - "$RUNS" "$LOGS" "$OUT" <<'EOF'
import json, sys
from pathlib import Path

runs, logs, out = map(Path, sys.argv[1:])
summary = {"gpu": (logs / "gpu.txt").read_text(), "runs": {}, "evaluate": {}}
profile = logs / "scoring-profile.json"
summary["scoring_profile"] = json.loads(profile.read_text()) if profile.is_file() else None
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    steps = {}
    for d in sorted(run.glob("step*")):
        m = d / "metrics.json"
        if m.is_file():
            steps[d.name] = json.loads(m.read_text()) | {"done": (d / "DONE").is_file()}
    t = run / "timings.json"
    summary["runs"][run.name] = {"steps": steps, "timings": json.loads(t.read_text()) if t.is_file() else None}
for f in sorted(logs.glob("eval-*.json")):
    try:
        summary["evaluate"][f.stem] = json.loads(f.read_text())
    except ValueError:
        summary["evaluate"][f.stem] = {"error": (logs / f"{f.stem}.log").read_text()[-2000:]}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
lines = ["| run | step | dev MRR@10 | test MRR@10 | test R@1 | test R@100 | seconds |", "|---|---|---|---|---|---|---|"]
for name, r in summary["runs"].items():
    for step, m in r["steps"].items():
        dev, test = m.get("dev") or {}, m.get("test") or {}
        lines.append(
            f"| {name} | {step} | {dev.get('MRR@10', '-')} | {test.get('MRR@10', '-')} | {test.get('R@1', '-')} "
            f"| {test.get('R@100', '-')} | {(m.get('seconds') or {}).get('total', '-')} |"
        )
for name, e in summary["evaluate"].items():
    paired = e.get("paired_with") or {}
    paired = {k: v for k, v in paired.items() if k not in ("against", "file")}
    lines.append(
        f"| evaluate | {name} | | {e.get('MRR@10', json.dumps(e)[:300])} | {e.get('R@1', '')} | {e.get('R@100', '')} "
        f"| {json.dumps(paired)} |"
    )
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
for f in "$LOGS"/features-*.jsonl; do [ -s "$f" ] && gzip -c "$f" >"$OUT/$(basename "$f").gz"; done
tar -C "$WORK" -czf "$OUT/logs.tar.gz" --exclude 'features-*' logs $(cd "$WORK" && ls -d runs/*/step*/metrics.json runs/*/timings.json runs/*/step*/config.json 2>/dev/null)
stamp "done"
