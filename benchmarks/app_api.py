"""Latency, concurrency and peak memory of the running app, measured through its HTTP API.

Starts `python app.py --data DATA --db DB --port PORT` in a subprocess (a real Gradio server on
localhost), waits until it answers, then drives it with `gradio_client`:

1. one client, each of N questions in turn, two workloads -> per-request latency:
   `ranking`: `ask` (question, k=--rerank-k, highlight=False): encode + search + re-rank the top-k,
   the in-process latency measurement of `python -m engine bench` through HTTP;
   `highlights`: `ask` (question, k=--k, highlight=True): also the answer-bearing sentence of each
   hit (the cross-encoder scores every sentence), the whole of what the Ask tab shows;
2. C concurrent clients (threads, one `Client` each): ask, then `judge` the top hit, R times each
   -> latency under load, errors, and a check in the SQLite file that every judgment id returned
   is stored (no lost judgments) with the annotator and grade that were sent.

Peak memory of the app = VmHWM of its process (/proc/PID/status) read just before it is stopped.
Writes one JSON object (`--output`, or stdout). Used by `python -m engine bench` (engine/bench_scale.py
runs it as a subprocess, so engine/ never imports gradio) and runnable on its own:

    python benchmarks/app_api.py --data ../shared/data/squad-v1.1-dev --clients 8 --output app.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_questions(data: Path, n: int) -> list[str]:
    """The first n question texts of a BEIR directory (queries.jsonl)."""
    out = []
    with (data / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    if not out:
        raise SystemExit(f"{data}/queries.jsonl has no questions")
    return out


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summary_ms(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = [1000 * s for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def vm_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def start_app(args: argparse.Namespace, db: Path, port: int, log_path: Path) -> tuple[subprocess.Popen, float]:
    cmd = [sys.executable, str(ROOT / "app.py"), "--data", str(args.data), "--db", str(db), "--port", str(port)]
    if args.cache:
        cmd += ["--cache", args.cache]
    if args.cross_encoder:
        cmd += ["--cross-encoder", args.cross_encoder]
    if args.int8_cross_encoder:
        cmd += ["--int8-cross-encoder"]
    if args.onnx_cross_encoder:
        cmd += ["--onnx-cross-encoder"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = t0 + args.startup_timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app exited with code {proc.returncode}; log: {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.25)
    proc.terminate()
    raise SystemExit(f"app did not answer on port {port} within {args.startup_timeout} s; log: {log_path}")


def client_for(port: int):
    from gradio_client import Client

    return Client(f"http://127.0.0.1:{port}/", verbose=False)


def ask(client, question: str, k: int, highlight: bool = True) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = client.predict(question=question, k=k, mode="dense", highlight=highlight, api_name="/ask")
    return out, time.perf_counter() - t0


def single_client(port: int, questions: list[str], k: int, rerank_k: int) -> dict:
    """One client; per question the `ranking` request, then the `highlights` one (alternated)."""
    client = client_for(port)
    ask(client, questions[0], k)  # warm-up (first request loads lazily built state)
    seconds: dict[str, list[float]] = {"ranking": [], "highlights": []}
    errors, reranked = 0, True
    for q in questions:
        for name, kk, hl in (("ranking", rerank_k, False), ("highlights", k, True)):
            try:
                out, dt = ask(client, q, kk, hl)
            except Exception:  # noqa: BLE001 - any failure of a request counts as an error
                errors += 1
                continue
            seconds[name].append(dt)
            reranked = reranked and bool(out.get("reranked"))
    return {
        "clients": 1,
        "requests": 2 * len(questions),
        "errors": errors,
        "reranked": reranked,
        "ranking": {"k": rerank_k, "highlight": False, **summary_ms(seconds["ranking"])},
        "highlights": {"k": k, "highlight": True, **summary_ms(seconds["highlights"])},
    }


def concurrent_clients(port: int, questions: list[str], k: int, clients: int, rounds: int) -> dict:
    """Each client: `rounds` times ask + judge the top hit; returns latencies, errors and judgments sent."""
    lock = threading.Lock()
    ask_s, judge_s, errors, sent = [], [], [], []  # sent: (judgment id, annotator, question id, passage id, grade)
    barrier = threading.Barrier(clients)

    def work(i: int) -> None:
        try:
            client = client_for(port)
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"client {i}: {type(e).__name__}: {e}")
            barrier.abort()
            return
        try:
            barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass
        for r in range(rounds):
            q = questions[(i * rounds + r) % len(questions)]
            try:
                out, dt = ask(client, q, k)
                grade = str((i + r) % 4)
                t0 = time.perf_counter()
                jid = client.predict(
                    annotator=f"bench-{i}",
                    question_id=out["question_id"],
                    passage_id=out["hits"][0]["passage_id"],
                    grade=grade,
                    api_name="/judge",
                )
                dj = time.perf_counter() - t0
                with lock:
                    ask_s.append(dt)
                    judge_s.append(dj)
                    sent.append((int(jid), f"bench-{i}", out["question_id"], out["hits"][0]["passage_id"], int(grade)))
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"client {i} round {r}: {type(e).__name__}: {str(e)[:200]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": clients * rounds,
        "errors": len(errors),
        "error_samples": errors[:5],
        "ask": summary_ms(ask_s),
        "judge": summary_ms(judge_s),
        "wall_s": round(wall, 2),
        "asks_per_s": round(len(ask_s) / wall, 2) if wall else None,
        "_sent": sent,
    }


def check_judgments(db: Path, sent: list[tuple]) -> dict:
    """Every judgment id returned by the API is in the database with what was sent."""
    with sqlite3.connect(db) as conn:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT id, annotator_id, question_id, passage_id, grade FROM judgments WHERE annotator_id LIKE 'bench-%'"
            )
        }
    missing = [jid for jid, *_ in sent if jid not in rows]
    wrong = [jid for jid, *vals in sent if jid in rows and tuple(rows[jid]) != tuple(vals)]
    return {"sent": len(sent), "stored": len(rows), "missing": len(missing), "mismatched": len(wrong)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "demo" / "sample_data"), help="BEIR directory the app serves")
    p.add_argument("--cache", default=None, help="embedding cache root for the app (default: the app's)")
    p.add_argument("--cross-encoder", default=None, help="trained cross-encoder directory (re-ranks in `ask`)")
    p.add_argument("--questions", type=int, default=50, help="sequential asks by the single client")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (0: skip the load test)")
    p.add_argument("--rounds", type=int, default=5, help="ask + judge rounds per concurrent client")
    p.add_argument("--k", type=int, default=10, help="hits per `ask` with highlights (and under load)")
    p.add_argument("--rerank-k", type=int, default=20, help="hits per `ask` without highlights (re-ranked top-k)")
    p.add_argument("--int8-cross-encoder", action="store_true", help="start the app with --int8-cross-encoder")
    p.add_argument("--onnx-cross-encoder", action="store_true", help="start the app with --onnx-cross-encoder")
    p.add_argument("--startup-timeout", type=float, default=600)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)

    data = Path(args.data)
    questions = read_questions(data, max(args.questions, args.clients * args.rounds))
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        db, port = Path(tmp) / "bench.db", free_port()
        proc, startup = start_app(args, db, port, Path(tmp) / "app.log")
        try:
            alone = single_client(port, questions[: args.questions], args.k, args.rerank_k)
            loaded = (
                concurrent_clients(port, questions, args.k, args.clients, args.rounds)
                if args.clients > 0
                else {"clients": 0, "_sent": []}
            )
            peak_kib, rss_kib = vm_kib(proc.pid, "VmHWM"), vm_kib(proc.pid, "VmRSS")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        stored = check_judgments(db, loaded.pop("_sent"))
    out = {
        "data": str(data),
        "cross_encoder": args.cross_encoder,
        "int8_cross_encoder": args.int8_cross_encoder,
        "onnx_cross_encoder": args.onnx_cross_encoder,
        "k": args.k,
        "rerank_k": args.rerank_k,
        "startup_s": round(startup, 2),
        "single": alone,
        "concurrent": loaded,
        "judgments": stored,
        "lost_judgments": stored["missing"] + stored["mismatched"],
        "peak_rss_mb": round(peak_kib / 1024, 1) if peak_kib else None,
        "rss_mb_at_end": round(rss_kib / 1024, 1) if rss_kib else None,
    }
    text = json.dumps(out, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
