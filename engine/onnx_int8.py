"""ONNX Runtime int8 inference path: a transformer exported to ONNX, its MatMul weights quantised.

`onnx_module(model, tokenizer, output)` exports a Hugging Face backbone (`output="last_hidden_state"`)
or sequence-classification model (`output="logits"`) with `torch.onnx.export`, quantises it with
ONNX Runtime's dynamic quantisation (int8 weights with one scale per output channel, activations
quantised per batch at run time) and returns an `OnnxModule`: an inference-only stand-in that
takes the same keyword inputs as the Hugging Face model and returns the same output field, so
`TextEncoder` and `CrossEncoder` use it unchanged. `engine.quantize` calls this module when
`QuantizeConfig.backend == "onnx"`, for the dual-encoder under `"auto"`, and with `int8=False` for the
fp32 copies of `onnx_dual_encoder` / `onnx_cross_encoder` (ONNX Runtime's fp32 kernels alone were about
twice as fast as PyTorch's on 2 cores for these models, with outputs equal to float rounding).

Why a second int8 path: PyTorch's dynamic quantisation (`engine.quantize`, fbgemm) leaves the
attention, LayerNorm and GELU of each layer to eager PyTorch; ONNX Runtime runs the whole graph
with its own kernels. Both quantise the same Linear / MatMul weights; what it buys is measured by
`python -m engine bench` (docs/BENCHMARKS.md), not assumed here: for the trained dual-encoder 1.90x
the passages/s of fp32 at a 0.20-point MRR@10 loss (PyTorch's path: 1.44x, 0.79).

The ONNX file lives in a temporary directory only while the session is created; nothing is
written next to the model. CPU only (on a GPU, use the fp32 / bf16 PyTorch model).
"""

from __future__ import annotations

import copy
import logging
import re
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state", "logits")
# the FFN output projection of BERT-like layers (after GELU, outlier-prone), as torch.onnx names its MatMul
FFN_OUTPUT_NODE = re.compile(r"layer\.\d+/output/dense/MatMul$")


def available() -> bool:
    """True when onnxruntime and onnx are importable (they are in requirements.txt)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Export(torch.nn.Module):
    """Positional inputs -> one output tensor, for torch.onnx.export."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...], output: str):
        super().__init__()
        self.model, self.names, self.output = model, names, output

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.names, inputs))), self.output)


class OnnxModule(torch.nn.Module):
    """An ONNX Runtime session behind the calling convention of a Hugging Face model (inference only)."""

    def __init__(self, session, output: str, config, input_names: tuple[str, ...], quantized_nodes: int):
        super().__init__()
        self.session = session
        self.output = output
        self.config = config  # the Hugging Face config (hidden_size, ...) of the exported model
        self.input_names = input_names
        self.quantized_nodes = quantized_nodes
        # TextEncoder / CrossEncoder read the device from the parameters: ONNX Runtime runs on the CPU
        self._device_anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"the ONNX model needs inputs {missing}")
        feeds = {n: inputs[n].detach().cpu().numpy().astype(np.int64, copy=False) for n in self.input_names}
        (out,) = self.session.run([self.output], feeds)
        return SimpleNamespace(**{self.output: torch.from_numpy(out)})

    def train(self, mode: bool = True) -> OnnxModule:
        # always in eval mode: there is nothing to train (the wrappers restore their own mode flag)
        return super().train(False)

    def save_pretrained(self, *_args, **_kwargs):
        raise RuntimeError("an ONNX Runtime model cannot be saved as a Hugging Face directory: save the fp32 model")


def _input_names(tokenizer) -> tuple[str, ...]:
    accepted = set(getattr(tokenizer, "model_input_names", INPUT_NAMES))
    names = tuple(n for n in INPUT_NAMES if n in accepted)
    if "input_ids" not in names or "attention_mask" not in names:
        raise ValueError(f"the tokenizer's inputs {sorted(accepted)} lack input_ids / attention_mask")
    return names


def export(model: torch.nn.Module, tokenizer, output: str, path: Path) -> tuple[str, ...]:
    """Write `model` (a Hugging Face model) as ONNX to `path`; returns its input names."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    names = _input_names(tokenizer)
    sample = tokenizer(["a short text", "a somewhat longer text to pad against"], padding=True, return_tensors="pt")
    model = copy.deepcopy(model).cpu().eval()
    if hasattr(model, "set_attn_implementation"):
        # the SDPA graph traces into ops ONNX Runtime runs slowly (`python -m engine bench`, 2 cores:
        # int8 1.04x the cross-encoder pairs/s of fp32); eager attention exports as plain
        # MatMul/Softmax (1.53x; passages 1.33x -> 1.90x)
        model.set_attn_implementation("eager")
    wrapper = _Export(model, names, output)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch", 1: "sequence"} if output == "last_hidden_state" else {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer notices about Python control flow on shapes
        torch.onnx.export(
            wrapper,
            tuple(sample[n] for n in names),
            str(path),
            input_names=list(names),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return names


def quantize(source: Path, target: Path, skip_ffn_output: bool = False, per_channel: bool = True) -> int:
    """Dynamic int8 quantisation of the MatMul weights of an ONNX file; returns how many MatMuls."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)]
    excluded = [n for n in matmuls if skip_ffn_output and FFN_OUTPUT_NODE.search(n)]
    logging.disable(logging.WARNING)  # onnxruntime.quantization logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)
    return len(matmuls) - len(excluded)


def onnx_module(
    model: torch.nn.Module,
    tokenizer,
    output: str,
    int8: bool = True,
    skip_ffn_output: bool = False,
    per_channel: bool = True,
    threads: int = 0,
) -> OnnxModule:
    """`model` exported to ONNX (and int8-quantised unless `int8=False`), as an `OnnxModule`."""
    if not available():
        raise RuntimeError("the ONNX path needs onnxruntime and onnx: pip install -r requirements.txt")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="rocketqa-onnx-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        names = export(model, tokenizer, output, fp32)
        path, quantized = fp32, 0
        if int8:
            path = Path(tmp) / "model.int8.onnx"
            quantized = quantize(fp32, path, skip_ffn_output=skip_ffn_output, per_channel=per_channel)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no busy-waiting after a run: the spinning threads of one session would take the cores from
        # the next (a query runs the dual-encoder's session, then the cross-encoder's, then torch)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    log.info("ONNX Runtime %s model: %d MatMul weights in int8", output, quantized)
    return OnnxModule(session, output, model.config, names, quantized)
