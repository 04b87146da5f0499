"""BM25 / dense / hybrid on the dev and test splits of a BEIR directory, as one Markdown table.

    python benchmarks/retrieval_baselines.py --data ../shared/data/squad-v1.1-dev --output bench-out/baselines

Runs `python -m engine evaluate` for every (retriever, split) pair, keeps each JSON next to the
table, and prints the table (the one in the README).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

KEYS = ["MRR@10", "R@1", "R@5", "R@20", "R@100", "nDCG@10", "Acc@1", "Acc@5", "Acc@20", "Acc@100"]
ROWS = [("bm25", []), ("dense", []), ("dense", ["--passage-max-length", "128"]), ("hybrid", [])]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", default="dev,test")
    ap.add_argument("--model", default="", help="dual-encoder (default: the packaged MiniLM)")
    ap.add_argument("--output", default="bench-out/baselines")
    args = ap.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| retriever | split (questions) | " + " | ".join(KEYS) + " |", "|---|---|" + "---|" * len(KEYS)]
    for retriever, extra in ROWS:
        label = retriever + (" (passages 128 tokens)" if extra else "")
        for split in args.splits.split(","):
            target = out / f"{retriever}{'-'.join([''] + extra[1:])}-{split}.json"
            cmd = [sys.executable, "-m", "engine", "evaluate", "--data", args.data, "--split", split]
            cmd += ["--retriever", retriever, "--output", str(target), *extra]
            if args.model and retriever != "bm25":
                cmd += ["--model", args.model]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            m = json.loads(target.read_text())
            values = " | ".join(f"{m[k]:.1f}" if k in m else "–" for k in KEYS)
            lines.append(f"| {label} | {split} ({m['num_questions']}) | {values} |")
    table = "\n".join(lines)
    (out / "baselines.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
